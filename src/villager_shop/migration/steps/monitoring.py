"""The guide's monitoring views and check_data_integrity(): created early so operators can watch
the migration itself, and so verify and the health endpoint have one implementation to call."""

from __future__ import annotations

import psycopg

from villager_shop.core.db import relation_exists
from villager_shop.migration import state
from villager_shop.migration.context import Context
from villager_shop.migration.ddl import Ddl
from villager_shop.migration.sqlfiles import section
from villager_shop.migration.steps.base import Step, function_exists

# The guide's views, which read only the server's statistics: any plan may install them.
VIEWS = ("slow_queries_fn", "slow_queries", "db_performance_summary")


class MonitoringViews(Step):
    name = "monitoring_views"
    title = "create views db_performance_summary, slow_queries and function check_data_integrity()"
    phase = "expand"

    def ddl(self, utf8: bool = True) -> list[Ddl]:
        body = "\n\n".join(section("monitoring.sql", n) for n in (
            *VIEWS, "normalized_violations", "check_data_integrity_migrating"))
        return [Ddl(body, "none on application tables")]

    def undo_ddl(self) -> list[Ddl]:
        return [Ddl("DROP VIEW IF EXISTS public.slow_queries, public.db_performance_summary", "none"),
                Ddl("DROP FUNCTION IF EXISTS public.check_data_integrity()", "none"),
                Ddl("DROP FUNCTION IF EXISTS villager_migration.normalized_violations()", "none")]

    def complete_last_ddl(self) -> list[Ddl]:
        # check_data_integrity() compared the legacy columns with the normalized tables; without
        # them, it checks the normalized schema's own invariants.
        return [Ddl(section("monitoring.sql", "check_data_integrity_completed"), "none on application tables")]

    def check(self, ctx: Context) -> bool:
        return (relation_exists(ctx.conn, "public.db_performance_summary")
                and relation_exists(ctx.conn, "public.slow_queries")
                and function_exists(ctx, "public.check_data_integrity"))


def ensure_pg_stat_statements(ctx: Context) -> bool:
    """Create the extension when the library is preloaded (without it the view explains itself).
    A role that may not read shared_preload_libraries (a managed server's owner role) just tries."""
    try:
        loaded = "pg_stat_statements" in str(ctx.scalar("SHOW shared_preload_libraries") or "")
    except psycopg.errors.InsufficientPrivilege:
        loaded = True
    available = bool(ctx.scalar("SELECT 1 FROM pg_available_extensions WHERE name = 'pg_stat_statements'"))
    if loaded and available:
        try:
            existed = bool(ctx.scalar("SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements'"))
            ctx.conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            if not existed:
                state.put(ctx.conn, "created_pg_stat_statements", True)
        except Exception as exc:  # e.g. no privilege: the view degrades, the migration goes on
            ctx.reporter.note(f"pg_stat_statements not created: {str(exc).splitlines()[0]}")
            return False
        return True
    return False
