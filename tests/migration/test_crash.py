"""kill -9 the migrator at random points (expand, backfill, validation, index build): every
`migrate run` resumes where the last one stopped, and the result verifies."""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import subprocess
import sys
import time
from typing import Any

import psycopg
import pytest

from tests.helpers import ROOT, cli_env, run_cli

pytestmark = pytest.mark.slow


def _phase_and_progress(url: str) -> tuple[str, dict[str, int], dict[str, Any]]:
    """The phase, rows done per table, and each backfill part's cursor (next page or last key)."""
    with psycopg.connect(url) as c:
        if not c.execute("SELECT to_regclass('villager_migration.state')").fetchone()[0]:  # type: ignore[index]
            return "not_started", {}, {}
        phase = c.execute("SELECT value #>> '{}' FROM villager_migration.state WHERE key = 'phase'").fetchone()
        rows = dict(c.execute("SELECT table_name, sum(rows_done) FROM villager_migration.backfill GROUP BY 1").fetchall())
        cursors = {step: (walk, page if walk == "physical" else key) for step, walk, page, key in c.execute(
            "SELECT step, walk, next_page, coalesce(last_key, last_id::text) FROM villager_migration.backfill")}
    return (phase[0] if phase else "not_started"), rows, cursors


def _wait_until_connected(url: str, proc: subprocess.Popen[str], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as c:
        while time.monotonic() < deadline and proc.poll() is None:
            if c.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                         " AND application_name LIKE 'villager-shop%%'").fetchone()[0]:  # type: ignore[index]
                return
            time.sleep(0.01)


def test_run_resumes_after_kill_9_at_random_points(make_legacy_db: Any) -> None:
    url = make_legacy_db(0.1)
    env = cli_env(url, VILLAGER_BATCH_SIZE="200", VILLAGER_BATCH_PAUSE_MS="25", VILLAGER_TARGET_BATCH_MS="20",
                  VILLAGER_BACKFILL_WORKERS="1")
    rng = random.Random(20261125)
    kills: list[dict[str, Any]] = []
    finished = False
    for attempt in range(80):
        proc = subprocess.Popen([sys.executable, "-m", "villager_shop", "migrate", "run"], env=env, cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if len(kills) < 12:
            # Random points measured from the migrator's first connection (not from the process
            # start: on a loaded machine Python's start-up alone can take a second).
            _wait_until_connected(url, proc)
            time.sleep(rng.uniform(0.0, 0.8) if attempt else rng.uniform(0.2, 0.8))
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                phase, rows, cursors = _phase_and_progress(url)
                kills.append({"phase": phase, "rows": rows, "cursors": cursors})
                continue
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-2000:]
        finished = True
        break
    assert finished, "the migration never finished"
    assert len(kills) >= 10, kills
    phases = {k["phase"] for k in kills}
    assert "backfilling" in phases, phases
    # The backfill resumed instead of restarting: no part's cursor ever went back between two kills,
    # and each table's rows were counted exactly once.
    for before, after in itertools.pairwise(kills):
        for step, (_walk, pos) in before["cursors"].items():
            later = after["cursors"].get(step)
            assert later is not None and (pos is None or (later[1] is not None and later[1] >= pos)), (step, pos, later)
    with psycopg.connect(url) as c:
        for table, done, total, walks in c.execute("SELECT table_name, sum(rows_done), sum(rows_total),"
                                                   " array_agg(DISTINCT walk) FROM villager_migration.backfill GROUP BY 1"
                                                   ).fetchall():
            count = c.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # type: ignore[index]
            assert done == total == count, (table, done, total, count, walks)
        invalid = c.execute("SELECT count(*) FROM pg_index WHERE NOT indisvalid").fetchone()[0]  # type: ignore[index]
        assert invalid == 0
    resumed_mid_backfill = [k for k in kills if k["phase"] == "backfilling" and any(k["rows"].values())]
    assert resumed_mid_backfill, "no kill landed after a committed backfill batch"
    res = run_cli("migrate", "verify", "--json", database_url=url)
    assert res.returncode == 0, res.stdout[-3000:]
    assert json.loads(res.stdout)["ok"] is True


def test_interrupted_index_build_is_detected_and_rebuilt(legacy_db: str) -> None:
    """An INVALID index left by a killed CREATE INDEX CONCURRENTLY is dropped and rebuilt."""
    from tests.migration.conftest import migrate
    from tests.migration.messy import load_messy

    load_messy(legacy_db)
    migrate(legacy_db)
    with psycopg.connect(legacy_db, autocommit=True) as c:
        c.execute("DROP INDEX idx_products_category_rating")
        # Fabricate what a killed concurrent build leaves behind: an index marked invalid.
        c.execute("CREATE INDEX idx_products_category_rating ON products (category_id)")
        c.execute("UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'idx_products_category_rating'::regclass")
        c.execute("UPDATE villager_migration.steps SET status = 'running' WHERE name = 'index_idx_products_category_rating'")
        c.execute("UPDATE villager_migration.state SET value = '\"validating\"' WHERE key = 'phase'")
    assert run_cli("migrate", "verify", database_url=legacy_db).returncode == 5
    # No run holds the lock: status says the step was interrupted, not that it is running.
    st = json.loads(run_cli("migrate", "status", "--json", database_url=legacy_db).stdout)
    assert not st["running"]
    assert {s["name"]: s["status"] for s in st["steps"]}["index_idx_products_category_rating"] == "interrupted"
    res = run_cli("migrate", "run", database_url=legacy_db)
    assert res.returncode == 0, res.stderr
    assert "INVALID index" in res.stderr
    with psycopg.connect(legacy_db) as c:
        valid, definition = c.execute(
            "SELECT i.indisvalid, pg_get_indexdef(i.indexrelid) FROM pg_index i"
            " WHERE i.indexrelid = 'idx_products_category_rating'::regclass").fetchone()  # type: ignore[misc]
    assert valid and "rating DESC" in definition
    assert run_cli("migrate", "verify", database_url=legacy_db).returncode == 0
