"""While both applications write, each write reaches the other representation (SPEC defect 2)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from tests.migration.conftest import one, violations
from tests.plans import ADDRESS_MISMATCH, quarantine, quarantined

SHOP = "10000000-0000-0000-0000-000000000001"
RADIO = "20000000-0000-0000-0000-000000000001"
BALA = "00000000-0000-0000-0000-000000000002"
ITEM = "40000000-0000-0000-0000-000000000004"  # its product has no price: quarantined


def ex(c: psycopg.Connection[Any], sql: str, *args: Any) -> psycopg.Cursor[Any]:
    return c.execute(sql, args if args else None)


@pytest.fixture
def any_conn(migrated_messy_any: str) -> Iterator[psycopg.Connection[Any]]:
    """The messy data migrated by the built-in plan, then by plans/villager.toml (the default)."""
    with psycopg.connect(migrated_messy_any, autocommit=True) as c:
        yield c


def test_messy_backfill_rules(any_conn: psycopg.Connection[Any]) -> None:
    conn = any_conn
    # '12a', ' 12A ', '12 A' and shop '12A' share one address; blank/NULL house numbers map to none.
    assert one(conn, "SELECT count(DISTINCT address_id) FROM users WHERE name IN ('Asha', 'Bala', 'Chitra')") == 1
    assert one(conn, "SELECT a.house_number FROM addresses a JOIN users u ON u.address_id = a.id WHERE u.name = 'Bala'") == "12A"
    assert one(conn, "SELECT count(*) FROM users WHERE name IN ('Dev', 'Esha', 'Farid') AND address_id IS NOT NULL") == 0
    assert one(conn, "SELECT a.house_number FROM addresses a JOIN users u ON u.address_id = a.id WHERE u.name = 'Gita'") == "7B"
    # Legacy spellings are untouched.
    assert one(conn, "SELECT house_number FROM users WHERE name = 'Bala'") == " 12A "
    slugs = dict(conn.execute("SELECT name_key, slug FROM product_categories").fetchall())
    assert slugs["electronics"] == "electronics" and slugs["home decor"] == "home-decor"
    assert {slugs["fruits & veg"], slugs["fruits veg"]} == {"fruits-veg", "fruits-veg-2"}
    assert slugs["मिठाई"] == "मिठाई"
    assert {slugs["!!!"], slugs["???"]} == {"category", "category-2"}
    q = quarantine(conn)
    assert q[("products", "20000000-0000-0000-0000-000000000008")] == {"non_positive_price"}
    assert q[("products", "20000000-0000-0000-0000-000000000009")] == {"non_positive_price"}
    assert q[("orders", "30000000-0000-0000-0000-000000000002")] == {"total_mismatch"}
    assert q[("orders", "30000000-0000-0000-0000-000000000003")] == {"negative_amount"}
    assert q[("order_items", "40000000-0000-0000-0000-000000000004")] == {"product_without_variant"}
    jalebi = one(conn, "SELECT v.stock FROM product_variants v WHERE v.product_id = '20000000-0000-0000-0000-00000000000a'")
    assert jalebi == 0
    assert one(conn, "SELECT stock FROM products WHERE id = '20000000-0000-0000-0000-00000000000a'") == -3
    assert violations(conn) == []


def test_legacy_writes_reach_new_structures(any_conn: psycopg.Connection[Any]) -> None:
    conn = any_conn
    uid = one(conn, "INSERT INTO users (name, house_number) VALUES ('Hari', ' 99 z ') RETURNING id")
    assert one(conn, "SELECT a.house_number FROM users u JOIN addresses a ON a.id = u.address_id WHERE u.id = %s",
               uid) == "99Z"
    ex(conn, "UPDATE products SET category = 'ELECTRONICS  ', price = 450, stock = -2 WHERE id = %s", RADIO)
    row = conn.execute("SELECT c.slug, p.base_price, v.price, v.stock FROM products p JOIN product_categories c"
                       " ON c.id = p.category_id JOIN product_variants v ON v.product_id = p.id AND v.is_default"
                       " WHERE p.id = %s", (RADIO,)).fetchone()
    assert row == ("electronics", Decimal("450.00"), Decimal("450.00"), 0)
    pid = one(conn, "INSERT INTO products (shop_id, name, category, price, stock) VALUES (%s, 'Kite', 'Toys & Games',"
                    " 35, 4) RETURNING id", SHOP)
    assert one(conn, "SELECT slug FROM product_categories c JOIN products p ON p.category_id = c.id WHERE p.id = %s",
               pid) == "toys-games"
    assert one(conn, "SELECT stock FROM product_variants WHERE product_id = %s AND is_default", pid) == 4
    oid = one(conn, "INSERT INTO orders (customer_id, shop_id, subtotal, delivery_fee, total) VALUES (%s, %s, 70, 5, 75)"
                    " RETURNING id", BALA, SHOP)
    iid = one(conn, "INSERT INTO order_items (order_id, product_id, quantity, unit_price) VALUES (%s, %s, 2, 35)"
                    " RETURNING id", oid, pid)
    assert one(conn, "SELECT v.product_id FROM order_items oi JOIN product_variants v ON v.id = oi.variant_id"
                     " WHERE oi.id = %s", iid) == pid
    assert violations(conn) == []


def test_new_app_writes_reach_legacy_columns(any_conn: psycopg.Connection[Any]) -> None:
    conn = any_conn
    aid = one(conn, "INSERT INTO addresses (house_number) VALUES ('  5 c') RETURNING id")
    assert one(conn, "SELECT house_number FROM addresses WHERE id = %s", aid) == "5C"
    ex(conn, "UPDATE users SET address_id = %s WHERE id = %s", aid, BALA)
    assert one(conn, "SELECT house_number FROM users WHERE id = %s", BALA) == "5C"
    # Pointing at the address its legacy spelling already means keeps the spelling.
    ex(conn, "UPDATE users SET house_number = ' 5c ' WHERE id = %s", BALA)
    ex(conn, "UPDATE users SET address_id = %s WHERE id = %s", aid, BALA)
    assert one(conn, "SELECT house_number FROM users WHERE id = %s", BALA) == " 5c "
    cat = one(conn, "SELECT id FROM product_categories WHERE slug = 'home-decor'")
    ex(conn, "UPDATE products SET category_id = %s WHERE id = %s", cat, RADIO)
    assert one(conn, "SELECT category FROM products WHERE id = %s", RADIO) == "Home Decor"
    ex(conn, "UPDATE product_variants SET price = 525, stock = 9 WHERE product_id = %s AND is_default", RADIO)
    assert conn.execute("SELECT price, stock, base_price FROM products WHERE id = %s", (RADIO,)).fetchone() == (
        Decimal("525.00"), 9, Decimal("525.00"))
    ex(conn, "UPDATE product_categories SET name = 'Home & Decor' WHERE id = %s", cat)
    assert one(conn, "SELECT category FROM products WHERE id = %s", RADIO) == "Home & Decor"
    pid = one(conn, "INSERT INTO products (shop_id, name, category_id, base_price) VALUES (%s, 'Pot', %s, 60)"
                    " RETURNING id", SHOP, cat)
    ex(conn, "INSERT INTO product_variants (product_id, sku, name, price, stock, is_default) VALUES"
                 " (%s, 'pot-1', 'Default', 60, 7, true) ON CONFLICT (product_id) WHERE is_default"
                 " DO UPDATE SET stock = EXCLUDED.stock, sku = EXCLUDED.sku", pid)
    assert conn.execute("SELECT price, stock, category FROM products WHERE id = %s", (pid,)).fetchone() == (
        Decimal("60.00"), 7, "Home & Decor")
    vid = one(conn, "SELECT id FROM product_variants WHERE product_id = %s AND is_default", pid)
    oid = one(conn, "INSERT INTO orders (customer_id, shop_id, subtotal, delivery_fee, total) VALUES (%s, %s, 60, 0, 60)"
                    " RETURNING id", BALA, SHOP)
    iid = one(conn, "INSERT INTO order_items (order_id, variant_id, quantity, unit_price) VALUES (%s, %s, 1, 60)"
                    " RETURNING id", oid, vid)
    assert one(conn, "SELECT product_id FROM order_items WHERE id = %s", iid) == pid
    assert violations(conn) == []


def test_a_default_variant_is_not_deleted_while_the_legacy_columns_live(any_conn: psycopg.Connection[Any]) -> None:
    conn = any_conn
    """Deleting it would leave the legacy price of a product that has no price any more."""
    with conn.transaction():
        ex(conn, "INSERT INTO product_variants (product_id, sku, name, price, stock) VALUES (%s, 'radio-xl', 'XL', 9, 1)",
           RADIO)
    try:
        with conn.transaction():
            ex(conn, "DELETE FROM product_variants WHERE product_id = %s AND is_default", RADIO)
        raise AssertionError("the default variant was deleted")
    except psycopg.errors.RestrictViolation as exc:
        # the built-in plan's words, or the plan file's split_child's
        assert re.search("cannot be deleted while the legacy (price|columns)", str(exc)), exc
    assert one(conn, "SELECT count(*) FROM product_variants WHERE product_id = %s AND is_default", RADIO) == 1
    # Another variant may go; the product may go, and takes its variants along.
    assert ex(conn, "DELETE FROM product_variants WHERE sku = 'radio-xl'").rowcount == 1
    pid = one(conn, "INSERT INTO products (shop_id, name, category, price, stock) VALUES (%s, 'Lamp', 'Home Decor', 5, 2)"
                    " RETURNING id", SHOP)
    assert one(conn, "SELECT count(*) FROM product_variants WHERE product_id = %s", pid) == 1
    ex(conn, "DELETE FROM products WHERE id = %s", pid)
    assert one(conn, "SELECT count(*) FROM product_variants WHERE product_id = %s", pid) == 0
    assert violations(conn) == []


def test_price_quarantine_follows_live_writes(any_conn: psycopg.Connection[Any]) -> None:
    conn = any_conn
    ex(conn, "UPDATE products SET price = 0 WHERE id = %s", RADIO)
    assert quarantined(conn, "products", RADIO) == {"non_positive_price"}
    assert conn.execute("SELECT is_active, price FROM product_variants WHERE product_id = %s AND is_default",
                        (RADIO,)).fetchone() == (False, Decimal("499.00"))
    assert one(conn, "SELECT base_price FROM products WHERE id = %s", RADIO) is None
    ex(conn, "UPDATE products SET price = 42 WHERE id = %s", RADIO)
    assert quarantined(conn, "products", RADIO) == set()
    assert conn.execute("SELECT is_active, price FROM product_variants WHERE product_id = %s AND is_default",
                        (RADIO,)).fetchone() == (True, Decimal("42.00"))
    # A product quarantined from the start gets its variant once fixed, and so do its order items.
    free = "20000000-0000-0000-0000-000000000008"
    ex(conn, "UPDATE products SET price = 3 WHERE id = %s", free)
    assert quarantined(conn, "products", free) == quarantined(conn, "order_items", ITEM) == set()
    assert one(conn, "SELECT variant_id IS NOT NULL FROM order_items WHERE id = '40000000-0000-0000-0000-000000000004'")
    conn.execute("DELETE FROM products WHERE id = '20000000-0000-0000-0000-000000000009' AND NOT EXISTS"
                 " (SELECT 1 FROM order_items WHERE product_id = '20000000-0000-0000-0000-000000000009')")
    conn.execute("UPDATE orders SET total = 40 WHERE id = '30000000-0000-0000-0000-000000000002'")
    assert quarantined(conn, "orders", "30000000-0000-0000-0000-000000000002") == set()
    assert violations(conn) == []


def test_integrity_check_reports_a_planted_divergence(any_conn: psycopg.Connection[Any]) -> None:
    conn = any_conn
    conn.execute("SET session_replication_role = replica")  # bypass the sync triggers
    ex(conn, "UPDATE users SET house_number = 'NOWHERE 1' WHERE id = %s", BALA)
    ex(conn, "UPDATE product_variants SET stock = 77 WHERE product_id = %s AND is_default", RADIO)
    conn.execute("RESET session_replication_role")
    kinds = {(k, t, str(r)) for k, t, r, _ in violations(conn)}
    assert any((k, "users", BALA) in kinds for k in ADDRESS_MISMATCH), kinds
    assert any((k, "products", RADIO) in kinds for k in ("variant_mismatch", "child_mismatch")), kinds


def test_catalog_changes_notify_listeners_once_per_statement(conn: psycopg.Connection[Any], migrated_messy: str) -> None:
    import psycopg as pg

    with pg.connect(migrated_messy, autocommit=True) as listener:
        listener.execute("LISTEN villager_catalog")
        ex(conn, "UPDATE products SET price = 77 WHERE shop_id = %s", SHOP)  # old application, many rows
        ex(conn, "UPDATE users SET name = 'Bala B' WHERE id = %s", BALA)  # not the catalog
        got = [n.payload for n in listener.notifies(timeout=1.0, stop_after=10)]
    assert "products" in got and "product_variants" in got  # the trigger-made variant writes too
    assert got.count("products") == 1 and "users" not in got


def test_truncate_notifies_listeners_too(conn: psycopg.Connection[Any], migrated_messy: str) -> None:
    with psycopg.connect(migrated_messy, autocommit=True) as listener:
        listener.execute("LISTEN villager_catalog")
        conn.execute("TRUNCATE products CASCADE")
        got = {n.payload for n in listener.notifies(timeout=1.0, stop_after=3)}
    assert {"products", "product_variants"} <= got
    assert violations(conn) == []


def test_any_write_to_an_unmigrated_row_completes_it(legacy_db: str) -> None:
    """With the triggers installed and before the backfill, a legacy write that changes none of the
    migrated columns still migrates the row: the physical backfill walk skips row versions written
    after the triggers exist, so they must be complete."""
    from tests.helpers import settings_for
    from tests.migration.messy import load_messy
    from villager_shop.migration.plan import build_plan
    from villager_shop.migration.runner import make_context, run

    load_messy(legacy_db)
    plan = build_plan()
    first_backfill = next(i for i, s in enumerate(plan) if s.phase == "backfill")
    ctx = make_context(legacy_db, settings_for(legacy_db))
    try:
        run(ctx, steps=plan[:first_backfill])
    finally:
        ctx.conn.close()
    with psycopg.connect(legacy_db, autocommit=True) as c:
        assert one(c, "SELECT count(*) FROM users WHERE address_id IS NOT NULL") == 0  # nothing migrated yet
        ex(c, "UPDATE users SET name = name || '.' WHERE id = %s", BALA)
        assert one(c, "SELECT a.house_number FROM users u JOIN addresses a ON a.id = u.address_id WHERE u.id = %s",
                   BALA) == "12A"
        ex(c, "UPDATE shops SET name = name || '.' WHERE id = %s", SHOP)
        assert one(c, "SELECT address_id IS NOT NULL FROM shops WHERE id = %s", SHOP) is True
        ex(c, "UPDATE products SET name = name || '.' WHERE id = %s", RADIO)
        row = c.execute("SELECT c.name_key, p.base_price, v.price FROM products p"
                        " JOIN product_categories c ON c.id = p.category_id"
                        " JOIN product_variants v ON v.product_id = p.id AND v.is_default WHERE p.id = %s",
                        (RADIO,)).fetchone()
        assert row is not None and row[0] == "electronics" and row[1] == row[2]
        item = "40000000-0000-0000-0000-000000000001"  # an item of RADIO, which now has its variant
        ex(c, "UPDATE order_items SET unit_price = unit_price WHERE id = %s", item)
        assert one(c, "SELECT v.product_id::text FROM order_items oi JOIN product_variants v ON v.id = oi.variant_id"
                      " WHERE oi.id = %s", item) == RADIO
        bad = "30000000-0000-0000-0000-000000000002"  # total does not add up
        ex(c, "UPDATE orders SET status = 'confirmed' WHERE id = %s", bad)
        assert one(c, "SELECT reason FROM villager_migration.quarantine WHERE table_name = 'orders' AND row_id = %s",
                   bad) == "total_mismatch"


def test_a_new_column_is_never_there_without_its_sync_trigger(legacy_db: str) -> None:
    """The new application may write as soon as a new column exists. Here `migrate run` is held at
    the shops column (a transaction reads shops): users.address_id exists, and a write to it already
    reaches the legacy house number. Then the run goes on, and verify passes."""
    import subprocess
    import sys
    import time

    from tests.helpers import ROOT, cli_env, run_cli
    from tests.migration.messy import load_messy

    load_messy(legacy_db)
    with psycopg.connect(legacy_db) as reader, psycopg.connect(legacy_db, autocommit=True) as app:
        reader.execute("SELECT 1 FROM shops LIMIT 1")  # ACCESS SHARE until the transaction ends
        run = subprocess.Popen([sys.executable, "-m", "villager_shop", "migrate", "run"], env=cli_env(legacy_db),
                               cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 60
            while not one(app, "SELECT count(*) FROM information_schema.columns WHERE table_name = 'users'"
                               " AND column_name = 'address_id'") and time.monotonic() < deadline:
                time.sleep(0.05)
            assert one(app, "SELECT count(*) FROM information_schema.columns WHERE table_name = 'shops'"
                            " AND column_name = 'address_id'") == 0  # held there
            aid = one(app, "INSERT INTO addresses (house_number) VALUES ('Z9') ON CONFLICT (house_number)"
                           " DO UPDATE SET house_number = EXCLUDED.house_number RETURNING id")
            ex(app, "UPDATE users SET address_id = %s WHERE id = %s", aid, BALA)
            assert one(app, "SELECT house_number FROM users WHERE id = %s", BALA) == "Z9"
        finally:
            reader.rollback()
            _, err = run.communicate(timeout=600)
    assert run.returncode == 0, err[-2000:]
    assert run_cli("migrate", "verify", database_url=legacy_db).returncode == 0


def test_the_sync_step_installs_only_the_triggers_that_are_missing(migrated_messy: str) -> None:
    from tests.helpers import settings_for
    from villager_shop.migration.runner import make_context
    from villager_shop.migration.steps.sync_triggers import SyncTriggers

    with psycopg.connect(migrated_messy, autocommit=True) as c:
        c.execute("DROP TRIGGER villager_sync_order ON orders")
    ctx = make_context(migrated_messy, settings_for(migrated_messy))
    try:
        step = SyncTriggers()
        assert not step.check(ctx)
        assert step.apply(ctx) == {"tables": 1}  # orders only: the others are left as they are
        assert step.check(ctx)
    finally:
        ctx.conn.close()
