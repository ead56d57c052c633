"""A concurrent index build waits for every transaction whose snapshot predates it. A session
left idle in an old REPEATABLE READ transaction therefore stalls the build: the run must name
that session, give up within its bound, and never record the step done without the index."""

from __future__ import annotations

import time

import psycopg
from psycopg import IsolationLevel

from tests.helpers import run_cli
from tests.migration.messy import load_messy

STEP = "index_idx_order_items_product_id"


def _step_status(url: str) -> tuple[str | None, bool | None]:
    with psycopg.connect(url) as c:
        status = c.execute("SELECT status FROM villager_migration.steps WHERE name = %s", (STEP,)).fetchone()
        valid = c.execute("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass("
                          "'public.idx_order_items_product_id')").fetchone()
    return (status[0] if status else None), (valid[0] if valid else None)


def test_an_index_build_stalled_by_an_old_snapshot_names_it_gives_up_and_is_not_recorded_done(
        legacy_db: str) -> None:
    load_messy(legacy_db)
    holder = psycopg.connect(legacy_db, application_name="nightly report")
    holder.isolation_level = IsolationLevel.REPEATABLE_READ
    holder.execute("SELECT 1")  # idle in transaction, holding its snapshot
    try:
        t0 = time.monotonic()
        res = run_cli("migrate", "run", database_url=legacy_db, timeout=120, VILLAGER_SNAPSHOT_WAIT_S="2")
        took = time.monotonic() - t0
        assert res.returncode == 4, res.stderr[-2000:]
        error = res.stderr.strip().splitlines()[-1]
        assert f"pid {holder.info.backend_pid}" in error and "nightly report" in error, error
        assert "idx_order_items_product_id" in error, error
        # Named in the retry notes too, from the first retry on.
        notes = " ".join(res.stderr.split())
        assert f"(attempt 1); dropping the unfinished index and building again; pid {holder.info.backend_pid}" in notes, notes
        assert took < 60, took
        status, valid = _step_status(legacy_db)
        assert status == "failed" and valid is not True, (status, valid)
    finally:
        holder.close()
    res = run_cli("migrate", "run", database_url=legacy_db)
    assert res.returncode == 0, res.stderr[-2000:]
    assert _step_status(legacy_db) == ("done", True)
    res = run_cli("migrate", "verify", database_url=legacy_db)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
