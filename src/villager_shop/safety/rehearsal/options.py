"""What a rehearsal is asked to do and the thresholds it judges by: given by the command, read by
the run and by the verdict."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from villager_shop.migration.planfile.spec import PlanSpec


@dataclass
class RehearsalOptions:
    backup_id: str | None = None
    writer_threads: int = 2  # legacy-application writer threads (plus new_writer_threads)
    new_writer_threads: int = 1
    keep: bool = False
    report_dir: Path | None = None
    max_latency_ms: float = 100.0
    max_quarantine_pct: float = 5.0
    catalog_rounds: int = 5
    plan: PlanSpec | None = None  # a plan file for the villager_shop tables (None: the built-in plan)
