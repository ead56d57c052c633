"""What a rehearsal found, as data: the rehearsal fills it in and the report writes it out. Apart
from both, so the report does not import the rehearsal that calls it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Span:
    name: str
    start: float  # epoch seconds
    end: float
    status: str = "done"  # done | failed | skipped

    @property
    def seconds(self) -> float:
        return max(0.0, self.end - self.start)


@dataclass
class StepResult:
    name: str
    title: str
    phase: str
    status: str
    seconds: float | None
    start: float | None  # epoch seconds, when the step ran in this rehearsal
    end: float | None
    attempts: int
    lock_retries: int
    error: str | None
    detail: dict[str, Any] = field(default_factory=dict)
    table: str | None = None  # the table it works on, when one (scales its projection)


@dataclass
class RehearsalReport:
    verdict: str  # GO | NO-GO
    reasons: list[str]
    started_at: str
    finished_at: str
    seconds: float
    live_database: str
    staging_database: str
    staging_kept: bool
    server: str
    backup: dict[str, Any]
    thresholds: dict[str, Any]
    phases: list[Span]
    steps: list[StepResult]
    run_error: str | None
    backfill: list[dict[str, Any]]
    locks: dict[str, Any]
    writer: dict[str, Any]
    latency_series: list[dict[str, float]]
    lost_writes: dict[str, Any]
    verify: dict[str, Any]
    quarantine: dict[str, Any]
    squawk: dict[str, Any]
    baseline: dict[str, Any]
    query_plans: list[dict[str, Any]]
    projection: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    plan: str = "villager_shop"  # the plan rehearsed: the built-in one, or a plan file's name
    # The operator's objects on the live database that use a column `complete` drops.
    legacy_column_dependents: list[dict[str, Any]] = field(default_factory=list)
    report_dir: str = ""
    files: list[str] = field(default_factory=list)

    @property
    def go(self) -> bool:
        return self.verdict == "GO"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
