"""Two writers on related rows at the same moment, in both orders: the sync triggers must leave
both representations equal whichever commits first."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from tests.migration.conftest import one, violations

UNPRICED = "20000000-0000-0000-0000-000000000008"  # messy data: price 0, quarantined


def in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []
    t = threading.Thread(target=lambda: out.append(fn()))
    t.start()
    return t, out


def order_of(c: psycopg.Connection[Any]) -> Any:
    return one(c, "SELECT id FROM orders ORDER BY id LIMIT 1")


@pytest.mark.parametrize("first", ["item", "price"])
def test_an_item_ordered_while_its_product_is_priced_gets_the_new_variant(migrated_messy: str, first: str) -> None:
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
        assert one(c, "SELECT count(*) FROM villager_migration.quarantine WHERE row_id = %s", item) == 0
        assert violations(c) == []
