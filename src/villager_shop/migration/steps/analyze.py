"""ANALYZE after the migration, so that the planner knows the new columns and tables and uses the
new indexes; `complete` runs it again once the legacy columns are gone."""

from __future__ import annotations

from typing import Any

from villager_shop.migration.context import Context
from villager_shop.migration.ddl import Ddl, execute_all
from villager_shop.migration.steps.base import Step


class Analyze(Step):
    name = "analyze"
    title = "ANALYZE the new and changed tables so the planner uses the new indexes"
    phase = "analyze"
    advisory = True
    TABLES: tuple[str, ...] = ("users", "addresses", "product_categories", "shops", "products", "product_variants",
                               "orders", "order_items")

    def __init__(self, tables: tuple[str, ...] | None = None) -> None:
        if tables is not None:
            self.TABLES = tables

    def ddl(self, utf8: bool = True) -> list[Ddl]:
        return [Ddl(f"ANALYZE public.{t}", f"SHARE UPDATE EXCLUSIVE on {t} (reads and writes go on; only the"
                    " columns without statistics, or skipped, when the others' are current)", gentle=True)
                for t in self.TABLES]

    # What each table needs. A table whose statistics are current is left alone: every column has
    # statistics and few rows changed since they were gathered (a table the migration only read,
    # orders; a rebuilt copy, analyzed before it was swapped in). A table where only some columns
    # have none (the new columns of users, shops, products) gets those columns analyzed: the
    # migration changed no value of the others (it moved rows, and autovacuum, which counts the
    # changes, analyzes those later as usual; `complete` analyzes everything). ANALYZE of all of
    # products' columns took 260 ms at scale 1, of its two new ones 75 ms. Any other table (new,
    # never analyzed, or changed since) is analyzed whole.
    NEEDS = """
    SELECT t, (SELECT coalesce(array_agg(quote_ident(a.attname::text) ORDER BY a.attnum), '{}')
                 FROM pg_attribute a
                WHERE a.attrelid = ('public.' || t)::regclass AND a.attnum > 0 AND NOT a.attisdropped
                  AND a.attstattarget IS DISTINCT FROM 0
                  AND NOT EXISTS (SELECT 1 FROM pg_stats s WHERE s.schemaname = 'public' AND s.tablename = t
                                     AND s.attname = a.attname AND NOT s.inherited)),
           (SELECT count(*) FROM pg_stats s WHERE s.schemaname = 'public' AND s.tablename = t AND NOT s.inherited),
           coalesce((SELECT n_mod_since_analyze FROM pg_stat_user_tables WHERE relid = ('public.' || t)::regclass), 0)
             <= 0.1 * greatest((SELECT reltuples FROM pg_class WHERE oid = ('public.' || t)::regclass), 1)
      FROM unnest(%s::text[]) t
    """

    def apply(self, ctx: Context) -> dict[str, Any]:
        # One table per connection, two at a time: each ANALYZE is one backend's work.
        whole, columns, current = [], {}, []
        for table, missing, have, few_changes in ctx.conn.execute(self.NEEDS, (list(self.TABLES),)):
            if not missing and few_changes:
                current.append(table)
            elif missing and have:
                columns[table] = list(missing)
            else:
                whole.append(table)
        locks = "SHARE UPDATE EXCLUSIVE on {} (reads and writes go on)"
        todo = [Ddl(f"ANALYZE public.{t}", locks.format(t), gentle=True) for t in whole]
        todo += [Ddl(f"ANALYZE public.{t} ({', '.join(c)})", locks.format(t), gentle=True) for t, c in columns.items()]
        execute_all(ctx.url, todo, ctx.policy, ctx.backfill_workers, "villager-shop analyze")
        return {"analyzed": whole, "columns": columns, "current": current}

    def check(self, ctx: Context) -> bool:
        return False
