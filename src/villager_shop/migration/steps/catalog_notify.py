"""Tell the shop service's cache when anything changes the catalog: the old application, a script,
or the sync triggers. Statement-level (one notification per statement, delivered at commit), skipped
inside the backfill's own transactions (the runner notifies once when the run ends), and for the
shop service's own product and variant writes (its sessions set `villager.invalidates_cache`: it
invalidates exactly what it changed itself, and a NOTIFY would only wake every worker for nothing
and serialize its commits on PostgreSQL's notification queue lock). Unlike the sync triggers, these
stay after `complete`: any writer keeps invalidating the cache."""

from __future__ import annotations

from villager_shop.core.channels import CATALOG_CHANNEL, SELF_INVALIDATED, SELF_INVALIDATING_SESSION
from villager_shop.migration.context import Context
from villager_shop.migration.ddl import Ddl
from villager_shop.migration.sqlfiles import section
from villager_shop.migration.steps.base import Step

TABLES = ("products", "product_variants", "product_categories", "shops")
TRIGGER = "villager_catalog_changed"


def _when(table: str) -> str:
    when = "current_setting('villager.backfill', true) IS DISTINCT FROM 'on'"
    if table in SELF_INVALIDATED:
        when += f" AND current_setting('{SELF_INVALIDATING_SESSION}', true) IS DISTINCT FROM 'on'"
    return when


class CatalogNotify(Step):
    name = "catalog_notify"
    title = f"notify channel {CATALOG_CHANNEL} on every catalog change (cache invalidation for any writer)"
    phase = "sync"

    def ddl(self, utf8: bool = True) -> list[Ddl]:
        function = section("sync.sql", "fn_notify_catalog").replace("{catalog_channel}", CATALOG_CHANNEL)
        out = [Ddl(function, "none on application tables")]
        for t in TABLES:
            out.append(Ddl(
                f"DROP TRIGGER IF EXISTS {TRIGGER} ON public.{t};\n"
                f"CREATE TRIGGER {TRIGGER} AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON public.{t}\n"
                f"    FOR EACH STATEMENT WHEN ({_when(t)})\n"
                f"    EXECUTE FUNCTION villager_migration.notify_catalog();",
                f"SHARE ROW EXCLUSIVE on {t} (waits for in-flight writes)"))
        return out

    def undo_ddl(self) -> list[Ddl]:
        return [Ddl(f"DROP TRIGGER IF EXISTS {TRIGGER} ON public.{t}", f"SHARE ROW EXCLUSIVE on {t}") for t in TABLES]

    def check(self, ctx: Context) -> bool:
        n = ctx.scalar("SELECT count(*) FROM pg_trigger WHERE tgname = %s AND NOT tgisinternal", (TRIGGER,))
        return int(n or 0) == len(TABLES)
