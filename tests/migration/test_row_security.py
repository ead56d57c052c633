"""Row-level security that applies to the migrating role hides rows from the backfill, the copy
and the checks: the run refuses it up front. And whatever stops a run, rollback leaves every
legacy constraint validated exactly as it was before the run."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from tests.helpers import run_cli, settings_for
from tests.migration.conftest import owned_legacy_db
from tests.migration.messy import load_messy
from villager_shop.legacy.schema import LEGACY_TABLES
from villager_shop.migration.context import SilentReporter
from villager_shop.migration.runner import make_context, run


@pytest.fixture
def owned_db(pg_admin_url: str) -> Iterator[str]:
    """Owned by a role that is neither superuser nor BYPASSRLS."""
    with owned_legacy_db(pg_admin_url, "vt_rls", "NOBYPASSRLS") as url:
        yield url


def test_run_plan_and_rehearse_refuse_forced_row_security_before_changing_anything(owned_db: str) -> None:
    with psycopg.connect(owned_db, autocommit=True) as c:
        c.execute("ALTER TABLE orders ENABLE ROW LEVEL SECURITY")
        c.execute("ALTER TABLE orders FORCE ROW LEVEL SECURITY")  # and no policy: the owner sees no order
    for args in (("migrate", "plan"), ("migrate", "run"), ("rehearse",)):
        res = run_cli(*args, database_url=owned_db)
        lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
        assert res.returncode == 4 and len(lines) == 1, (args, res.stderr)
        assert "public.orders" in lines[0] and "row-level security" in lines[0], lines[0]
        assert "public.products" not in lines[0], lines[0]
    with psycopg.connect(owned_db) as c:
        assert c.execute("SELECT to_regnamespace('villager_migration')").fetchone() == (None,)


def test_row_security_that_exempts_the_owner_is_not_refused(owned_db: str) -> None:
    with psycopg.connect(owned_db, autocommit=True) as c:
        c.execute("ALTER TABLE orders ENABLE ROW LEVEL SECURITY")  # not FORCE: the owner sees every row
    res = run_cli("migrate", "plan", "--json", database_url=owned_db)
    assert res.returncode == 0, res.stderr


def _legacy_constraints(url: str) -> dict[tuple[str, str], bool]:
    with psycopg.connect(url) as c:
        rows = c.execute("SELECT conrelid::regclass::text, conname, convalidated FROM pg_constraint"
                         " WHERE conrelid = ANY(%s::regclass[])", ([f"public.{t}" for t in LEGACY_TABLES],)).fetchall()
    return {(t, n): v for t, n, v in rows}


class StopRightAfterTheSwap(SilentReporter):
    """A run that dies the moment order_items' rebuilt copy is in place: its foreign keys and
    checks came back NOT VALID and are not validated yet."""

    def note(self, message: str) -> None:
        if "the rebuilt copy is in place" in message:
            raise RuntimeError("the run died right after the swap")


def test_rollback_after_a_run_died_after_the_swap_leaves_every_legacy_constraint_as_it_was(legacy_db: str) -> None:
    load_messy(legacy_db)
    with psycopg.connect(legacy_db, autocommit=True) as c:  # one of the operator's, never validated
        c.execute("ALTER TABLE order_items ADD CONSTRAINT order_items_price_sane CHECK (unit_price < 100000) NOT VALID")
    before = _legacy_constraints(legacy_db)
    assert before[("order_items", "order_items_order_id_fkey")] is True
    assert before[("order_items", "order_items_price_sane")] is False
    ctx = make_context(legacy_db, settings_for(legacy_db), StopRightAfterTheSwap())
    try:
        with pytest.raises(RuntimeError, match="right after the swap"):
            run(ctx)
    finally:
        ctx.conn.close()
    middle = _legacy_constraints(legacy_db)
    assert middle[("order_items", "order_items_order_id_fkey")] is False, middle  # the situation under test
    res = run_cli("migrate", "rollback", "--yes", database_url=legacy_db)
    assert res.returncode == 0, res.stderr
    after = _legacy_constraints(legacy_db)
    assert after == before, {k: (before.get(k), after.get(k)) for k in {*before, *after}
                             if before.get(k) != after.get(k)}
    # And a new run after the rollback goes through.
    res = run_cli("migrate", "run", database_url=legacy_db)
    assert res.returncode == 0, res.stderr[-2000:]
    assert _legacy_constraints(legacy_db)[("order_items", "order_items_order_id_fkey")] is True

