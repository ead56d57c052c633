"""The steps a plan file adds to the engine's own (columns, constraints, indexes, backfills): its
functions, its new tables, the lookup rows of values in use, and its sync triggers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from villager_shop.core.db import relation_exists
from villager_shop.core.errors import RefusedError
from villager_shop.migration.context import Context
from villager_shop.migration.ddl import Ddl
from villager_shop.migration.planfile.normalizers import shipped_sql
from villager_shop.migration.steps.base import Step, function_exists
from villager_shop.migration.steps.sync_triggers import NOT_IN_BACKFILL

V = "villager_migration"
QUARANTINE = f"{V}.plan_quarantine"

QUARANTINE_SQL = f"""CREATE TABLE IF NOT EXISTS {QUARANTINE} (
    table_name     text NOT NULL,
    row_key        text NOT NULL,
    reason         text NOT NULL,
    detail         jsonb,
    quarantined_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (table_name, row_key, reason)
)"""


@dataclass(frozen=True)
class Trigger:
    """One trigger of the plan. `level`: ROW (skipped inside the backfill's own transactions),
    DELETE (statement level, with the deleted rows), TRUNCATE, or KEY (a primary key change)."""

    name: str
    table: str
    events: str
    function: str
    level: str = "ROW"
    key: str = "id"

    def create_sql(self) -> str:
        on = f"ON public.{self.table}"
        if self.level == "DELETE":
            return (f"CREATE TRIGGER {self.name} {self.events} {on} REFERENCING OLD TABLE AS old_rows\n"
                    f"    FOR EACH STATEMENT EXECUTE FUNCTION {V}.{self.function}()")
        if self.level == "TRUNCATE":
            return f"CREATE TRIGGER {self.name} {self.events} {on}\n    FOR EACH STATEMENT EXECUTE FUNCTION {V}.{self.function}()"
        if self.level == "ALWAYS":  # fires inside the backfill too
            return f"CREATE TRIGGER {self.name} {self.events} {on}\n    FOR EACH ROW EXECUTE FUNCTION {V}.{self.function}()"
        return (f"CREATE TRIGGER {self.name} {self.events} {on}\n    FOR EACH ROW {NOT_IN_BACKFILL}\n"
                f"    EXECUTE FUNCTION {V}.{self.function}()")

    def replace_sql(self) -> str:
        return f"DROP TRIGGER IF EXISTS {self.name} ON public.{self.table};\n{self.create_sql()}"

    def drop(self) -> Ddl:
        return Ddl(f"DROP TRIGGER IF EXISTS {self.name} ON public.{self.table}",
                   f"SHARE ROW EXCLUSIVE on {self.table} (catalog only, milliseconds)")


def triggers_sql(triggers: list[Trigger]) -> str:
    return ";\n".join(t.replace_sql() for t in triggers)


class PlanState(Step):
    name = "plan_state"
    title = "create the plan's quarantine table (villager_migration.plan_quarantine)"

    def ddl(self, utf8: bool = True) -> list[Ddl]:
        return [Ddl(QUARANTINE_SQL, "none on application tables")]

    def check(self, ctx: Context) -> bool:
        return relation_exists(ctx.conn, QUARANTINE)


class PlanFunctions(Step):
    """Normalizers, the plan's own functions and the sync functions, before any new column exists
    (PL/pgSQL resolves the tables and columns it names when it runs, not when it is created)."""

    name = "plan_functions"
    title = "install the normalizers and the two-way sync functions"

    def __init__(self, shipped: str, plan_functions: list[str], functions: list[tuple[str, str]]) -> None:
        self.shipped, self.plan_functions, self.functions = shipped, plan_functions, functions

    def ddl(self, utf8: bool = True) -> list[Ddl]:
        body = [shipped_sql(utf8), *self.plan_functions, *(sql for _, sql in self.functions)]
        return [Ddl(";\n\n".join(b.rstrip().rstrip(";") for b in body), "none on application tables", gentle=True)]

    def check(self, ctx: Context) -> bool:
        return all(function_exists(ctx, f"{V}.{name}") for name, _ in self.functions)


class PlanTable(Step):
    """A new table, created empty (its own indexes are instant); `then`: its triggers, in the same
    transaction, so that no write to it can come before them."""

    def __init__(self, table: str, sql: str, columns: list[str], locks: str = "none on application tables",
                 then: str = "", undo_first: str = "") -> None:
        self.table, self.sql, self.columns, self._locks, self.then = table, sql, columns, locks, then
        self.undo_first = undo_first
        self.name = f"table_{table}"
        self.title = f"create table {table}" + (" with its sync triggers" if then else "")

    def ddl(self, utf8: bool = True) -> list[Ddl]:
        return [Ddl(";\n".join(p.rstrip().rstrip(";") for p in (self.sql, self.then) if p), self._locks)]

    def undo_ddl(self) -> list[Ddl]:
        # Rollback keeps the rows: the table moves to an archive schema.
        return [*([Ddl(self.undo_first, "none")] if self.undo_first else []), Ddl(f"ALTER TABLE IF EXISTS public.{self.table} SET SCHEMA {{archive}}",
                    f"ACCESS EXCLUSIVE on {self.table}")]

    def check(self, ctx: Context) -> bool:
        return relation_exists(ctx.conn, f"public.{self.table}")

    def apply(self, ctx: Context) -> dict[str, Any]:
        if self.check(ctx):
            have = {r[0] for r in ctx.conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = 'public'"
                " AND table_name = %s", (self.table,))}
            missing = sorted(set(self.columns) - have)
            if missing:
                raise RefusedError(f"public.{self.table} already exists and is not the plan's (no column "
                                   f"{', '.join(missing)}); rename or drop it before migrating")
            if self.then:
                ctx.run(Ddl(self.then, self._locks), self.name)
            return {"already": True}
        return super().apply(ctx)


class PlanSeed(Step):
    """Lookup rows for every value in use, before the sync triggers exist: the triggers then only
    look rows up, and two old-application transactions creating the same two new values in
    opposite orders cannot deadlock on the lookup's unique index."""

    phase = "expand"

    def __init__(self, lookup: str, sources: list[str], sql: str) -> None:
        self.lookup, self.sources, self.sql = lookup, sources, sql
        self.name = f"seed_{lookup}"
        self.title = f"create the {lookup} row of every value in use in {', '.join(sources)}"

    def ddl(self, utf8: bool = True) -> list[Ddl]:
        return [Ddl(self.sql, f"ACCESS SHARE on {', '.join(self.sources)} (one read; reads and writes go on)",
                    gentle=True)]

    def check(self, ctx: Context) -> bool:
        return True  # values written later are created by the triggers


class PlanTriggers(Step):
    """Every sync trigger of the plan, (re)created where missing (most came with their table's new
    column already). Undone by rollback and dropped by complete."""

    name = "sync_triggers"
    title = "install the two-way sync triggers (legacy columns <-> new tables)"
    phase = "sync"

    def __init__(self, triggers: list[Trigger], keep_quarantine: list[str]) -> None:
        self.triggers = triggers
        self.keep_quarantine = keep_quarantine  # statements run by complete before the triggers go

    def tables(self) -> list[str]:
        return list(dict.fromkeys(t.table for t in self.triggers))

    def ddl(self, utf8: bool = True) -> list[Ddl]:
        return [Ddl(triggers_sql([t for t in self.triggers if t.table == table]),
                    f"SHARE ROW EXCLUSIVE on {table} (waits for in-flight writes)") for table in self.tables()]

    def apply(self, ctx: Context) -> dict[str, Any]:
        have = self._installed(ctx)
        done = 0
        for table, ddl in zip(self.tables(), self.ddl(ctx.utf8), strict=True):
            if not {(t.name, t.table) for t in self.triggers if t.table == table} <= have:
                ctx.run(ddl, self.name)
                done += 1
        return {"tables": done}

    def undo_ddl(self) -> list[Ddl]:
        return [t.drop() for t in self.triggers]

    def complete_ddl(self) -> list[Ddl]:
        keep = [Ddl(s, "ROW EXCLUSIVE on villager_migration.plan_quarantine") for s in self.keep_quarantine]
        return [*keep, *self.undo_ddl()]

    def _installed(self, ctx: Context) -> set[tuple[str, str]]:
        rows = ctx.conn.execute(
            "SELECT tgname, c.relname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid"
            " WHERE NOT tgisinternal AND c.relnamespace = 'public'::regnamespace AND c.relname = ANY(%s)",
            (self.tables(),)).fetchall()
        return {(str(r[0]), str(r[1])) for r in rows}

    def check(self, ctx: Context) -> bool:
        return {(t.name, t.table) for t in self.triggers} <= self._installed(ctx)
