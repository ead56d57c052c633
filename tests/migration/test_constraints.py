"""Checks that legacy rows violate (steps/constraints.py): the old application keeps updating those
rows, new and changed values obey the rule, and the rule becomes a validated CHECK once no row
violates it."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from tests.helpers import run_cli
from tests.migration.conftest import migrate, one

GUARDED = ("chk_orders_amounts_positive", "chk_order_items_quantity_positive")


def forms(c: psycopg.Connection[Any]) -> dict[str, tuple[str, bool]]:
    return {n: (t, v) for n, t, v in c.execute(
        "SELECT conname, contype::text, convalidated FROM pg_constraint WHERE conname = ANY(%s)",
        (list(GUARDED),)).fetchall()}


def bad_rows(url: str) -> dict[str, Any]:
    """A shop with an order of negative amounts, an item of quantity 0 on an unpriced product, and
    a good order."""
    with psycopg.connect(url, autocommit=True) as c:
        u = one(c, "INSERT INTO users (name, house_number) VALUES ('u', '1') RETURNING id")
        s = one(c, "INSERT INTO shops (owner_id, name) VALUES (%s, 's') RETURNING id", u)
        free = one(c, "INSERT INTO products (shop_id, name, price, stock) VALUES (%s, 'free', 0, 3) RETURNING id", s)
        priced = one(c, "INSERT INTO products (shop_id, name, price, stock) VALUES (%s, 'p', 5, 3) RETURNING id", s)
        bad = one(c, "INSERT INTO orders (customer_id, shop_id, subtotal, delivery_fee, total)"
                     " VALUES (%s, %s, -5, 0, -5) RETURNING id", u, s)
        good = one(c, "INSERT INTO orders (customer_id, shop_id, subtotal, delivery_fee, total)"
                      " VALUES (%s, %s, 5, 1, 6) RETURNING id", u, s)
        zero = one(c, "INSERT INTO order_items (order_id, product_id, quantity, unit_price)"
                      " VALUES (%s, %s, 0, 5) RETURNING id", bad, free)
        one(c, "INSERT INTO order_items (order_id, product_id, quantity, unit_price)"
               " VALUES (%s, %s, 1, 5) RETURNING id", good, priced)
    return {"user": u, "shop": s, "free": free, "bad": bad, "good": good, "zero": zero}


def test_legacy_rows_violating_a_check_stay_writable_and_new_values_obey_it(legacy_db: str) -> None:
    ids = bad_rows(legacy_db)
    migrate(legacy_db)
    with psycopg.connect(legacy_db, autocommit=True) as c:
        assert forms(c) == {n: ("t", True) for n in GUARDED}  # guards, listed under the constraint's name
        # The old application's ordinary updates of those rows (failed with a NOT VALID CHECK).
        c.execute("UPDATE orders SET status = 'confirmed' WHERE id = %s", (ids["bad"],))
        c.execute("UPDATE orders SET status = 'delivered', total = total WHERE id = %s", (ids["bad"],))
        c.execute("UPDATE order_items SET unit_price = 6 WHERE id = %s", (ids["zero"],))
        # Pricing the product links its waiting item, whose quantity is 0.
        c.execute("UPDATE products SET price = 2 WHERE id = %s", (ids["free"],))
        assert one(c, "SELECT variant_id IS NOT NULL FROM order_items WHERE id = %s", ids["zero"])
        # New and changed values obey the rule, with PostgreSQL's own error for a check.
        for sql, args in (
            ("INSERT INTO orders (customer_id, shop_id, subtotal, delivery_fee, total) VALUES (%s, %s, -1, 0, -1)",
             (ids["user"], ids["shop"])),
            ("UPDATE orders SET total = -6 WHERE id = %s", (ids["good"],)),
            ("UPDATE orders SET subtotal = -4 WHERE id = %s", (ids["bad"],)),
            ("UPDATE order_items SET quantity = -1 WHERE id = %s", (ids["zero"],)),
            ("INSERT INTO order_items (order_id, product_id, quantity, unit_price) VALUES (%s, %s, 0, 1)",
             (ids["good"], ids["free"])),
        ):
            with pytest.raises(psycopg.errors.CheckViolation) as err:
                c.execute(sql, args)
            assert err.value.diag.constraint_name in GUARDED
    assert run_cli("migrate", "verify", database_url=legacy_db).returncode == 0
    # Once the rows are fixed, a run turns the guards into validated CHECKs.
    with psycopg.connect(legacy_db, autocommit=True) as c:
        c.execute("UPDATE orders SET subtotal = 5, total = 5 WHERE id = %s", (ids["bad"],))
        c.execute("UPDATE order_items SET quantity = 1 WHERE id = %s", (ids["zero"],))
    migrate(legacy_db)
    with psycopg.connect(legacy_db, autocommit=True) as c:
        assert forms(c) == {n: ("c", True) for n in GUARDED}
        assert one(c, "SELECT count(*) FROM pg_proc WHERE proname LIKE 'enforce_chk_%%'") == 0
        with pytest.raises(psycopg.errors.CheckViolation):
            c.execute("UPDATE orders SET total = -1 WHERE id = %s", (ids["good"],))
    assert run_cli("migrate", "verify", database_url=legacy_db).returncode == 0


def test_rollback_removes_the_guards(legacy_db: str) -> None:
    bad_rows(legacy_db)
    migrate(legacy_db)
    assert run_cli("migrate", "rollback", "--yes", database_url=legacy_db).returncode == 0
    with psycopg.connect(legacy_db, autocommit=True) as c:
        assert forms(c) == {}
        assert one(c, "SELECT count(*) FROM pg_trigger WHERE tgname = ANY(%s)", list(GUARDED)) == 0
        assert one(c, "SELECT count(*) FROM pg_proc WHERE proname LIKE 'enforce_chk_%%'") == 0
        c.execute("INSERT INTO order_items (order_id, product_id, quantity, unit_price)"
                  " SELECT order_id, product_id, -3, 1 FROM order_items LIMIT 1")  # legacy rules again


def test_a_run_killed_while_removing_a_guard_leaves_no_function_behind(legacy_db: str) -> None:
    """The guard goes in two statements (trigger to CHECK, then its function): killed between the
    two, the next run validates the CHECK and drops the function."""
    ids = bad_rows(legacy_db)
    migrate(legacy_db)
    with psycopg.connect(legacy_db, autocommit=True) as c:
        c.execute("UPDATE orders SET subtotal = 5, total = 5 WHERE id = %s", (ids["bad"],))
        c.execute("DROP TRIGGER chk_orders_amounts_positive ON orders")  # the first statement, then kill -9
        c.execute("ALTER TABLE orders ADD CONSTRAINT chk_orders_amounts_positive"
                  " CHECK (subtotal >= 0 AND delivery_fee >= 0 AND total >= 0) NOT VALID")
        c.execute("UPDATE villager_migration.steps SET status = 'running'"
                  " WHERE name = 'validate_chk_orders_amounts_positive'")
    migrate(legacy_db)
    with psycopg.connect(legacy_db, autocommit=True) as c:
        assert forms(c)["chk_orders_amounts_positive"] == ("c", True)
        assert one(c, "SELECT count(*) FROM pg_proc WHERE proname = 'enforce_chk_orders_amounts_positive'") == 0
