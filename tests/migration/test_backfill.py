"""The two backfill walks: physical (page order, PostgreSQL 14+) and by primary key (PostgreSQL 13),
and the physical walk's answer to a table rewritten under it."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from tests.helpers import settings_for
from villager_shop.migration.backfill import _plan_pages
from villager_shop.migration.plan import build_plan
from villager_shop.migration.runner import make_context, run
from villager_shop.migration.steps.base import SilentReporter
from villager_shop.migration.verify import verify


class Notes(SilentReporter):
    def __init__(self) -> None:
        self.notes: list[str] = []

    def note(self, message: str) -> None:
        self.notes.append(message)


def _run(url: str, order: str, steps: Any = None, reporter: Any = None) -> None:
    settings = settings_for(url).model_copy(update={"villager_backfill_order": order})
    ctx = make_context(url, settings, reporter)
    try:
        run(ctx, steps=steps)
    finally:
        ctx.conn.close()


def _walks(url: str) -> dict[str, set[str]]:
    with psycopg.connect(url) as c:
        return {t: set(w) for t, w in c.execute(
            "SELECT table_name, array_agg(DISTINCT walk) FROM villager_migration.backfill GROUP BY 1")}


@pytest.mark.parametrize("order", ["key", "physical"])
def test_each_walk_migrates_everything(make_legacy_db: Any, order: str) -> None:
    url = make_legacy_db(0.05)
    _run(url, order)
    assert set().union(*_walks(url).values()) == {order}
    with psycopg.connect(url) as c:
        report = verify(c)
        assert report.ok is True, report.failures()
        # every row counted once (the physical walk does not count again a row our own update moved
        # into pages it had not reached yet)
        for table, done in c.execute(
                "SELECT table_name, sum(rows_done) FROM villager_migration.backfill GROUP BY 1").fetchall():
            real = c.execute(f"SELECT count(*) FROM public.{table}").fetchone()[0]  # type: ignore[index]
            assert done == real, (table, done, real)


def test_a_table_rewritten_during_the_physical_walk_is_walked_again(make_legacy_db: Any) -> None:
    """VACUUM FULL gives the table a new file and moves every tuple: the recorded page ranges mean
    nothing any more, so the walk starts over (its actions are no-ops on migrated rows)."""
    url = make_legacy_db(0.05)
    plan = build_plan()
    names = [s.name for s in plan]
    _run(url, "physical", steps=plan[:names.index("backfill_products")])
    with psycopg.connect(url) as c:
        _plan_pages(c, "backfill_products", "products", 2)
        c.commit()
        before = c.execute("SELECT DISTINCT filenode FROM villager_migration.backfill"
                           " WHERE step LIKE 'backfill_products#%'").fetchall()
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("VACUUM FULL products")
    notes = Notes()
    _run(url, "physical", reporter=notes)
    assert any("rewritten" in n for n in notes.notes), notes.notes
    with psycopg.connect(url) as c:
        after = c.execute("SELECT DISTINCT filenode FROM villager_migration.backfill"
                          " WHERE step LIKE 'backfill_products#%'").fetchall()
        assert len(before) == len(after) == 1 and before != after
        report = verify(c)
        assert report.ok is True, report.failures()
