"""Measure a legacy database with SQL (ours or anyone's): row counts and every messy kind; and the
exact counts the generator assigns, to compare with."""

from __future__ import annotations

import random
from typing import Any

import psycopg
from psycopg import sql

from villager_shop.legacy.generate.vocabulary import RATES
from villager_shop.legacy.generate.world import Kinds, table_sizes
from villager_shop.legacy.schema import LEGACY_TABLES

# ---------------------------------------------------------------------------------------------
# Measuring any legacy database (ours or anyone's)


def row_counts(conn: psycopg.Connection[Any]) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in LEGACY_TABLES:
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(t))).fetchone()
        out[t] = int(row[0]) if row else 0
    return out


_HOUSE_KINDS_SQL = """
    count(*) FILTER (WHERE house_number IS NULL) AS null,
    count(*) FILTER (WHERE house_number = '') AS empty,
    count(*) FILTER (WHERE house_number ~ '^\\s+$') AS blank,
    count(*) FILTER (WHERE house_number ~ '\\S' AND house_number ~ '^\\s|\\s$') AS padded,
    count(*) FILTER (WHERE house_number ~ '[a-z]') AS lower_case,
    count(*) FILTER (WHERE house_number ~ '\\S\\s+\\S') AS inner_space
"""

# house key: the spelling without any whitespace, upper-cased ('12a', ' 12A ', '12 A' → '12A')
_HOUSE_KEY = "upper(regexp_replace(house_number, '\\s', '', 'g'))"
# category key: case- and space-insensitive; slug: the guide's naive rule made punctuation-proof
_CAT_KEY = "lower(btrim(regexp_replace(category, '\\s+', ' ', 'g')))"
_CAT_SLUG = "btrim(regexp_replace(lower(category), '[^a-z0-9]+', '-', 'g'), '-')"

_MESSY_QUERIES: tuple[tuple[str, str], ...] = (
    ("users.house_number", f"SELECT {_HOUSE_KINDS_SQL} FROM users"),
    ("shops.house_number", f"SELECT {_HOUSE_KINDS_SQL} FROM shops"),
    ("house_numbers", f"""
        WITH h AS (SELECT house_number, 'u' AS src FROM users WHERE house_number ~ '\\S'
                   UNION ALL SELECT house_number, 's' FROM shops WHERE house_number ~ '\\S'),
             k AS (SELECT {_HOUSE_KEY} AS key, count(DISTINCT house_number) AS spellings,
                          bool_or(src = 'u') AS has_user, bool_or(src = 's') AS has_shop FROM h GROUP BY 1)
        SELECT count(*) FILTER (WHERE spellings > 1) AS houses_with_several_spellings,
               count(*) FILTER (WHERE has_user AND has_shop) AS houses_shared_by_shop_and_user
        FROM k"""),
    ("users", """
        SELECT count(*) FILTER (WHERE phone IS NULL) AS phone_null,
               count(*) FILTER (WHERE email IS NULL) AS email_null,
               count(*) FILTER (WHERE role = 'admin') AS role_admin,
               count(*) FILTER (WHERE role = 'shopkeeper') AS role_shopkeeper
        FROM users"""),
    ("products.category", """
        SELECT count(*) FILTER (WHERE category IS NULL) AS null,
               count(*) FILTER (WHERE category = '') AS empty,
               count(*) FILTER (WHERE category ~ '^\\s+$') AS blank,
               count(*) FILTER (WHERE category ~ '[[:alnum:]]' AND category ~ '[!-/:-@[-`{-~]') AS punctuation,
               count(*) FILTER (WHERE octet_length(category) <> char_length(category)) AS non_ascii,
               count(*) FILTER (WHERE category ~ '\\S' AND category !~ '[[:alnum:]]'
                                  AND octet_length(category) = char_length(category)) AS punctuation_only
        FROM products"""),
    ("products.category", f"""
        WITH c AS (SELECT category, count(*) AS n, {_CAT_KEY} AS key FROM products
                   WHERE category ~ '\\S' GROUP BY category),
             r AS (SELECT n, row_number() OVER (PARTITION BY key ORDER BY n DESC, category) AS rn FROM c)
        SELECT coalesce(sum(n) FILTER (WHERE rn > 1), 0)::bigint AS case_space_variant_rows FROM r"""),
    ("products.category", f"""
        WITH c AS (SELECT DISTINCT {_CAT_KEY} AS key, {_CAT_SLUG} AS slug FROM products WHERE category ~ '\\S'),
             s AS (SELECT slug, count(*) AS names FROM c WHERE slug <> '' GROUP BY slug)
        SELECT count(*) FILTER (WHERE names > 1) AS slugs_shared_by_different_names,
               coalesce(sum(names) FILTER (WHERE names > 1), 0)::bigint AS names_sharing_a_slug,
               (SELECT count(*) FROM products WHERE category ~ '\\S' AND {_CAT_SLUG} = '') AS rows_with_empty_slug
        FROM s"""),
    ("products", """
        SELECT count(*) FILTER (WHERE price = 0) AS price_zero,
               count(*) FILTER (WHERE price < 0) AS price_negative,
               count(*) FILTER (WHERE stock < 0) AS stock_negative,
               count(*) FILTER (WHERE NOT is_available) AS unavailable
        FROM products"""),
    ("orders", """
        SELECT count(*) FILTER (WHERE total <> subtotal + delivery_fee) AS total_mismatch FROM orders"""),
    ("order_items", """
        SELECT count(*) FILTER (WHERE NOT p.is_available) AS unavailable_product,
               count(*) FILTER (WHERE oi.unit_price <> p.price) AS unit_price_differs
        FROM order_items oi JOIN products p ON p.id = oi.product_id"""),
)


def messy_counts(conn: psycopg.Connection[Any]) -> dict[str, dict[str, int]]:
    """Counts of every messy kind, measured with SQL on whatever the legacy tables hold."""
    out: dict[str, dict[str, int]] = {}
    for group, query in _MESSY_QUERIES:
        with conn.cursor() as cur:
            cur.execute(query.encode())
            row = cur.fetchone()
            names = [d.name for d in cur.description or ()]
        out.setdefault(group, {}).update(
            {name: int(value or 0) for name, value in zip(names, row or (), strict=False)}
        )
    return out


def expected_counts(scale: float, seed: int = 0) -> dict[str, dict[str, int]]:
    """The exact counts the generator assigns for each 'exact' messy kind at a scale (seed-independent)."""
    world_sizes = table_sizes(scale)
    n = {"users": world_sizes["users"], "shops": world_sizes["shops"],
         "products": max(world_sizes["products"], world_sizes["shops"]), "orders": world_sizes["orders"]}
    out: dict[str, dict[str, int]] = {}
    for column, rates in RATES.items():
        table = column.split(".")[0]
        out[column] = Kinds(n[table], rates, random.Random(seed)).counts
    return out
