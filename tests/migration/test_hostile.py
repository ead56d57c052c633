"""Values and writes the legacy schema admits that a tidy data set never has: lookup values longer
than a btree entry, case rules that are not idempotent, many names with one slug, primary-key
updates and TRUNCATE of quarantined rows."""

from __future__ import annotations

import re

import psycopg
import pytest

from tests.migration.conftest import VILLAGER_PLAN, migrate, one, unicode_case, violations
from tests.migration.messy import load_messy
from tests.plans import normalizers, quarantined_keys

PLANS = {"built-in": None, "file": VILLAGER_PLAN}

SHOP = "10000000-0000-0000-0000-000000000001"
# md5 text does not compress: 3,200 bytes is more than a btree entry may hold (2,704).
LONG = "(SELECT string_agg(md5(g::text || %s), '') FROM generate_series(1, 100) g)"
PUNCTUATION = ["@@", "##", "$$", "%%", "^^", "**", "((", "))", "==", "++", "~~", "||"]


@pytest.mark.parametrize("plan", PLANS)
def test_hostile_values_migrate_and_stay_in_sync(legacy_db: str, plan: str) -> None:
    load_messy(legacy_db)
    with psycopg.connect(legacy_db, autocommit=True) as c:
        c.execute(f"INSERT INTO users (name, house_number) VALUES ('Long', {LONG}), ('Long2', upper({LONG}))",
                  ("a", "a"))
        c.execute("INSERT INTO users (name, house_number) VALUES ('Dotless', %s), ('Composed', %s)",
                  ("\u0131\u0300", "\u00cc"))
        c.execute(f"INSERT INTO products (shop_id, name, category, price) VALUES (%s, 'L', {LONG}, 5),"
                  f" (%s, 'L2', upper({LONG}), 6)", (SHOP, "b", SHOP, "b"))
        for i, name in enumerate(PUNCTUATION):
            c.execute("INSERT INTO products (shop_id, name, category, price) VALUES (%s, %s, %s, 1)",
                      (SHOP, f"p{i}", name))
    migrate(legacy_db, PLANS[plan])
    with psycopg.connect(legacy_db, autocommit=True) as c:
        assert violations(c) == []
        # One address for a long value in any case; it fits the unique index and is stable.
        assert one(c, "SELECT count(DISTINCT address_id) FROM users WHERE name IN ('Long', 'Long2')") == 1
        addr = one(c, "SELECT a.house_number FROM addresses a JOIN users u ON u.address_id = a.id WHERE u.name = 'Long'")
        assert len(addr.encode()) <= 2000
        assert one(c, f"SELECT {normalizers(c)['house_number']}(%s)", addr) == addr
        # The letter and the same letter spelled with a combining mark are one house (where the
        # database's LC_CTYPE maps case beyond ASCII: not in C or POSIX).
        if unicode_case(c):
            assert one(c, "SELECT count(DISTINCT address_id) FROM users WHERE name IN ('Dotless', 'Composed')") == 1
        assert one(c, "SELECT count(DISTINCT category_id) FROM products WHERE name IN ('L', 'L2')") == 1
        slugs = [r[0] for r in c.execute(
            "SELECT c.slug FROM products p JOIN product_categories c ON c.id = p.category_id WHERE p.category = ANY(%s)",
            (PUNCTUATION,))]
        assert len(slugs) == len(set(slugs)) == len(PUNCTUATION)
        assert {"category-3", "category-5"} <= set(slugs)  # (messy has category, -2) numbers, then hashes
        assert all(len(s) <= len("category-") + 8 for s in slugs), slugs

        # The old application goes on writing such values: accepted as before, and in sync.
        c.execute(f"INSERT INTO users (name, house_number) VALUES ('Long3', {LONG})", ("c",))
        c.execute(f"UPDATE products SET category = {LONG} WHERE name = 'Radio'", ("d",))
        # More names whose slug is 'category', from the old application: each takes the hash form
        # at once, not the next free number after every one taken (what made 3,000 names quadratic).
        for name in ("&&", "::", ";;"):
            cat = one(c, "INSERT INTO products (shop_id, name, category, price) VALUES (%s, 'x', %s, 1)"
                         " RETURNING category_id", SHOP, name)
            slug = one(c, "SELECT slug FROM product_categories WHERE id = %s", cat)
            assert re.fullmatch(r"category-[0-9a-f]{8}", slug), slug
        assert violations(c) == []


@pytest.mark.parametrize("plan", PLANS)
def test_quarantine_follows_primary_key_updates_and_truncate(legacy_db: str, plan: str) -> None:
    load_messy(legacy_db)
    migrate(legacy_db, PLANS[plan])
    with psycopg.connect(legacy_db, autocommit=True) as c:
        def quarantined(table: str) -> set[str]:
            return quarantined_keys(c, table)

        # an order quarantined for its amounts, an item for its quantity, a product for its price
        order = one(c, "INSERT INTO orders (customer_id, shop_id, subtotal, delivery_fee, total)"
                       " VALUES ('00000000-0000-0000-0000-000000000002', %s, 10, 0, 12) RETURNING id", SHOP)
        new_order = one(c, "UPDATE orders SET id = gen_random_uuid() WHERE id = %s RETURNING id", order)
        assert str(new_order) in quarantined("orders") and str(order) not in quarantined("orders")
        item = "40000000-0000-0000-0000-000000000004"  # its product has no variant
        new_item = one(c, "UPDATE order_items SET id = gen_random_uuid() WHERE id = %s RETURNING id", item)
        assert str(new_item) in quarantined("order_items") and item not in quarantined("order_items")
        free = one(c, "INSERT INTO products (shop_id, name, price) VALUES (%s, 'zero', 0) RETURNING id", SHOP)
        moved = one(c, "UPDATE products SET id = gen_random_uuid() WHERE id = %s RETURNING id", free)
        assert str(moved) in quarantined("products") and str(free) not in quarantined("products")
        # A product with a default variant may change its key as before: the variant follows.
        sold = one(c, "INSERT INTO products (shop_id, name, price) VALUES (%s, 'sold', 3) RETURNING id", SHOP)
        renamed = one(c, "UPDATE products SET id = gen_random_uuid() WHERE id = %s RETURNING id", sold)
        assert one(c, "SELECT count(*) FROM product_variants WHERE product_id = %s AND is_default", renamed) == 1
        assert violations(c) == []

        c.execute("TRUNCATE order_items")
        assert quarantined("order_items") == set()
        c.execute("TRUNCATE orders, order_items")
        assert quarantined("orders") == set()
        assert violations(c) == []
