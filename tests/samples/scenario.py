"""What the tests of every sample share: create it through the CLI, run its plan (killed with
SIGKILL mid-backfill, or under both live applications), and the independent check of its data."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import psycopg

from tests.helpers import ROOT, cli_env, run_cli
from villager_shop.samples.blog import check as blog_check
from villager_shop.samples.blog import generate as blog_generate
from villager_shop.samples.blog import writer as blog_writer
from villager_shop.samples.compare import differences
from villager_shop.samples.library import check as library_check
from villager_shop.samples.library import generate as library_generate
from villager_shop.samples.library import writer as library_writer

# Small batches with a pause: the backfill lasts long enough to be killed in, and to be written through.
SLOW_BACKFILL = {"VILLAGER_BATCH_SIZE": "100", "VILLAGER_TARGET_BATCH_MS": "10", "VILLAGER_BATCH_PAUSE_MS": "10",
                 "VILLAGER_BACKFILL_WORKERS": "1"}


@dataclass(frozen=True)
class Sample:
    name: str
    generate: ModuleType
    check: ModuleType
    writer: ModuleType

    @property
    def plan(self) -> str:
        return str(ROOT / "plans" / f"{self.name}.toml")


SAMPLES = {"blog": Sample("blog", blog_generate, blog_check, blog_writer),
           "library": Sample("library", library_generate, library_check, library_writer)}


def create(url: str, sample: Sample, rows: int, seed: int = 7) -> None:
    res = run_cli("sample", "create", sample.name, "--rows", str(rows), "--seed", str(seed), "--json", database_url=url)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["rows"][next(iter(sample.generate.TABLES))] == rows


def same_in_both_forms(url: str, sample: Sample) -> None:
    with psycopg.connect(url) as c:
        n, examples = differences(c, sample.check.LEGACY_FORM, sample.check.NORMALIZED_FORM)
    assert n == 0, examples


def backfill_progress(c: psycopg.Connection[Any]) -> tuple[str, int, int]:
    """The phase, and the rows done and to do over every backfill part (0, 0 before the first)."""
    if not c.execute("SELECT to_regclass('villager_migration.backfill') IS NOT NULL").fetchone()[0]:  # type: ignore[index]
        return "not_started", 0, 0
    phase = c.execute("SELECT value #>> '{}' FROM villager_migration.state WHERE key = 'phase'").fetchone()
    done, total = c.execute("SELECT coalesce(sum(rows_done), 0), coalesce(sum(rows_total), 0)"
                            " FROM villager_migration.backfill").fetchone()  # type: ignore[misc]
    return (phase[0] if phase else "not_started"), int(done), int(total)


def run_killed_mid_backfill(url: str, sample: Sample, timeout_s: float = 120) -> tuple[str, int, int]:
    """`migrate run --plan` as a subprocess, killed with SIGKILL once a backfill batch has committed;
    the progress recorded at the kill."""
    proc = subprocess.Popen([sys.executable, "-m", "villager_shop", "migrate", "run", "--plan", sample.plan],
                            env=cli_env(url, **SLOW_BACKFILL), cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout_s
    try:
        with psycopg.connect(url, autocommit=True) as c:
            while time.monotonic() < deadline and proc.poll() is None:
                phase, done, _ = backfill_progress(c)
                if phase == "backfilling" and done > 0:
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait()
                    return backfill_progress(c)
                time.sleep(0.01)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    raise AssertionError(f"the run ended (exit {proc.returncode}) before a backfill batch could be killed:"
                         f" {proc.stderr.read()[-2000:] if proc.stderr else ''}")
