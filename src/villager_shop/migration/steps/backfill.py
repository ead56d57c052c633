"""Backfill operations: generic set-based actions applied batch by batch to the locked rows
(`%(ids)s`), parameterised by table and column names - the villager plan is data, not code."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from villager_shop.migration.context import Context
from villager_shop.migration.ddl import Ddl
from villager_shop.migration.keys import VILLAGER_KEY, Key
from villager_shop.migration.steps.base import Step
from villager_shop.migration.walker import bind, run_backfill

V = "villager_migration"


def batch(alias: str) -> str:
    """Where an action names the batch's locked rows. The walker binds it (walker.bind): to their
    tuple ids on the physical walk, to their keys on the key walk. Actions must be no-ops on rows
    that are already migrated (the physical walk can meet a row twice), and an action that updates
    the table must come last (it moves the rows, so their tuple ids change)."""
    return f"/*BATCH {alias}*/"


def statement(ctes: list[str], main: str) -> str:
    """One statement from named CTEs (`name AS ...`) and a main query."""
    names = [c.split(" AS ", 1)[0].strip() for c in ctes]
    assert len(names) == len(set(names)), f"CTE names repeat: {names}"
    return "WITH " + ",\n".join(ctes) + "\n" + main


@dataclass(frozen=True)
class ExtractLookup:
    """A free-text column becomes a reference to a lookup table row (house_number -> addresses).
    Existing lookup rows are found by index; a missing one is created by the rule's ensure_*
    function (race-safe), called only for the rows that need it."""

    table: str
    column: str
    fk: str
    lookup: str
    lookup_column: str
    canonical: str  # SQL function giving the lookup value from the raw text
    ensure: str  # SQL function returning the id of the lookup row for a canonical value

    def actions(self) -> list[str]:
        # The canonical value is computed once per row (NFKC and two regular expressions); a row
        # whose reference is set was migrated (by us or by the sync trigger) and is left alone.
        # A lookup row another transaction added after our snapshot is neither seen by the join
        # nor returned by the insert: ensure_* finds it. The lookup rows used are locked (FOR KEY
        # SHARE) like ensure_*'s: a rename waits for the batch and then renames its rows' text too;
        # one that committed first is seen by the lock, and the old spelling gets its own row.
        return [
            f"WITH src AS MATERIALIZED (\n"
            f"  SELECT t.ctid AS tid, {V}.{self.canonical}(t.{self.column}) AS c FROM public.{self.table} t\n"
            f"   WHERE {batch('t')} AND t.{self.fk} IS NULL AND t.{self.column} IS NOT NULL),\n"
            f"known AS MATERIALIZED (\n"
            f"  SELECT jsonb_object_agg(k.{self.lookup_column}, k.id) AS m\n"
            f"    FROM (SELECT l.{self.lookup_column}, l.id FROM public.{self.lookup} l\n"
            f"           WHERE l.{self.lookup_column} = ANY(ARRAY(SELECT DISTINCT c FROM src WHERE c IS NOT NULL))\n"
            f"             FOR KEY SHARE) k),\n"
            f"added AS (\n"
            f"  INSERT INTO public.{self.lookup} ({self.lookup_column})\n"
            # Most values exist already (seeded): an index probe skips them, a conflict costs more.
            f"  SELECT DISTINCT c FROM src WHERE c IS NOT NULL\n"
            f"     AND NOT EXISTS (SELECT 1 FROM public.{self.lookup} l WHERE l.{self.lookup_column} = src.c)\n"
            f"  ON CONFLICT ({self.lookup_column}) DO NOTHING RETURNING id, {self.lookup_column}),\n"
            # The new rows as one map: a join on the CTE plans as a nested loop over it.
            f"map AS MATERIALIZED (SELECT jsonb_object_agg({self.lookup_column}, id) AS m FROM added)\n"
            f"UPDATE public.{self.table} t\n"
            f"   SET {self.fk} = coalesce(((SELECT m FROM map) ->> s.c)::uuid,\n"
            f"                           ((SELECT m FROM known) ->> s.c)::uuid,\n"
            f"                           {V}.{self.ensure}(s.c))\n"
            f"  FROM src s\n"
            f" WHERE {batch('t')} AND t.ctid = s.tid AND s.c IS NOT NULL",
        ]


@dataclass(frozen=True)
class ExtractCategory:
    """products.category -> product_categories (key-deduplicated, unique slugs) + category_id,
    and price -> base_price (NULL when the price is not positive)."""

    NEEDS = "(p.category_id IS NULL OR p.base_price IS DISTINCT FROM (CASE WHEN p.price > 0 THEN p.price END))"

    def actions(self) -> list[str]:
        return [statement(self.ctes(), self.main())]

    def ctes(self) -> list[str]:
        # The category key (NFKC, regular expressions) is computed once per distinct spelling in
        # the batch, not once per product; a product whose category_id is set was migrated already.
        # The batch is read twice (spellings, then the update) rather than joined back to a copy
        # of itself: hashing that copy cost more than the second read.
        return [
            "keys AS MATERIALIZED (\n"
            f"  SELECT category, {V}.category_key(category) AS k, min(seen) AS first_seen\n"
            "    FROM (SELECT p.category, row_number() OVER () AS seen FROM public.products p\n"
            f"           WHERE {batch('p')} AND {self.NEEDS}) s\n"
            "   WHERE category IS NOT NULL GROUP BY category)",
            # spelling -> category id, as one map (a join on the spelling plans as a nested loop).
            # A category created here is named after the first spelling met in walk order.
            # The categories used are locked (FOR KEY SHARE), as in ExtractLookup.
            "known AS MATERIALIZED (\n"
            "  SELECT c.id, c.name_key FROM public.product_categories c\n"
            "   WHERE c.name_key = ANY(ARRAY(SELECT k FROM keys WHERE k IS NOT NULL)) FOR KEY SHARE)",
            "cats AS MATERIALIZED (\n"
            f"  SELECT jsonb_object_agg(o.category, coalesce(o.id, {V}.ensure_category(o.category))) AS m\n"
            "    FROM (SELECT keys.category, c.id FROM keys LEFT JOIN known c ON c.name_key = keys.k\n"
            "           WHERE keys.k IS NOT NULL ORDER BY keys.first_seen OFFSET 0) o)",
        ]

    def main(self) -> str:
        return ("UPDATE public.products p\n"
                "   SET category_id = coalesce(p.category_id, ((SELECT m FROM cats) ->> p.category)::uuid),\n"
                "       base_price = CASE WHEN p.price > 0 THEN p.price END\n"
                f" WHERE {batch('p')} AND {self.NEEDS}")


def quarantine_ctes(table: str, source: str, reason: str, detail: str) -> str:
    """CTE fragments recording (or clearing) why rows of `source` cannot be migrated as is;
    `reason` is an SQL expression over the source row that is NULL for a good row."""
    return (
        f"q_add AS (\n"
        f"  INSERT INTO {V}.quarantine AS q0 (table_name, row_id, reason, detail)\n"
        f"  SELECT '{table}', s.id, {reason}, {detail} FROM {source} s WHERE {reason} IS NOT NULL\n"
        f"  ON CONFLICT (table_name, row_id) DO UPDATE SET reason = EXCLUDED.reason, detail = EXCLUDED.detail\n"
        f"   WHERE q0.reason IS DISTINCT FROM EXCLUDED.reason OR q0.detail IS DISTINCT FROM EXCLUDED.detail),\n"
        # One index probe per row, whatever the quarantine holds (a join on the source was planned
        # as a scan of the table's whole quarantine for every row of the batch).
        f"q_clear AS (\n"
        f"  DELETE FROM {V}.quarantine q WHERE q.table_name = '{table}'\n"
        f"     AND q.row_id = ANY(ARRAY(SELECT s.id FROM {source} s WHERE {reason} IS NULL)))"
    )


@dataclass(frozen=True)
class SplitDefaultVariant:
    """products.price/stock -> one default row in product_variants (negative stock stored as 0);
    products whose price is not positive are quarantined instead (and a default variant they
    may have is deactivated, never deleted: order items may reference it)."""

    def busy(self) -> list[str]:
        """Products whose default variant another transaction holds: the new application's variant
        update waits for our product lock (its trigger writes the product), so waiting for its
        variant lock would close a cycle. They are retried after the table."""
        # One probe per product; only the variants found (usually none) are then locked.
        return [
            "WITH have AS MATERIALIZED (SELECT v.id, v.product_id FROM public.product_variants v\n"
            "               WHERE v.product_id BETWEEN %(lo)s::uuid AND %(hi)s::uuid AND v.product_id = ANY(%(ids)s::uuid[])\n"
            "                 AND v.is_default),\n"
            "mine AS (SELECT v.id FROM public.product_variants v WHERE v.id IN (SELECT id FROM have)\n"
            "            FOR NO KEY UPDATE OF v SKIP LOCKED)\n"
            "SELECT coalesce(array_agg(h.product_id), ARRAY[]::uuid[]) FROM have h\n"
            " WHERE h.id NOT IN (SELECT id FROM mine)",
        ]

    def actions(self) -> list[str]:
        return [statement(self.ctes(), self.main())]

    def main(self) -> str:
        return "SELECT count(*) FROM src"

    def ctes(self) -> list[str]:
        reason = "CASE WHEN s.price <= 0 THEN 'non_positive_price' END"
        return [
            f"src AS MATERIALIZED (SELECT p.* FROM public.products p WHERE {batch('p')})",
            # The default variant takes its product's id (unless some variant has it already, a
            # product whose key the old application changed): walked by key, its primary-key
            # entries then go in order, not all over the index. Products step at scale 20,
            # PostgreSQL 15: 14-15.5 s against 17.8-20 s with random ids.
            "variants AS (\n"
            "  INSERT INTO public.product_variants AS v\n"
            "         (id, product_id, sku, name, price, stock, is_default, is_active, sort_order, created_at, updated_at)\n"
            "  SELECT CASE WHEN NOT EXISTS (SELECT 1 FROM public.product_variants w WHERE w.id = s.id) THEN s.id\n"
            "              ELSE gen_random_uuid() END,\n"
            "         s.id, s.id::text || '-default', 'Default', s.price, greatest(s.stock, 0), true, true, 0,\n"
            "         s.created_at, s.updated_at\n"
            "    FROM src s WHERE s.price > 0\n"
            "  ON CONFLICT (product_id) WHERE is_default DO UPDATE\n"
            "     SET price = EXCLUDED.price, stock = EXCLUDED.stock, updated_at = now()\n"
            "   WHERE v.price IS DISTINCT FROM EXCLUDED.price OR v.stock IS DISTINCT FROM EXCLUDED.stock)",
            # By index, whatever the statistics say (a join was planned as a scan of every variant).
            "deactivated AS (\n"
            "  UPDATE public.product_variants v SET is_active = false, updated_at = now()\n"
            "   WHERE v.product_id = ANY(ARRAY(SELECT s.id FROM src s WHERE s.price <= 0)) AND v.is_default AND v.is_active)",
            quarantine_ctes("products", "src", reason, "to_jsonb(s)"),
        ]


@dataclass(frozen=True)
class DefaultVariantReference:
    """order_items.product_id -> order_items.variant_id (the product's default variant); items of
    a product without a variant, or with a non-positive quantity, are quarantined."""

    def actions(self) -> list[str]:
        reason = ("CASE WHEN s.new_variant IS NULL THEN 'product_without_variant'"
                  " WHEN s.quantity <= 0 THEN 'non_positive_quantity' END")
        return [
            "WITH src AS MATERIALIZED (\n"
            "  SELECT oi.*, oi.ctid AS tid, coalesce(oi.variant_id, v.id) AS new_variant FROM public.order_items oi\n"
            "    LEFT JOIN public.product_variants v ON v.product_id = oi.product_id AND v.is_default\n"
            f"   WHERE {batch('oi')}),\n"
            "linked AS (\n"
            "  UPDATE public.order_items oi SET variant_id = s.new_variant FROM src s\n"
            "   WHERE oi.ctid = s.tid AND oi.variant_id IS NULL AND s.new_variant IS NOT NULL),\n"
            + quarantine_ctes("order_items", "src", reason, "to_jsonb(s) - 'new_variant' - 'tid'") + "\n"
            "SELECT count(*) FROM src",
        ]


@dataclass(frozen=True)
class Quarantine:
    """Only record (or clear) why rows cannot be migrated as is; `reason` is an SQL expression
    over the row `s` that is NULL for a good row."""

    table: str
    reason: str

    def actions(self) -> list[str]:
        return [
            f"WITH src AS MATERIALIZED (SELECT t.* FROM public.{self.table} t WHERE {batch('t')}),\n"
            + quarantine_ctes(self.table, "src", self.reason, "to_jsonb(s)") + "\n"
            "SELECT count(*) FROM src",
        ]


class Backfill(Step):
    phase = "backfill"

    def __init__(self, table: str, ops: list[Any], title: str, only: str | None = None,
                 walk: str | None = None, replaces: tuple[str, ...] = (), key: Key | None = None) -> None:
        self.table = table
        self.ops = ops
        self.only = only  # rows needing the actions (others are neither locked nor touched)
        self.walk = walk  # the walk `auto` takes for this table (None: physical on PostgreSQL 14+)
        self.replaces = replaces  # the legacy columns of `table` whose values the ops carry over
        self.key = key or VILLAGER_KEY  # the table's single-column primary key (keys.primary_key)
        self.name = f"backfill_{table}"
        self.title = title

    def actions(self) -> list[str]:
        """The batch's statements. Operations given as CTEs run as one statement (one more read of
        the batch, one round trip and one plan less: 10-15 % of the products step); the main
        query of the last one is the statement's, so an operation that updates the table comes last."""
        if len(self.ops) > 1 and all(hasattr(op, "ctes") for op in self.ops):
            return [statement([c for op in self.ops for c in op.ctes()], self.ops[-1].main())]
        return [a for op in self.ops for a in op.actions()]

    def busy(self) -> list[str]:
        return [b for op in self.ops for b in getattr(op, "busy", list)()]

    def ddl(self, utf8: bool = True) -> list[Ddl]:
        locks = f"row locks (FOR NO KEY UPDATE SKIP LOCKED) on one batch of {self.table} at a time"
        return [Ddl(bind(a, "physical").replace("%(plo)s", "$1").replace("%(phi)s", "$2").replace("%(tids)s", "$3"),
                    locks) for a in self.actions()]

    def locks(self) -> str:
        return f"row locks on one batch of {self.table} at a time (adaptive, target ~50 ms), never a table lock"

    def apply(self, ctx: Context) -> dict[str, Any]:
        res = run_backfill(ctx, self.name, self.table, self.actions(), self.busy(), self.only, prefer=self.walk,
                           key=self.key)
        return {"rows": res.rows, "batches": res.batches, "seconds": round(res.seconds, 3),
                "rows_per_s": round(res.rows_per_s), "retried_rows": res.retried_rows,
                "max_batch_ms": round(res.max_batch_ms, 1)}

    def contracts(self) -> list[tuple[str, str]]:
        return [(self.table, column) for column in self.replaces]

    def complete_ddl(self) -> list[Ddl]:
        return [Ddl(f"ALTER TABLE public.{t} DROP COLUMN IF EXISTS {c}",
                    f"ACCESS EXCLUSIVE on {t} (catalog only, milliseconds)") for t, c in self.contracts()]

    def check(self, ctx: Context) -> bool:
        """Every part walked, and no row left to retry (one the application held locked)."""
        return bool(ctx.scalar(
            "SELECT count(*) > 0 AND bool_and(finished_at IS NOT NULL) FROM villager_migration.backfill"
            " WHERE step LIKE %s", (f"{self.name}#%",))) and not ctx.scalar(
            "SELECT EXISTS (SELECT 1 FROM villager_migration.backfill_retry WHERE step LIKE %s)", (f"{self.name}#%",))
