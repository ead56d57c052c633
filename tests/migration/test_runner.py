"""The runner's side-by-side groups: steps that block no reads or writes (validations) run on
several connections, one step per table at a time, in plan order per table. Probe steps record
when they ran, in the database itself."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from tests.helpers import settings_for
from villager_shop.core.errors import RefusedError
from villager_shop.migration.context import Context
from villager_shop.migration.runner import make_context, run
from villager_shop.migration.steps.base import Step
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

    def check(self, ctx: Context) -> bool:
        return bool(ctx.scalar("SELECT ended IS NOT NULL FROM probe_log WHERE name = %s", (self.name,)))


class Hollow(Step):
    """Runs without an error and leaves nothing behind (a build that was dropped, say)."""

    name, title = "hollow", "a step whose effect never appears"

    def apply(self, ctx: Context) -> dict[str, Any]:
        return {}

    def check(self, ctx: Context) -> bool:
        return False


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


def test_a_step_whose_check_fails_after_it_ran_is_marked_failed_and_the_run_refuses(probe_db: str) -> None:
    with pytest.raises(RefusedError, match="hollow") as info:
        _run(probe_db, [Probe("a1", "a", 0.01), Hollow(), Probe("b1", "b", 0.01)])
    assert info.value.exit_code == 4
    with psycopg.connect(probe_db) as c:
        status = dict(c.execute("SELECT name, status FROM villager_migration.steps").fetchall())
        phase = c.execute("SELECT value #>> '{}' FROM villager_migration.state WHERE key = 'phase'").fetchone()
    assert status["a1"] == "done" and status["hollow"] == "failed" and status["b1"] == "pending", status
    assert phase != ("migrated",), phase


def test_every_new_column_and_table_is_created_with_its_sync_triggers() -> None:
    """The new application may write the moment a new column exists: the step that creates it also
    creates its table's sync triggers, in the same statement batch (one transaction). The behaviour
    is tested in test_sync (test_a_new_column_is_never_there_without_its_sync_trigger)."""
    from villager_shop.migration.plan import build_plan
    from villager_shop.migration.steps.columns import AddColumn
    from villager_shop.migration.steps.schema_objects import CreateTable
    from villager_shop.migration.steps.sync_triggers import TRIGGERS

    # The lookup tables' own triggers only carry renames to rows that point at them: they come with
    # the columns that do (shops, products). product_variants carries prices and stock: its own.
    steps = [s for s in build_plan() if isinstance(s, AddColumn)
             or (isinstance(s, CreateTable) and s.table == "product_variants")]
    assert {s.table for s in steps} == {"users", "shops", "products", "order_items", "product_variants"}
    for step in steps:
        (ddl,) = step.ddl()
        for name, table, *_ in TRIGGERS:
            if table == step.table:
                assert f"CREATE TRIGGER {name} " in ddl.sql, (step.name, name)
