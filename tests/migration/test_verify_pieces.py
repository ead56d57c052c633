"""verify finds a single changed value anywhere: one value of one row is changed behind the sync
triggers' back (session_replication_role = replica) in each table and each representation, while
migrating and after `complete`; verify must fail and name that row. Each case runs on a copy of one
migrated database (CREATE DATABASE ... TEMPLATE), so the migration runs once per state."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.helpers import settings_for
from tests.migration.conftest import VILLAGER_PLAN, migrate
from tests.migration.messy import load_messy
from villager_shop.core.db import create_database, drop_database
from villager_shop.legacy.schema import schema_sql
from villager_shop.migration.complete import complete
from villager_shop.migration.planfile.verify import verify_database as verify
from villager_shop.migration.runner import make_context

U1, U2 = "00000000-0000-0000-0000-000000000001", "00000000-0000-0000-0000-000000000002"
S3 = "10000000-0000-0000-0000-000000000003"
P1, P3, P8 = ("20000000-0000-0000-0000-000000000001", "20000000-0000-0000-0000-000000000003",
              "20000000-0000-0000-0000-000000000008")
O1 = "30000000-0000-0000-0000-000000000001"
I1 = "40000000-0000-0000-0000-000000000001"
DEFAULT_OF = "(SELECT id FROM product_variants WHERE product_id = '{}' AND is_default)"

# (what is changed, the change, the checks that must fail, the row each must name)
MIGRATING = [
    ("users.house_number", f"UPDATE users SET house_number = ' 13A ' WHERE id = '{U2}'", ["address_mismatch:users"], U2),
    ("users.address_id", f"UPDATE users SET address_id = (SELECT address_id FROM shops WHERE id = '{S3}')"
     f" WHERE id = '{U1}'", ["address_mismatch:users"], U1),
    ("shops.house_number", f"UPDATE shops SET house_number = ' 45 ' WHERE id = '{S3}'", ["address_mismatch:shops"], S3),
    ("addresses.house_number", f"UPDATE addresses SET house_number = house_number || 'B'"
     f" WHERE id = (SELECT address_id FROM shops WHERE id = '{S3}')", ["address_mismatch:shops"], S3),
    ("products.category", f"UPDATE products SET category = 'Electronicz' WHERE id = '{P1}'",
     ["category_mismatch:products"], P1),
    ("products.category on a product without one", f"UPDATE products SET category = 'Dairy' WHERE id = '{P8}'",
     ["category_mismatch:products"], P8),
    ("products.category_id", f"UPDATE products SET category_id = (SELECT category_id FROM products WHERE id = '{P3}')"
     f" WHERE id = '{P1}'", ["category_mismatch:products"], P1),
    ("products.category_id on a product without a category", f"UPDATE products SET category_id ="
     f" (SELECT category_id FROM products WHERE id = '{P3}') WHERE id = '{P8}'", ["category_mismatch:products"], P8),
    ("product_categories.name", f"UPDATE product_categories SET name = name || 'z'"
     f" WHERE id = (SELECT category_id FROM products WHERE id = '{P1}')", ["category_mismatch:products"], P1),
    ("products.price", f"UPDATE products SET price = 499.01 WHERE id = '{P1}'",
     ["base_price_mismatch:products", "variant_mismatch:products"], P1),
    ("products.base_price", f"UPDATE products SET base_price = 498.00 WHERE id = '{P1}'",
     ["base_price_mismatch:products"], P1),
    ("products.stock", f"UPDATE products SET stock = 6 WHERE id = '{P1}'", ["variant_mismatch:products"], P1),
    ("product_variants.price", f"UPDATE product_variants SET price = price + 0.01 WHERE product_id = '{P1}'",
     ["variant_mismatch:products"], P1),
    ("product_variants.stock", f"UPDATE product_variants SET stock = stock + 1 WHERE product_id = '{P1}'",
     ["variant_mismatch:products"], P1),
    ("product_variants.is_default", f"UPDATE product_variants SET is_default = false WHERE product_id = '{P1}'",
     ["variant_mismatch:products"], P1),
    ("order_items.variant_id", f"UPDATE order_items SET variant_id = {DEFAULT_OF.format(P3)} WHERE id = '{I1}'",
     ["order_item_variant:order_items"], I1),
    ("order_items.variant_id emptied", f"UPDATE order_items SET variant_id = NULL WHERE id = '{I1}'",
     ["order_item_variant:order_items", "unlinked_item:order_items"], I1),
    ("order_items.product_id", f"UPDATE order_items SET product_id = '{P3}' WHERE id = '{I1}'",
     ["order_item_variant:order_items"], I1),
    ("order_items.quantity", f"UPDATE order_items SET quantity = 0 WHERE id = '{I1}'",
     ["order_item_variant:order_items"], I1),
    ("orders.total", f"UPDATE orders SET total = 619.00 WHERE id = '{O1}'", ["not_quarantined:orders"], O1),
    ("quarantine entry lost", f"DELETE FROM villager_migration.quarantine WHERE row_id = '{P8}'",
     ["not_quarantined:products"], P8),
    ("quarantine entry for a fine row", "INSERT INTO villager_migration.quarantine (table_name, row_id, reason)"
     f" VALUES ('users', '{U1}', 'made up')", ["stale_quarantine:users"], U1),
    ("quarantine entry for no table", "INSERT INTO villager_migration.quarantine (table_name, row_id, reason)"
     f" VALUES ('nowhere', '{U1}', 'made up')", ["stale_quarantine:nowhere"], U1),
]

COMPLETED = [
    ("product_variants.price", f"UPDATE product_variants SET price = price + 0.01 WHERE product_id = '{P1}'",
     ["base_price_mismatch:products"], P1),
    ("products.base_price", f"UPDATE products SET base_price = 498.00 WHERE id = '{P1}'",
     ["base_price_mismatch:products"], P1),
    ("product_variants.is_default", f"UPDATE product_variants SET is_default = false WHERE product_id = '{P1}'",
     ["missing_default_variant:products"], P1),
    ("order_items.variant_id", f"UPDATE order_items SET variant_id = {DEFAULT_OF.format(P3)} WHERE id = '{I1}'",
     ["order_item_variant:order_items"], I1),
    ("order_items.quantity", f"UPDATE order_items SET quantity = 0 WHERE id = '{I1}'",
     ["order_item_variant:order_items"], I1),
    ("orders.total", f"UPDATE orders SET total = 619.00 WHERE id = '{O1}'", ["not_quarantined:orders"], O1),
    ("quarantine entry for no table", "INSERT INTO villager_migration.quarantine (table_name, row_id, reason)"
     f" VALUES ('nowhere', '{U1}', 'made up')", ["stale_quarantine:nowhere"], U1),
]


# After `complete` of plans/villager.toml (the order item's reference outlives the triggers).
FILE_COMPLETED = [
    ("order_items.variant_id", f"UPDATE order_items SET variant_id = {DEFAULT_OF.format(P3)} WHERE id = '{I1}'",
     ["reference_mismatch:order_items"], I1),
    ("order_items.product_id", f"UPDATE order_items SET product_id = '{P3}' WHERE id = '{I1}'",
     ["reference_mismatch:order_items"], I1),
]


def _template(pg_admin_url: str, completed: bool, plan_file: Path | None = None) -> Iterator[str]:
    name = f"vt_{uuid.uuid4().hex[:12]}"
    url = create_database(pg_admin_url, name)
    try:
        with psycopg.connect(url, autocommit=True) as c:
            c.execute(schema_sql().encode())
        load_messy(url)
        migrate(url, plan_file)
        if completed:
            ctx = make_context(url, settings_for(url))
            try:
                complete(ctx, quiet_seconds=0, reader_check=False)
            finally:
                ctx.conn.close()
        yield name
    finally:
        drop_database(pg_admin_url, name)


@pytest.fixture(scope="module")
def migrating_template(pg_admin_url: str) -> Iterator[str]:
    yield from _template(pg_admin_url, completed=False)


@pytest.fixture(scope="module")
def completed_template(pg_admin_url: str) -> Iterator[str]:
    yield from _template(pg_admin_url, completed=True)


@pytest.fixture(scope="module")
def file_completed_template(pg_admin_url: str) -> Iterator[str]:
    yield from _template(pg_admin_url, completed=True, plan_file=VILLAGER_PLAN)


@contextmanager
def _copy(pg_admin_url: str, template: str) -> Iterator[str]:
    name = f"vt_{uuid.uuid4().hex[:12]}"
    url = create_database(pg_admin_url, name, template=template)
    try:
        yield url
    finally:
        drop_database(pg_admin_url, name)


def _change_and_verify(url: str, change: str, *, alone: bool = False) -> dict[str, Any]:
    with psycopg.connect(url, autocommit=True) as c:
        assert verify(c).ok, "the copy verifies before the change"
        with c.transaction():
            c.execute("SET LOCAL session_replication_role = replica")  # no sync trigger repairs it
            assert c.execute(change).rowcount == 1
        if alone:  # inside a caller's transaction: the same checks on this session alone
            with c.transaction():
                return verify(c, examples=0).to_dict()
        return verify(c, examples=0).to_dict()


def _assert_named(report: dict[str, Any], failing: list[str], row: str) -> None:
    assert report["ok"] is False
    by_name = {c["name"]: c for c in report["checks"]}
    for name in failing:
        assert name in by_name, f"{name} not among {sorted(by_name)}"
        assert by_name[name]["ok"] is False
        assert row in {str(e["row_id"]) for e in by_name[name]["examples"]}


@pytest.mark.parametrize(("what", "change", "failing", "row"), MIGRATING, ids=[m[0] for m in MIGRATING])
def test_one_changed_value_is_found_while_migrating(pg_admin_url: str, migrating_template: str, what: str,
                                                   change: str, failing: list[str], row: str) -> None:
    with _copy(pg_admin_url, migrating_template) as url:
        report = _change_and_verify(url, change)
        _assert_named(report, failing, row)
        table = failing[0].split(":")[1]
        if table in report["counts"] and not failing[0].startswith("stale_quarantine"):
            assert report["counts"][table]["violations"] >= 1


@pytest.mark.parametrize(("what", "change", "failing", "row"), COMPLETED, ids=[m[0] for m in COMPLETED])
def test_one_changed_value_is_found_after_complete(pg_admin_url: str, completed_template: str, what: str,
                                                  change: str, failing: list[str], row: str) -> None:
    with _copy(pg_admin_url, completed_template) as url:
        report = _change_and_verify(url, change)
        assert report["phase"] == "completed"
        _assert_named(report, failing, row)


@pytest.mark.parametrize(("what", "change", "failing", "row"), FILE_COMPLETED, ids=[m[0] for m in FILE_COMPLETED])
def test_one_changed_value_is_found_after_complete_of_the_plan_file(
        pg_admin_url: str, file_completed_template: str, what: str, change: str, failing: list[str], row: str) -> None:
    with _copy(pg_admin_url, file_completed_template) as url:
        report = _change_and_verify(url, change)
        assert report["phase"] == "completed"
        _assert_named(report, failing, row)


def test_inside_a_callers_transaction_the_same_rows_are_named(pg_admin_url: str, migrating_template: str) -> None:
    _what, change, failing, row = MIGRATING[4]
    with _copy(pg_admin_url, migrating_template) as url:
        _assert_named(_change_and_verify(url, change, alone=True), failing, row)


def test_counts_match_the_tables(pg_admin_url: str, migrating_template: str) -> None:
    with _copy(pg_admin_url, migrating_template) as url, psycopg.connect(url, autocommit=True) as c:
        counts = verify(c).counts
        for table in ("users", "shops", "products", "orders", "order_items", "product_variants", "addresses"):
            n = c.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # type: ignore[index]
            got = counts[table]
            assert got.get("legacy_rows", got.get("rows")) == n
        q = c.execute("SELECT count(*) FROM villager_migration.quarantine WHERE table_name = 'products'").fetchone()
        assert counts["products"]["quarantined"] == q[0]  # type: ignore[index]
