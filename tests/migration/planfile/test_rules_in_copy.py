"""The quarantine rules of a table that a link copies and swaps in (the villager plan's order_items)
are decided by the copy, row by row, and again for each row the applications change meanwhile: their
walk has nothing left to do. Where the table is backfilled in place (a view reads it), the walk runs.
Either way each rule's records are exactly the rows it holds for."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from tests.helpers import rows, run_cli
from tests.migration.conftest import VILLAGER_PLAN, migrate
from tests.migration.messy import load_messy

RULES = {"product_without_variant": "variant_id IS NULL", "non_positive_quantity": "quantity <= 0"}


def _records_are_the_rules(url: str) -> None:
    for reason, when in RULES.items():
        held = rows(url, f"SELECT id::text FROM order_items WHERE {when} ORDER BY 1")
        recorded = rows(url, "SELECT row_key FROM villager_migration.plan_quarantine"
                             f" WHERE table_name = 'order_items' AND reason = '{reason}' ORDER BY 1")
        assert recorded == held, reason


@pytest.mark.parametrize("copied", [True, False], ids=["copied", "in place"])
def test_the_copy_decides_the_rules_of_the_table_it_copies(legacy_db: str, copied: bool) -> None:
    load_messy(legacy_db)
    if not copied:  # a view reads the table: it cannot be swapped
        with psycopg.connect(legacy_db, autocommit=True) as c:
            c.execute("CREATE VIEW big_items AS SELECT * FROM order_items WHERE quantity > 1")
    summary: dict[str, Any] = migrate(legacy_db, VILLAGER_PLAN)
    walk = summary["backfill_order_items"]
    if copied:
        assert summary["backfill_order_items_variant_id"]["method"] == "rebuild"
        assert "decided_by" in walk and walk["rows"] == 0, walk
    else:
        assert summary["backfill_order_items_variant_id"]["method"] == "in_place"
        assert "decided_by" not in walk and walk["rows"] > 0, walk
    for when in RULES.values():  # the messy data holds rows for each rule
        assert rows(legacy_db, f"SELECT count(*) > 0 FROM order_items WHERE {when}") == [(True,)], when
    _records_are_the_rules(legacy_db)
    # The triggers keep them from here: an item whose quantity is fixed leaves the quarantine.
    with psycopg.connect(legacy_db, autocommit=True) as c:
        assert c.execute("UPDATE order_items SET quantity = 2 WHERE id = (SELECT id FROM order_items"
                         " WHERE quantity <= 0 ORDER BY id LIMIT 1)").rowcount == 1
    _records_are_the_rules(legacy_db)
    assert run_cli("migrate", "verify", database_url=legacy_db).returncode == 0
