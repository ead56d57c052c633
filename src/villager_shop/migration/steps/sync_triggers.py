"""Install the triggers that keep both representations in sync (SPEC defect 2): from here on,
every write by the old application reaches the new structures and vice versa.

CREATE TRIGGER takes SHARE ROW EXCLUSIVE, which waits for in-flight writes on the table; so after
it commits, every write to the table either committed before (and the backfill will see it) or
fires the trigger."""

from __future__ import annotations

from typing import Any

from villager_shop.migration.context import Context
from villager_shop.migration.ddl import Ddl
from villager_shop.migration.sqlfiles import sections
from villager_shop.migration.steps.base import Step, function_exists

NOT_IN_BACKFILL = "WHEN (current_setting('villager.backfill', true) IS DISTINCT FROM 'on')"

# (trigger name, table, timing/events, level, function)
TRIGGERS: list[tuple[str, str, str, str, str]] = [
    ("villager_sync_address", "users", "BEFORE INSERT OR UPDATE", "ROW", "sync_address"),
    ("villager_sync_address", "shops", "BEFORE INSERT OR UPDATE", "ROW", "sync_address"),
    ("villager_sync_address_before", "addresses", "BEFORE INSERT OR UPDATE OF house_number", "ROW",
     "sync_address_row"),
    ("villager_sync_address_after", "addresses", "AFTER UPDATE OF house_number", "ROW", "sync_address_row"),
    ("villager_sync_category_before", "product_categories", "BEFORE INSERT OR UPDATE", "ROW",
     "sync_category_row"),
    ("villager_sync_category_after", "product_categories", "AFTER UPDATE OF name", "ROW", "sync_category_row"),
    ("villager_sync_product_before", "products", "BEFORE INSERT OR UPDATE", "ROW", "sync_product_before"),
    ("villager_sync_product_after", "products", "AFTER INSERT OR UPDATE", "ROW", "sync_product_after"),
    ("villager_sync_variant_after", "product_variants", "AFTER INSERT OR UPDATE", "ROW", "sync_variant_after"),
    ("villager_keep_default_variant", "product_variants", "BEFORE DELETE", "ROW", "keep_default_variant"),
    ("villager_sync_order_item", "order_items", "BEFORE INSERT OR UPDATE", "ROW", "sync_order_item"),
    ("villager_sync_order", "orders", "AFTER INSERT OR UPDATE", "ROW", "sync_order"),
    ("villager_forget_deleted", "products", "AFTER DELETE", "STATEMENT", "forget_deleted"),
    ("villager_forget_deleted", "orders", "AFTER DELETE", "STATEMENT", "forget_deleted"),
    ("villager_forget_deleted", "order_items", "AFTER DELETE", "STATEMENT", "forget_deleted"),
    ("villager_forget_old_key", "products", "AFTER UPDATE OF id", "KEY", "forget_old_key"),
    ("villager_forget_old_key", "orders", "AFTER UPDATE OF id", "KEY", "forget_old_key"),
    ("villager_forget_old_key", "order_items", "AFTER UPDATE OF id", "KEY", "forget_old_key"),
    ("villager_forget_truncated", "products", "AFTER TRUNCATE", "TRUNCATE", "forget_truncated"),
    ("villager_forget_truncated", "orders", "AFTER TRUNCATE", "TRUNCATE", "forget_truncated"),
    ("villager_forget_truncated", "order_items", "AFTER TRUNCATE", "TRUNCATE", "forget_truncated"),
]


def trigger_sql(name: str, table: str, events: str, level: str, function: str) -> str:
    if level == "KEY":  # only a write that changes the primary key
        return (f"CREATE TRIGGER {name} {events} ON public.{table}\n"
                f"    FOR EACH ROW WHEN (OLD.id IS DISTINCT FROM NEW.id)\n"
                f"    EXECUTE FUNCTION villager_migration.{function}()")
    if level == "TRUNCATE":
        return (f"CREATE TRIGGER {name} {events} ON public.{table}\n"
                f"    FOR EACH STATEMENT EXECUTE FUNCTION villager_migration.{function}()")
    if level == "STATEMENT":
        return (f"CREATE TRIGGER {name} {events} ON public.{table} REFERENCING OLD TABLE AS old_rows\n"
                f"    FOR EACH STATEMENT EXECUTE FUNCTION villager_migration.{function}()")
    return (f"CREATE TRIGGER {name} {events} ON public.{table}\n"
            f"    FOR EACH ROW {NOT_IN_BACKFILL}\n    EXECUTE FUNCTION villager_migration.{function}()")


