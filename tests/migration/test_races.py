"""Two writers on related rows at the same moment, in both orders: the sync triggers must leave
both representations equal whichever commits first."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from tests.helpers import run_cli, settings_for
from tests.migration.conftest import one, violations
from villager_shop.migration.runner import make_context, run

UNPRICED = "20000000-0000-0000-0000-000000000008"  # messy data: price 0, quarantined


def in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []
    t = threading.Thread(target=lambda: out.append(fn()))
    t.start()
    return t, out


def order_of(c: psycopg.Connection[Any]) -> Any:
    return one(c, "SELECT id FROM orders ORDER BY id LIMIT 1")


@pytest.mark.parametrize("first", ["item", "price"])
def test_an_item_ordered_while_its_product_is_priced_gets_the_new_variant(migrated_messy_any: str, first: str) -> None:
    migrated_messy = migrated_messy_any
    with psycopg.connect(migrated_messy, autocommit=True) as c:
        order = order_of(c)
    with psycopg.connect(migrated_messy) as a, psycopg.connect(migrated_messy) as b:
        def add_item() -> Any:
            row = b.execute("INSERT INTO order_items (order_id, product_id, quantity, unit_price)"
                            " VALUES (%s, %s, 1, 5) RETURNING id", (order, UNPRICED)).fetchone()
            return row[0] if row else None

        def price() -> None:
            a.execute("UPDATE products SET price = 5 WHERE id = %s", (UNPRICED,))

        if first == "item":  # the item's transaction is open while the product is priced
            item = add_item()
            t, _ = in_thread(price)
            time.sleep(0.3)
            b.commit()
            t.join(10)
            a.commit()
        else:  # the pricing transaction is open while the item is ordered
            price()
            t, out = in_thread(add_item)
            time.sleep(0.3)
            a.commit()
            t.join(10)
            b.commit()
            item = out[0]
        assert not t.is_alive()
    with psycopg.connect(migrated_messy, autocommit=True) as c:
        assert one(c, "SELECT oi.variant_id = v.id FROM order_items oi JOIN product_variants v"
                      " ON v.product_id = oi.product_id AND v.is_default WHERE oi.id = %s", item) is True
        assert one(c, "SELECT count(*) FROM villager_migration.quarantine WHERE row_id = %s"
                   if one(c, "SELECT to_regclass('villager_migration.plan_quarantine') IS NULL") else
                   "SELECT count(*) FROM villager_migration.plan_quarantine WHERE row_key = %s::text", item) == 0
        assert violations(c) == []


def _step_running(c: psycopg.Connection[Any], step: str) -> bool:
    if not one(c, "SELECT to_regclass('villager_migration.steps') IS NOT NULL"):
        return False
    return bool(one(c, "SELECT coalesce(bool_or(status = 'running'), false) FROM villager_migration.steps"
                       " WHERE name = %s", step))


def test_renames_while_the_backfill_walks_leave_both_sides_equal(legacy_db: str) -> None:
    """The new application renames an address and a category again and again while the backfill
    links rows to them in small, slow batches: every row ends with the text of the row it links."""
    with psycopg.connect(legacy_db, autocommit=True) as c:
        c.execute("INSERT INTO users (name, house_number) SELECT 'u' || g, CASE WHEN g % 2 = 0 THEN '12a'"
                  " ELSE ' 12 A' END FROM generate_series(1, 1500) g")
        c.execute("INSERT INTO shops (owner_id, name, house_number) SELECT id, 's', '1' FROM users LIMIT 1")
        c.execute("INSERT INTO products (shop_id, name, category, price) SELECT (SELECT id FROM shops), 'p' || g,"
                  " CASE WHEN g % 2 = 0 THEN 'Dairy' ELSE 'dairy ' END, 5 FROM generate_series(1, 1500) g")
    settings = settings_for(legacy_db).model_copy(update={
        "villager_batch_size": 25, "villager_batch_pause_ms": 30, "villager_target_batch_ms": 5})
    ctx = make_context(legacy_db, settings)
    runner, _ = in_thread(lambda: run(ctx))
    renames = {"backfill_users": 0, "backfill_products": 0}
    try:
        with psycopg.connect(legacy_db, autocommit=True) as c:
            deadline = time.monotonic() + 120
            while runner.is_alive() and time.monotonic() < deadline:
                if _step_running(c, "backfill_users"):
                    renames["backfill_users"] += c.execute(
                        "UPDATE addresses SET house_number = %s WHERE id = (SELECT id FROM addresses"
                        " WHERE house_number NOT IN ('1') ORDER BY house_number LIMIT 1)",
                        (f"R{renames['backfill_users']}",)).rowcount
                elif _step_running(c, "backfill_products"):
                    renames["backfill_products"] += c.execute(
                        "UPDATE product_categories SET name = %s WHERE id = (SELECT id FROM product_categories"
                        " ORDER BY name LIMIT 1)", (f"Milk {renames['backfill_products']}",)).rowcount
                time.sleep(0.01)
    finally:
        runner.join(120)
        ctx.conn.close()
    assert not runner.is_alive()
    assert renames["backfill_users"] >= 5 and renames["backfill_products"] >= 5, renames
    with psycopg.connect(legacy_db, autocommit=True) as c:
        assert violations(c) == []
    assert run_cli("migrate", "verify", database_url=legacy_db).returncode == 0


def test_renames_racing_old_application_writes_leave_both_sides_equal(migrated_messy: str) -> None:
    """After the run: the new application renames an address and a category while old-application
    connections move users and products into them (by the current name's spelling) and out. Before
    the lookups were locked, such a race left a row with the old name linked to the renamed row."""
    with psycopg.connect(migrated_messy, autocommit=True) as c:
        aid = one(c, "SELECT address_id FROM users WHERE address_id IS NOT NULL GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1")
        cid = one(c, "SELECT category_id FROM products WHERE category_id IS NOT NULL GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1")
        users = [r[0] for r in c.execute("SELECT id FROM users ORDER BY id")]
        products = [r[0] for r in c.execute("SELECT id FROM products ORDER BY id")]
    stop = time.monotonic() + 4
    errors: list[str] = []

    def new() -> None:
        with psycopg.connect(migrated_messy, autocommit=True) as c:
            n = 0
            while time.monotonic() < stop:
                n += 1
                try:
                    c.execute("UPDATE addresses SET house_number = %s WHERE id = %s", (f"REN {n}", aid))
                    c.execute("UPDATE product_categories SET name = %s WHERE id = %s", (f"Ren Cat {n}", cid))
                except psycopg.Error as exc:
                    errors.append(f"new: {exc.sqlstate} {exc}")
                time.sleep(0.005)

    def old(seed: int) -> None:
        rng = random.Random(seed)
        with psycopg.connect(migrated_messy, autocommit=True) as c:
            while time.monotonic() < stop:
                try:
                    if rng.random() < 0.5:
                        cur = one(c, "SELECT house_number FROM addresses WHERE id = %s", aid)
                        c.execute("UPDATE users SET house_number = %s WHERE id = %s",
                                  (rng.choice([cur.lower(), f" {cur}", "77Q"]), rng.choice(users)))
                    else:
                        cur = one(c, "SELECT name FROM product_categories WHERE id = %s", cid)
                        c.execute("UPDATE products SET category = %s WHERE id = %s",
                                  (rng.choice([cur.upper(), f"{cur} ", "Other"]), rng.choice(products)))
                except psycopg.Error as exc:
                    errors.append(f"old: {exc.sqlstate} {exc}")

    threads = [threading.Thread(target=new), *[threading.Thread(target=old, args=(i,)) for i in range(3)]]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    # A rename waits for rows that moved out of the address meanwhile, while the write moving one in
    # waits for the renamed row (the foreign key's own check takes that lock too): PostgreSQL aborts
    # one of the two (docs/migration-rules.md). Nothing else may fail, and nothing may diverge.
    assert [e for e in errors if "40P01" not in e] == []
    with psycopg.connect(migrated_messy, autocommit=True) as c:
        assert violations(c) == []
