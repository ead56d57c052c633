"""Fill an empty legacy database with realistic, deterministic and deliberately messy data.

`generate(url, scale=..., seed=...)` streams rows with `COPY … FROM STDIN` (preformatted text lines
written in large chunks), table by table in foreign-key order: users → shops → products → orders →
order_items, all in one transaction, then runs `ANALYZE` and measures what it loaded with SQL.

Determinism: the same (seed, scale) gives identical rows in every column. Row ids are uuid v4 values
derived from a keyed hash of (seed, table, row number), so a foreign key is recomputed from the row
number of its target instead of being stored; every other value comes from `random.Random` streams
seeded from (seed, stream name), using only `random()` (stable across Python versions). Timestamps
lie in the 548 days (~18 months) before the fixed reference date 2026-06-01 00:00 UTC, never `now()`.
Memory is flat: rows are generated lazily; the only per-row state kept is a few compact arrays
(user creation time and house, shop creation time and category, product price and availability:
about 13 bytes per user/shop/product, no order kept).

Sizes at scale 1 (linear in scale; small minimums keep scale 0.01 meaningful):

| table       | rows at scale 1 | exact?                                             |
|-------------|-----------------|----------------------------------------------------|
| users       | 10 000          | exact: round(10 000 x scale), at least 20          |
| shops       | 1 000           | exact: round(1 000 x scale), at least 2            |
| products    | 50 000          | exact: round(50 000 x scale), at least 10          |
| orders      | 100 000         | exact: round(100 000 x scale), at least 20         |
| order_items | ~248 000        | 1-5 per order, mean 2.48; ±3 % of 2.48 x orders from scale 0.05 |

Roles: about 0.1 % admins (at least 1), one shopkeeper per ~1.1 shops (every shop's owner is a
shopkeeper; ~10 % of shopkeepers own two shops), the rest customers.

Messy rows (docs/legacy-data.md has the same table and the SQL that measures each kind). Kinds with
an exact rate are given to exactly max(1, round(rate x rows)) rows, drawn at random positions, so every
kind is present even at scale 0.01 (where that minimum makes the share larger than the rate); the
kinds of one column are mutually exclusive:

| column                   | kind             | rate  | example                                            |
|--------------------------|------------------|-------|----------------------------------------------------|
| users/shops.house_number | null             | 5 %   | NULL                                               |
|                          | empty            | 1.5 % | ''                                                 |
|                          | blank            | 0.5 % | '   '                                              |
|                          | padded           | 3 %   | ' 12A ', ' 7', '31B  '                             |
|                          | lower_case       | 4 %   | '12a' (canonical '12A')                            |
|                          | inner_space      | 2 %   | '12 A'                                             |
| users.phone              | null             | 10 %  | NULL (the others are unique '+91XXXXXXXXXX')       |
| users.email              | null             | 30 %  | NULL (the others are unique)                       |
| products.category        | null             | 2 %   | NULL                                               |
|                          | empty            | 0.5 % | ''                                                 |
|                          | blank            | 0.3 % | '  '                                               |
|                          | case_space       | 5 %   | 'electronics ', ' ELECTRONICS', 'Home  Decor'      |
|                          | punctuation      | 1 %   | 'Fruits & Veg', 'Fruits-Veg!', 'Snacks!!', 'Dairy.' |
|                          | slug_twin        | 0.5 % | 'Fruits Veg', 'Tea Coffee' (slug of 'Tea/Coffee')  |
|                          | non_ascii        | 1 %   | 'मिठाई', 'सब्ज़ी', 'Café Snacks', 'किराना'              |
|                          | punctuation_only | 0.2 % | '!!!', '---', '?', '...'                           |
| products.price           | zero / negative  | 0.3 % / 0.2 % | 0.00 / -45.00                              |
| products.stock           | negative         | 0.5 % | -3                                                 |
| products.is_available    | false            | 6 %   | false                                              |
| orders.total             | mismatch         | 1 %   | total <> subtotal + delivery_fee                   |
| order_items.unit_price   | differs          | ~3 %  | Bernoulli 3 % (price changed since), plus items of |
|                          |                  |       | products whose price is now 0 or negative (~0.5 %) |
| order_items.product_id   | unavailable      | ~6 %  | product is_available = false (follows the 6 %)     |

House numbers are canonical '12' or '12A' (~30 % of houses carry a letter); ~2.5 users share a house,
so the same house is written several ways across rows; 40 % of shops sit in their owner's house and
the others in a random village house, so shops share house numbers with users.
Everything else is clean: orders.subtotal = sum(quantity x unit_price) of its items, orders are
created after their customer and 7 days after their shop, products after their shop, shops after
their owner, order_items.created_at = the order's created_at, created_at <= updated_at <= 2026-06-01.
products.order_count is a legacy counter, not consistent with order_items.

The package's modules, one job each: `vocabulary` (what the data looks like: sizes, rates, names,
categories, messy values), `world` (deterministic ids and random streams, and the rows as COPY text),
`load` (COPY into the tables, `generate()` and its report) and `measure` (what any legacy database
holds, and what the generator assigns). Importers use the names below.
"""

from __future__ import annotations

from villager_shop.legacy.generate.load import (
    GenerateReport,
    LegacySchemaMissing,
    Progress,
    generate,
    require_legacy_schema,
)
from villager_shop.legacy.generate.measure import expected_counts, messy_counts, row_counts
from villager_shop.legacy.generate.vocabulary import (
    BASE_ROWS,
    CATEGORIES,
    CATEGORY_RATES,
    HISTORY_DAYS,
    HOUSE_RATES,
    ITEMS_PER_ORDER,
    ITEMS_TOLERANCE,
    MAX_SCALE,
    MEAN_ITEMS_PER_ORDER,
    MIN_ROWS,
    RATES,
    REFERENCE_DATE,
)
from villager_shop.legacy.generate.world import COLUMNS, copy_text, table_sizes

__all__ = [
    "BASE_ROWS",
    "CATEGORIES",
    "CATEGORY_RATES",
    "COLUMNS",
    "HISTORY_DAYS",
    "HOUSE_RATES",
    "ITEMS_PER_ORDER",
    "ITEMS_TOLERANCE",
    "MAX_SCALE",
    "MEAN_ITEMS_PER_ORDER",
    "MIN_ROWS",
    "RATES",
    "REFERENCE_DATE",
    "GenerateReport",
    "LegacySchemaMissing",
    "Progress",
    "copy_text",
    "expected_counts",
    "generate",
    "messy_counts",
    "require_legacy_schema",
    "row_counts",
    "table_sizes",
]
