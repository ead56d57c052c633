"""A plan's `monitoring = true`: the guide's views (db_performance_summary, slow_queries), which the
shop service's health and monitoring pages read, and check_data_integrity(), one row per row the
plan's verify would name, so that an operator or a dashboard can watch the migration from SQL.
Opt-in: these are objects of the public schema, which a database of another application may not
want (and `migrate plan` refuses to replace ones it has)."""

from __future__ import annotations

from villager_shop.migration.ddl import Ddl
from villager_shop.migration.sqlfiles import section
from villager_shop.migration.steps.monitoring import VIEWS, MonitoringViews

# The views and the function a plan with `monitoring = true` creates in the public schema.
OBJECTS = ("slow_queries", "db_performance_summary", "check_data_integrity")


def integrity_function(queries: list[str]) -> str:
    """check_data_integrity() over the plan's checks: (kind, table_name, row_id, detail), row_id
    the row's key as text (a plan's tables may be keyed by anything)."""
    body = "\nUNION ALL\n".join(queries) or "SELECT NULL, NULL, NULL, NULL WHERE false"
    return ("CREATE OR REPLACE FUNCTION public.check_data_integrity()\n"
            "RETURNS TABLE (kind text, table_name text, row_id text, detail text)\n"
            f"LANGUAGE sql STABLE AS $villager_integrity$\n"
            f"SELECT kind::text, table_name::text, row_id::text, detail::text FROM (\n{body}\n) x(kind, table_name, row_id, detail)\n"
            "$villager_integrity$")


class PlanMonitoring(MonitoringViews):
    """Created once the plan's new tables and columns exist (the function reads them); complete
    replaces the function by the checks that hold without the legacy columns."""

    title = "create views db_performance_summary, slow_queries and function check_data_integrity() of the plan"
    phase = "sync"

    def __init__(self, integrity: list[str], integrity_completed: list[str]) -> None:
        self.integrity = integrity
        self.integrity_completed = integrity_completed

    def ddl(self, utf8: bool = True) -> list[Ddl]:
        views = "\n\n".join(section("monitoring.sql", n) for n in VIEWS)
        return [Ddl(f"{views}\n\n{integrity_function(self.integrity)}", "none on application tables")]

    def complete_last_ddl(self) -> list[Ddl]:
        return [Ddl(integrity_function(self.integrity_completed), "none on application tables")]
