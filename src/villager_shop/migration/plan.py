"""The villager_shop migration as data: an ordered list of generic operations with table and
column names. `migrate plan` prints it; `migrate run` executes it; rollback undoes it in reverse."""

from __future__ import annotations

from villager_shop.migration.steps.analyze import Analyze
from villager_shop.migration.steps.backfill import (
    Backfill,
    DefaultVariantReference,
    ExtractCategory,
    ExtractLookup,
    Quarantine,
    SplitDefaultVariant,
)
from villager_shop.migration.steps.base import Step
from villager_shop.migration.steps.catalog_notify import CatalogNotify
from villager_shop.migration.steps.columns import AddColumn
from villager_shop.migration.steps.constraints import AddConstraint, ValidateConstraint
from villager_shop.migration.steps.indexes import CreateIndex
from villager_shop.migration.steps.lookups import SeedLookup
from villager_shop.migration.steps.monitoring import MonitoringViews
from villager_shop.migration.steps.rebuild import RebuildTable
from villager_shop.migration.steps.schema_objects import CreateTable, Rules, StateSchema
from villager_shop.migration.steps.sync_triggers import SyncFunctions, SyncTriggers, table_triggers_sql
from villager_shop.migration.steps.vacuum import Vacuum

ORDER_VIOLATIONS = ("SELECT count(*) FROM public.orders"
                    " WHERE subtotal < 0 OR delivery_fee < 0 OR total < 0")
ITEM_VIOLATIONS = "SELECT count(*) FROM public.order_items WHERE quantity <= 0"

# Constraints on the legacy tables: (table, name, definition, referenced table)
CONSTRAINTS = [
    ("users", "fk_users_address", "FOREIGN KEY (address_id) REFERENCES public.addresses (id)", "addresses"),
    ("shops", "fk_shops_address", "FOREIGN KEY (address_id) REFERENCES public.addresses (id)", "addresses"),
    ("products", "fk_products_category",
     "FOREIGN KEY (category_id) REFERENCES public.product_categories (id)", "product_categories"),
    ("order_items", "fk_order_items_variant",
     "FOREIGN KEY (variant_id) REFERENCES public.product_variants (id)", "product_variants"),
    ("products", "chk_products_base_price_positive", "CHECK (base_price > 0)", None),
    ("orders", "chk_orders_amounts_positive", "CHECK (subtotal >= 0 AND delivery_fee >= 0 AND total >= 0)", None),
    ("order_items", "chk_order_items_quantity_positive", "CHECK (quantity > 0)", None),
]
VIOLATIONS = {"chk_orders_amounts_positive": ORDER_VIOLATIONS,
              "chk_order_items_quantity_positive": ITEM_VIOLATIONS}
# The checks legacy rows may violate, as (checked columns, rule). While such rows exist, a CHECK -
# even NOT VALID - would reject every later update of them, such as the old application's status
# change of an order with a negative total; the rule is then a constraint trigger of the same name,
# enforced on inserted rows and on changes of the checked columns (steps/constraints.py).
GUARDS = {"chk_orders_amounts_positive": (("subtotal", "delivery_fee", "total"),
                                          "subtotal >= 0 AND delivery_fee >= 0 AND total >= 0"),
          "chk_order_items_quantity_positive": (("quantity",), "quantity > 0")}

ORDER_ITEM_COLUMNS = ["id", "order_id", "product_id", "quantity", "unit_price", "created_at", "variant_id"]

INDEXES = [
    ("idx_products_shop_category_active", "products", "(shop_id, category_id) WHERE is_available",
     "a shop's available products by category"),
    ("idx_products_category_rating", "products",
     "(category_id, rating DESC, order_count DESC, id) WHERE is_available",
     "available products of a category by rating, order count"),
    ("idx_products_available_rating", "products", "(rating DESC, order_count DESC, id) WHERE is_available",
     "the unfiltered catalog listing"),
    ("idx_orders_customer_created_desc", "orders", "(customer_id, created_at DESC)", "a customer's orders"),
    ("idx_orders_shop_created_desc", "orders", "(shop_id, created_at DESC)", "a shop's orders"),
    ("idx_users_address_id", "users", "(address_id)", "foreign key"),
    ("idx_shops_address_id", "shops", "(address_id)", "foreign key"),
    ("idx_order_items_variant_id", "order_items", "(variant_id)", "foreign key"),
]