def table_triggers_sql(table: str) -> str:
    """The sync triggers of one table, (re)created. The steps that add a new column or table run
    this in their own transaction, so that no write through the new structure can come before the
    trigger that carries it to the legacy columns."""
    stmts = []
    for name, tbl, events, level, fn in TRIGGERS:
        if tbl == table:
            stmts.append(f"DROP TRIGGER IF EXISTS {name} ON public.{tbl};")
            stmts.append(trigger_sql(name, tbl, events, level, fn) + ";")
    return "\n".join(stmts)


def _functions() -> dict[str, str]:
    return {key: body for key, body in sections("sync.sql").items()
            if key.startswith("fn_") and key != "fn_notify_catalog"}


class SyncFunctions(Step):
    """The trigger functions, before any new column exists (PL/pgSQL resolves the tables and
    columns it names when it runs, not when it is created)."""

    name = "sync_functions"
    title = "install the two-way sync functions (their triggers come with the new columns)"
    phase = "expand"

    def ddl(self, utf8: bool = True) -> list[Ddl]:
        return [Ddl("\n\n".join(_functions().values()), "none on application tables", gentle=True)]

    def check(self, ctx: Context) -> bool:
        return all(function_exists(ctx, f"villager_migration.{key[3:]}") for key in _functions())


class SyncTriggers(Step):
    """Every sync trigger, (re)created: most came with their table's new columns already; the
    others (orders) need nothing new. After this step every table is in sync."""

    name = "sync_triggers"
    title = "install the two-way sync triggers (legacy columns <-> normalized tables)"
    phase = "sync"

    TABLES = tuple(dict.fromkeys(t[1] for t in TRIGGERS))

    def ddl(self, utf8: bool = True) -> list[Ddl]:
        return [Ddl(table_triggers_sql(table), f"SHARE ROW EXCLUSIVE on {table} (waits for in-flight writes)")
                for table in self.TABLES]

    def apply(self, ctx: Context) -> dict[str, Any]:
        # Triggers installed with their table's columns are left as they are (no lock taken again).
        have = self._installed(ctx)
        done = 0
        for table, ddl in zip(self.TABLES, self.ddl(ctx.utf8), strict=True):
            if not {(n, t) for n, t, *_ in TRIGGERS if t == table} <= have:
                ctx.run(ddl, self.name)
                done += 1
        return {"tables": done}

    def undo_ddl(self) -> list[Ddl]:
        return [Ddl(f"DROP TRIGGER IF EXISTS {name} ON public.{table}", f"SHARE ROW EXCLUSIVE on {table}")
                for name, table, *_ in TRIGGERS]

    def complete_ddl(self) -> list[Ddl]:
        # A quarantined product's legacy form (price, stock, category) is kept in the quarantine as
        # the products trigger last wrote it: the backfill's own writes pass the triggers by. As the
        # triggers go, the quarantine takes the whole row one last time, before its legacy columns
        # are dropped (products are the only quarantined table that loses any).
        keep = Ddl("UPDATE villager_migration.quarantine q SET detail = to_jsonb(p) FROM public.products p"
                   " WHERE q.table_name = 'products' AND q.row_id = p.id",
                   "ROW EXCLUSIVE on villager_migration.quarantine; reads products")
        return [keep, *self.undo_ddl()]

    @staticmethod
    def _installed(ctx: Context) -> set[tuple[str, str]]:
        rows = ctx.conn.execute(
            "SELECT tgname, c.relname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid"
            " WHERE tgname LIKE 'villager_%%' AND NOT tgisinternal"
            " AND c.relnamespace = 'public'::regnamespace").fetchall()
        return {(r[0], r[1]) for r in rows}

    def check(self, ctx: Context) -> bool:
        return {(n, t) for n, t, *_ in TRIGGERS} <= self._installed(ctx)
