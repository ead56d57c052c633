"""The runner's side-by-side groups: steps that block no reads or writes (validations) run on
several connections, one step per table at a time, in plan order per table. Probe steps record
when they ran, in the database itself."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from tests.helpers import settings_for
from villager_shop.migration.runner import make_context, run
from villager_shop.migration.steps.base import Context, Step
from villager_shop.migration.steps.schema_objects import StateSchema


class Probe(Step):
    side_by_side = True

    def __init__(self, name: str, table: str, seconds: float, *, fail: bool = False) -> None:
        self.name, self.table, self.seconds, self.fail = name, table, seconds, fail
        self.title = f"probe {name}"

    def apply(self, ctx: Context) -> dict[str, Any]:
        ctx.conn.execute("INSERT INTO probe_log VALUES (%s, clock_timestamp(), NULL)", (self.name,))
        ctx.conn.execute("SELECT pg_sleep(%s)", (self.seconds,))
        if self.fail:
            raise RuntimeError(f"{self.name} failed on purpose")
        ctx.conn.execute("UPDATE probe_log SET ended = clock_timestamp() WHERE name = %s", (self.name,))
        return {}


def _run(url: str, steps: list[Step], workers: int = 2) -> None:
    settings = settings_for(url)
    settings.villager_backfill_workers = workers
    ctx = make_context(url, settings)
    try:
        run(ctx, steps=[StateSchema(), *steps])
    finally:
        ctx.conn.close()


def _log(url: str) -> dict[str, tuple[Any, Any]]:
    with psycopg.connect(url) as c:
        return {r[0]: (r[1], r[2]) for r in c.execute("SELECT name, started, ended FROM probe_log")}


@pytest.fixture
def probe_db(legacy_db: str) -> str:
    with psycopg.connect(legacy_db, autocommit=True) as c:
        c.execute("CREATE TABLE probe_log (name text PRIMARY KEY, started timestamptz, ended timestamptz)")
    return legacy_db


def test_a_step_waits_for_the_earlier_step_on_its_table_and_others_go_ahead(probe_db: str) -> None:
    _run(probe_db, [Probe("a1", "a", 0.6), Probe("b1", "b", 0.05), Probe("a2", "a", 0.05), Probe("c1", "c", 0.05)])
    log = _log(probe_db)
    assert set(log) == {"a1", "b1", "a2", "c1"} and all(end for _, end in log.values()), log
    assert log["b1"][0] < log["a1"][1], ("b1 waited for a1 although it works on another table", log)
    assert log["a2"][0] >= log["a1"][1], ("a2 started before a1, the earlier step on its table, ended", log)
    assert log["c1"][0] < log["a1"][1], ("c1 waited behind a2 instead of going ahead", log)
    with psycopg.connect(probe_db) as c:
        status = dict(c.execute("SELECT name, status FROM villager_migration.steps").fetchall())
    assert all(status[n] == "done" for n in log), status


def test_one_worker_runs_the_group_in_plan_order(probe_db: str) -> None:
    _run(probe_db, [Probe("a1", "a", 0.1), Probe("b1", "b", 0.1), Probe("c1", "c", 0.1)], workers=1)
    log = _log(probe_db)
    assert log["a1"][1] <= log["b1"][0] and log["b1"][1] <= log["c1"][0], log


def test_a_failing_step_stops_the_group_and_is_marked_failed(probe_db: str) -> None:
    with pytest.raises(RuntimeError, match="b1 failed on purpose"):
        _run(probe_db, [Probe("a1", "a", 0.4), Probe("b1", "b", 0.05, fail=True), Probe("b2", "b", 0.05),
                        Probe("c1", "c", 0.05), Probe("c2", "c", 0.05), Probe("c3", "c", 0.05)])
    log = _log(probe_db)
    with psycopg.connect(probe_db) as c:
        status = dict(c.execute("SELECT name, status FROM villager_migration.steps").fetchall())
    assert status["b1"] == "failed" and "b2" not in log, (status, log)
    assert log["a1"][1] is not None and status["a1"] == "done", (status, log)  # the running step ended
    assert "c3" not in log, log  # nothing new started after the failure


def test_between_the_first_new_column_and_the_sync_triggers_only_catalog_steps_run() -> None:
    """The new application may write as soon as a new column exists; until the sync triggers are
    installed such a write would not reach the legacy columns. Seeds (table scans) come before."""
    from villager_shop.migration.plan import build_plan
    from villager_shop.migration.steps.columns import AddColumn
    from villager_shop.migration.steps.constraints import AddConstraint
    from villager_shop.migration.steps.schema_objects import CreateTable
    from villager_shop.migration.steps.sync_triggers import SyncTriggers

    steps = build_plan()
    first = next(i for i, s in enumerate(steps) if isinstance(s, AddColumn | CreateTable)
                 and s.name in {"table_product_variants", "column_users_address_id"})
    sync = next(i for i, s in enumerate(steps) if isinstance(s, SyncTriggers))
    window = steps[first:sync]
    assert window and all(isinstance(s, AddColumn | AddConstraint | CreateTable) for s in window), \
        [s.name for s in window]
    assert not any(isinstance(s, AddConstraint) and s.guard for s in window)
    assert {s.name for s in steps[:first]} >= {"seed_addresses", "seed_product_categories"}