def build_plan() -> list[Step]:
    steps: list[Step] = [
        StateSchema(),
        # First of all: the legacy schema has no index on order_items.product_id, so every product
        # delete of the old application scans order_items for its foreign key (seconds on a large
        # shop), holding its locks meanwhile - and the expand steps below need short strong locks
        # on products and order_items, which they would wait for in vain (seen at scale 20: 22-39 s
        # per DDL). The sync trigger on products looks order_items up by product_id too.
        CreateIndex("idx_order_items_product_id", "order_items", "(product_id)",
                    why="used by the sync triggers and by foreign-key checks", phase="expand"),
        Rules(),
        SyncFunctions(),
        CreateTable("addresses"),
        CreateTable("product_categories"),
        # Before the triggers, so that they only look lookup rows up (steps/lookups.py); and before
        # the new columns, so that the new application - which may write as soon as they exist -
        # finds the sync triggers after a few catalog-only steps, not after a seed's table scans.
        SeedLookup("addresses", ["users", "shops"], "create the address of every house number in use"),
        SeedLookup("product_categories", ["products"], "create the category of every category spelling in use"),
        # Checks now (evaluated inline, no lookups). Foreign keys on the new columns come after the
        # backfill: only the triggers and the new application write those columns, and a NOT VALID
        # foreign key would cost every backfilled row a lookup.
        *[AddConstraint(t, n, d, referenced=r, guard=GUARDS.get(n), violations_sql=VIOLATIONS.get(n))
          for t, n, d, r in CONSTRAINTS if r is None and n in GUARDS],
        # Each new column or table comes with its sync triggers, in one transaction: no write through
        # it can come first. In dependency order: a trigger function runs against the columns and
        # tables it names (the products trigger links order items; the addresses and categories
        # triggers carry renames to the rows that point at them).
        CreateTable("product_variants", "SHARE ROW EXCLUSIVE on products (foreign key; milliseconds)",
                    then=(table_triggers_sql("product_variants"),)),
        AddColumn("order_items", "variant_id", "uuid", then=(table_triggers_sql("order_items"),)),
        AddColumn("products", "category_id", "uuid", more=(("base_price", "numeric(10, 2)"),),
                  then=(table_triggers_sql("products"), table_triggers_sql("product_categories")),
                  then_locks="SHARE ROW EXCLUSIVE on product_categories"),
        AddColumn("users", "address_id", "uuid", then=(table_triggers_sql("users"),)),
        AddColumn("shops", "address_id", "uuid", then=(table_triggers_sql("shops"), table_triggers_sql("addresses")),
                  then_locks="SHARE ROW EXCLUSIVE on addresses"),
        *[AddConstraint(t, n, d, referenced=r) for t, n, d, r in CONSTRAINTS if r is None and n not in GUARDS],
        SyncTriggers(),
        MonitoringViews(),
        CatalogNotify(),
        # Tables whose rows are rewritten (and products, whose variants are inserted) are walked by
        # key: the new index entries - the rows' primary keys, the variants' product ids - then go
        # in key order, to the pages written just before, instead of all over the indexes. Products
        # step, PostgreSQL 15, no writer: 0.78-0.81 s by key against 0.95-1.0 s by page at scale 1,
        # 4.4-4.8 s against 5.4-5.9 s at scale 5, 26 s against 33 s at scale 20. Tables only read
        # (the order_items copy, orders) are twice as fast by page.
        Backfill("users", [ExtractLookup("users", "house_number", "address_id", "addresses", "house_number",
                                         "canonical_house_number", "ensure_address")],
                 "backfill users.address_id from house_number", walk="key", replaces=("house_number",)),
        Backfill("shops", [ExtractLookup("shops", "house_number", "address_id", "addresses", "house_number",
                                         "canonical_house_number", "ensure_address")],
                 "backfill shops.address_id from house_number", walk="key", replaces=("house_number",)),
        # The variant split reads the products; the category extraction updates them, so it comes last.
        Backfill("products", [SplitDefaultVariant(), ExtractCategory()],
                 "backfill categories, category_id, base_price and default variants", walk="key",
                 replaces=("category", "price", "stock")),
        Vacuum("product_variants", "so that the order_items copy finds default variants by index alone"),
        # Rebuilt by copy and swapped in: updating every row in place costs three times as much
        # (steps/rebuild.py). Tables a rebuild cannot carry faithfully are updated in place.
        RebuildTable("order_items", "oi", ORDER_ITEM_COLUMNS,
                     # A lookup per row through the one-default index: a join would plan a hash
                     # of every variant for each batch, which grows with the shop.
                     {"variant_id": "coalesce(oi.variant_id, (SELECT v.id FROM public.product_variants v"
                                    " WHERE v.product_id = oi.product_id AND v.is_default))"},
                     "",
                     "CASE WHEN s.variant_id IS NULL THEN 'product_without_variant'"
                     " WHEN s.quantity <= 0 THEN 'non_positive_quantity' END",
                     [(i, d) for i, t, d, _ in INDEXES if t == "order_items"],
                     Backfill("order_items", [DefaultVariantReference()], "backfill order_items.variant_id",
                              only="t.variant_id IS NULL"),
                     "backfill order_items.variant_id: copy the table with it filled, swap the copy in",
                     # The copy guesses: a default variant takes its product's id (SplitDefaultVariant),
                     # so the lookup above is skipped for every item, and one hash join afterwards
                     # finds the items guessed wrong. At scale 20 the lookups cost 15 s of CPU
                     # (3 us each, all in shared_buffers).
                     guess=({"variant_id": "coalesce(oi.variant_id, oi.product_id)"},
                            "SELECT c.id::text, c.ctid FROM villager_migration.order_items c\n"
                            " WHERE c.variant_id = c.product_id AND NOT EXISTS (SELECT 1 FROM public.product_variants v\n"
                            "  WHERE v.id = c.variant_id AND v.product_id = c.product_id AND v.is_default)")),
        Backfill("orders", [Quarantine("orders", "villager_migration.order_problem(s.subtotal, s.delivery_fee,"
                                                 " s.total)")],
                 "quarantine orders whose amounts are negative or do not add up",
                 only="villager_migration.order_problem(t.subtotal, t.delivery_fee, t.total) IS NOT NULL"),
        # A foreign key's referencing column is indexed before the key exists: otherwise every
        # delete of a referenced row (a product delete cascades to its variants) scans the table.
        *[CreateIndex(i, t, d, why=w) for i, t, d, w in INDEXES if w == "foreign key"],
        *[AddConstraint(t, n, d, referenced=r) for t, n, d, r in CONSTRAINTS if r is not None],
        *[ValidateConstraint(t, n, d, VIOLATIONS.get(n), guard=GUARDS.get(n)) for t, n, d, _ in CONSTRAINTS],
        *[CreateIndex(i, t, d, why=w) for i, t, d, w in INDEXES if w != "foreign key"],
        Analyze(),
    ]
    names = [s.name for s in steps]
    assert len(names) == len(set(names)), "step names must be unique"
    return steps


def plan_sql(lock_timeout_ms: int, steps: list[Step] | None = None) -> str:
    """The whole plan as one SQL script (what `migrate plan --sql` prints and squawk lints)."""
    steps = steps if steps is not None else build_plan()
    out = [f"-- villager-shop migrate plan --sql ({len(steps)} steps). Every statement runs with these",
           "-- timeouts and is retried with backoff when a lock is not granted in time.",
           f"SET lock_timeout = '{lock_timeout_ms}ms';", "SET statement_timeout = '60s';", ""]
    for i, step in enumerate(steps, 1):
        out.append(f"-- step {i}: {step.name}: {step.title}")
        out.append(f"-- locks: {step.locks()}")
        for d in step.ddl():
            body = d.sql.rstrip().rstrip(";") + ";"
            if d.concurrent:
                out += ["SET statement_timeout = 0;", body, "SET statement_timeout = '60s';"]
            else:
                out += ["BEGIN;", body, "COMMIT;"]
        out.append("")
    return "\n".join(out)


def legacy_columns() -> tuple[tuple[str, str], ...]:
    """The legacy columns (table, column) `complete` drops: those the plan's steps contract."""
    return tuple(column for step in build_plan() for column in step.contracts())
