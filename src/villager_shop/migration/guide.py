"""`--strategy guide`: the guide's Phase 1 and Phase 2 as written, fixed only enough to run, so
benchmarks can compare it with the online strategy on the same data. Phase 2 is ONE transaction
updating every row of users, shops and products: every write of the live application waits for
its COMMIT (SPEC defect 1). Nothing keeps later writes in sync (defect 2).

Fixes made only so that it runs on messy data and still does the guide's work: the shops branch
gets its IS NOT NULL (a NULL house number would violate NOT NULL); a spelling whose slug another
spelling already produced gets a numbered slug (the unique slug would abort the whole
transaction, and dropping the spelling would leave its products without a category, skipping the
guide's work for them); product_categories has the guide's keys only (ours also keys a category
by its canonical name, which would keep one spelling per name and leave two products in three
without a category); variants skip non-positive prices and clamp negative stock (our variant
table has checks); chk_orders_amounts_positive is NOT VALID (legacy orders violate it); and the
variants' INSERT locks the products it reads (FOR KEY SHARE): a product the live application
deletes meanwhile would otherwise fail the new foreign key and abort the whole transaction (seen
in CI).
"""

from __future__ import annotations

import time
from typing import Any

from villager_shop.core.errors import RefusedError, VillagerError
from villager_shop.migration import state
from villager_shop.migration.context import Context
from villager_shop.migration.plan import CONSTRAINTS, INDEXES
from villager_shop.migration.runner import exclusive, missing_legacy_tables
from villager_shop.migration.sqlfiles import section
from villager_shop.migration.steps.schema_objects import rules_sql

PHASE2 = """
INSERT INTO addresses (id, house_number, created_at, updated_at)
SELECT gen_random_uuid(), house_number, now(), now()
FROM (
  SELECT DISTINCT house_number FROM users WHERE house_number IS NOT NULL
  UNION
  SELECT DISTINCT house_number FROM shops WHERE house_number IS NOT NULL
) AS distinct_addresses;

UPDATE users SET address_id = a.id FROM addresses a WHERE users.house_number = a.house_number;

UPDATE shops SET address_id = a.id FROM addresses a WHERE shops.house_number = a.house_number;

INSERT INTO product_categories (id, name, slug, is_active, created_at, updated_at)
SELECT
  gen_random_uuid(), category, lower(replace(category, ' ', '-')) || CASE WHEN n > 1 THEN '-' || n ELSE '' END,
  true, now(), now()
FROM (SELECT category, row_number() OVER (PARTITION BY lower(replace(category, ' ', '-')) ORDER BY category) AS n
        FROM (SELECT DISTINCT category FROM products WHERE category IS NOT NULL AND btrim(category) <> '') d
     ) AS cats
ON CONFLICT DO NOTHING;

UPDATE products SET category_id = pc.id FROM product_categories pc WHERE products.category = pc.name;

INSERT INTO product_variants (id, product_id, sku, name, price, stock, is_default, created_at, updated_at)
SELECT gen_random_uuid(), p.id, p.id || '-default', 'Default', p.price, greatest(p.stock, 0), true, now(), now()
FROM products p WHERE p.price > 0
FOR KEY SHARE OF p;
"""


def run_guide(ctx: Context) -> dict[str, Any]:
    missing = missing_legacy_tables(ctx)
    if missing:
        raise VillagerError(f"not a villager_shop database: tables {', '.join(missing)} are missing")
    t0 = time.perf_counter()
    c = ctx.conn
    with exclusive(ctx, "run the guide's migration"):
        if state.schema_exists(c) and state.phase(c) != "not_started":
            raise RefusedError("--strategy guide is a benchmark reference for an untouched legacy database; "
                               f"this one is already in phase {state.phase(c)!r}")
        c.execute(section("state.sql", "state").encode())
        c.execute(rules_sql(ctx.utf8).encode())  # category_key() backs a generated column
        # Phase 1: schema, indexes and constraints, plain DDL with no timeouts (as the guide does).
        for table in ("addresses", "product_categories", "product_variants"):
            c.execute(section("expand.sql", table).encode())
        # The guide's schema: a category is a name and a unique slug, nothing more (our table also
        # keys categories by their canonical name, which would drop every spelling but one).
        c.execute("ALTER TABLE product_categories DROP CONSTRAINT product_categories_name_key_key,"
                  " DROP CONSTRAINT chk_product_categories_name_not_blank")
        for t, col, typ in (("users", "address_id", "uuid"), ("shops", "address_id", "uuid"),
                            ("products", "category_id", "uuid"), ("products", "base_price", "numeric(10, 2)"),
                            ("order_items", "variant_id", "uuid")):
            c.execute(f"ALTER TABLE {t} ADD COLUMN IF NOT EXISTS {col} {typ}")
        for idx, t, d, _ in INDEXES:
            c.execute(f"CREATE INDEX IF NOT EXISTS {idx} ON {t} {d}")
        for t, name, d, _ in CONSTRAINTS:
            if not c.execute("SELECT 1 FROM pg_constraint WHERE conname = %s", (name,)).fetchone():
                suffix = " NOT VALID" if name in ("chk_orders_amounts_positive",
                                                 "chk_order_items_quantity_positive") else ""
                c.execute(f"ALTER TABLE {t} ADD CONSTRAINT {name} {d}{suffix}")
        t1 = time.perf_counter()
        # Phase 2: one transaction.
        with c.transaction():
            for stmt in PHASE2.split(";\n"):
                if stmt.strip():
                    c.execute(stmt.encode())
        t2 = time.perf_counter()
        for t in ("users", "addresses", "product_categories", "shops", "products", "product_variants", "orders",
                  "order_items"):
            c.execute(f"ANALYZE {t}")
        rows = int(ctx.scalar("SELECT (SELECT count(*) FROM users) + (SELECT count(*) FROM shops)"
                              " + (SELECT count(*) FROM products)"))
        state.put(c, "strategy", "guide")
        state.set_phase(c, "migrated")
    return {"total_s": round(time.perf_counter() - t0, 3), "phase1_s": round(t1 - t0, 3),
            "phase2_s": round(t2 - t1, 3), "backfill_rows": rows,
            "backfill_rows_per_s": round(rows / (t2 - t1)) if t2 > t1 else 0}
