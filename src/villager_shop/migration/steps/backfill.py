"""Backfill operations: generic set-based actions applied batch by batch to the locked rows
(`%(ids)s`), parameterised by table and column names - the villager plan is data, not code."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from villager_shop.migration.ddl import Ddl
from villager_shop.migration.steps.base import Context, Step

V = "villager_migration"


@dataclass(frozen=True)
class ExtractLookup:
    """A free-text column becomes a reference to a lookup table row (house_number -> addresses)."""

    table: str
    column: str
    fk: str
    lookup: str
    lookup_column: str
    canonical: str  # SQL function giving the lookup value from the raw text

    def actions(self) -> list[str]:
        canon = f"{V}.{self.canonical}(t.{self.column})"
        return [
            f"INSERT INTO public.{self.lookup} ({self.lookup_column})\n"
            f"SELECT DISTINCT {canon} FROM public.{self.table} t\n"
            f" WHERE t.id = ANY(%(ids)s) AND {canon} IS NOT NULL\n"
            f"ON CONFLICT ({self.lookup_column}) DO NOTHING",
            f"UPDATE public.{self.table} t SET {self.fk} = s.lid\n"
            f"  FROM (SELECT t2.id, x.id AS lid FROM public.{self.table} t2\n"
            f"          LEFT JOIN public.{self.lookup} x\n"
            f"            ON x.{self.lookup_column} = {V}.{self.canonical}(t2.{self.column})\n"
            f"         WHERE t2.id = ANY(%(ids)s)) s\n"
            f" WHERE t.id = s.id AND t.{self.fk} IS DISTINCT FROM s.lid",
        ]


@dataclass(frozen=True)
class ExtractCategory:
    """products.category -> product_categories (key-deduplicated, unique slugs) + category_id,
    and price -> base_price (NULL when the price is not positive)."""

    def actions(self) -> list[str]:
        key = f"{V}.category_key(p.category)"
        return [
            f"SELECT {V}.ensure_category(s.category) FROM (\n"
            f"  SELECT DISTINCT ON ({key}) p.category FROM public.products p\n"
            f"   WHERE p.id = ANY(%(ids)s) AND {key} IS NOT NULL ORDER BY {key}, p.id) s\n"
            f" WHERE NOT EXISTS (SELECT 1 FROM public.product_categories c\n"
            f"                    WHERE c.name_key = {V}.category_key(s.category))",
            f"UPDATE public.products p SET category_id = s.category_id, base_price = s.base_price\n"
            f"  FROM (SELECT p2.id, c.id AS category_id, CASE WHEN p2.price > 0 THEN p2.price END AS base_price\n"
            f"          FROM public.products p2\n"
            f"          LEFT JOIN public.product_categories c ON c.name_key = {V}.category_key(p2.category)\n"
            f"         WHERE p2.id = ANY(%(ids)s)) s\n"
            f" WHERE p.id = s.id\n"
            f"   AND (p.category_id IS DISTINCT FROM s.category_id OR p.base_price IS DISTINCT FROM s.base_price)",
        ]


@dataclass(frozen=True)
class SplitDefaultVariant:
    """products.price/stock -> one default row in product_variants (negative stock stored as 0);
    products whose price is not positive are quarantined instead."""

    def actions(self) -> list[str]:
        return [
            "INSERT INTO public.product_variants AS v\n"
            "       (product_id, sku, name, price, stock, is_default, is_active, sort_order, created_at, updated_at)\n"
            "SELECT p.id, p.id::text || '-default', 'Default', p.price, greatest(p.stock, 0), true, true, 0,\n"
            "       p.created_at, p.updated_at\n"
            "  FROM public.products p WHERE p.id = ANY(%(ids)s) AND p.price > 0\n"
            "ON CONFLICT (product_id) WHERE is_default DO UPDATE\n"
            "   SET price = EXCLUDED.price, stock = EXCLUDED.stock, updated_at = now()\n"
            " WHERE v.price IS DISTINCT FROM EXCLUDED.price OR v.stock IS DISTINCT FROM EXCLUDED.stock",
            "UPDATE public.product_variants v SET is_active = false, updated_at = now()\n"
            "  FROM public.products p\n"
            " WHERE p.id = ANY(%(ids)s) AND p.price <= 0 AND v.product_id = p.id AND v.is_default AND v.is_active",
            *Quarantine("products", "CASE WHEN t.price <= 0 THEN 'non_positive_price' END").actions(),
        ]


@dataclass(frozen=True)
class DefaultVariantReference:
    """order_items.product_id -> order_items.variant_id (the product's default variant)."""

    def actions(self) -> list[str]:
        return [
            "UPDATE public.order_items oi SET variant_id = v.id\n"
            "  FROM public.product_variants v\n"
            " WHERE oi.id = ANY(%(ids)s) AND oi.variant_id IS NULL AND v.product_id = oi.product_id AND v.is_default",
            *Quarantine("order_items", "CASE WHEN t.variant_id IS NULL THEN 'product_without_variant'"
                                       " WHEN t.quantity <= 0 THEN 'non_positive_quantity' END").actions(),
        ]


@dataclass(frozen=True)
class Quarantine:
    """Record (or clear) the reason a row cannot be migrated as is; `reason` is an SQL expression
    over `t` that is NULL for a good row."""

    table: str
    reason: str

    def actions(self) -> list[str]:
        return [
            f"INSERT INTO {V}.quarantine (table_name, row_id, reason, detail)\n"
            f"SELECT '{self.table}', t.id, {self.reason}, to_jsonb(t) FROM public.{self.table} t\n"
            f" WHERE t.id = ANY(%(ids)s) AND {self.reason} IS NOT NULL\n"
            f"ON CONFLICT (table_name, row_id) DO UPDATE SET reason = EXCLUDED.reason, detail = EXCLUDED.detail",
            f"DELETE FROM {V}.quarantine q USING public.{self.table} t\n"
            f" WHERE q.table_name = '{self.table}' AND q.row_id = t.id AND t.id = ANY(%(ids)s)\n"
            f"   AND {self.reason} IS NULL",
        ]


class Backfill(Step):
    phase = "backfill"

    def __init__(self, table: str, ops: list[Any], title: str) -> None:
        self.table = table
        self.ops = ops
        self.name = f"backfill_{table}"
        self.title = title

    def actions(self) -> list[str]:
        return [a for op in self.ops for a in op.actions()]

    def ddl(self, utf8: bool = True) -> list[Ddl]:
        locks = f"row locks (FOR NO KEY UPDATE SKIP LOCKED) on one batch of {self.table} at a time"
        return [Ddl(a.replace("%(ids)s", "$1::uuid[]"), locks) for a in self.actions()]

    def locks(self) -> str:
        return f"row locks on one batch of {self.table} at a time (adaptive, target ~50 ms), never a table lock"

    def apply(self, ctx: Context) -> dict[str, Any]:
        from villager_shop.migration.backfill import run_backfill

        res = run_backfill(ctx, self.name, self.table, self.actions())
        return {"rows": res.rows, "batches": res.batches, "seconds": round(res.seconds, 3),
                "rows_per_s": round(res.rows_per_s), "retried_rows": res.retried_rows,
                "max_batch_ms": round(res.max_batch_ms, 1)}

    def check(self, ctx: Context) -> bool:
        return bool(ctx.scalar(
            "SELECT finished_at IS NOT NULL FROM villager_migration.backfill WHERE step = %s", (self.name,)))


class Analyze(Step):
    name = "analyze"
    title = "ANALYZE the new and changed tables so the planner uses the new indexes"
    phase = "analyze"
    TABLES = ("users", "addresses", "product_categories", "shops", "products", "product_variants", "orders",
              "order_items")

    def ddl(self, utf8: bool = True) -> list[Ddl]:
        return [Ddl(f"ANALYZE public.{t}", f"SHARE UPDATE EXCLUSIVE on {t} (reads and writes go on)", gentle=True)
                for t in self.TABLES]

    def check(self, ctx: Context) -> bool:
        return False
