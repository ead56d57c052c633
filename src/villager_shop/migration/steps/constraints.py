"""Constraints in two steps: added NOT VALID (enforced for new writes at once, no scan, a brief
lock), then validated later without blocking writes (SHARE UPDATE EXCLUSIVE).

A check that legacy rows violate cannot be validated, and as a NOT VALID CHECK it would still be
evaluated on every new version of those rows: the old application could no longer update them at
all (an order with a negative total could not be marked delivered). Such a check becomes a guard:
a constraint trigger of the same name (listed in pg_constraint, contype 't') that enforces the
rule on inserted rows and on changes of the checked columns only. Once no row violates the rule,
the validate step turns the guard back into a validated CHECK."""

from __future__ import annotations

import re
from typing import Any

from villager_shop.migration.context import Context
from villager_shop.migration.ddl import Ddl
from villager_shop.migration.steps.base import Step

Guard = tuple[tuple[str, ...], str]  # (checked columns, rule over the row's columns)


def constraint_form(ctx: Context, table: str, name: str) -> tuple[str, bool] | None:
    """None when absent, else (contype: 'c' check, 'f' foreign key, 't' guard; validated)."""
    row = ctx.conn.execute(
        "SELECT contype::text, convalidated FROM pg_constraint WHERE conname = %s AND conrelid = to_regclass(%s)",
        (name, f"public.{table}")).fetchone()
    return None if row is None else (str(row[0]), bool(row[1]))


def count_violations(ctx: Context, violations_sql: str | None) -> int:
    return int(ctx.scalar(violations_sql) or 0) if violations_sql else 0


def drop_guard_function(name: str) -> Ddl:
    return Ddl(f"DROP FUNCTION IF EXISTS public.enforce_{name}()", "none on application tables")


def _new(rule: str, columns: tuple[str, ...]) -> str:
    return re.sub(r"\b(" + "|".join(map(re.escape, columns)) + r")\b", r"NEW.\1", rule)


def guard_ddl(table: str, name: str, guard: Guard, *, replacing: bool = False) -> list[Ddl]:
    """The guard's function and trigger; `replacing`: in place of a CHECK of that name."""
    columns, rule = guard
    changed = (f"({', '.join(f'NEW.{c}' for c in columns)}) IS DISTINCT FROM"
               f" ({', '.join(f'OLD.{c}' for c in columns)})")
    function = f"""CREATE OR REPLACE FUNCTION public.enforce_{name}() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    -- CHECK semantics (a NULL result passes), for new rows and changed values only.
    IF (TG_OP = 'INSERT' OR {changed}) AND NOT ({_new(rule, columns)}) THEN
        RAISE EXCEPTION 'new row for relation "{table}" violates check constraint "{name}"'
              USING ERRCODE = 'check_violation', TABLE = '{table}', CONSTRAINT = '{name}';
    END IF;
    RETURN NULL;
END
$fn$"""
    drop = f"ALTER TABLE public.{table} DROP CONSTRAINT IF EXISTS {name};\n" if replacing else ""
    return [Ddl(function, "none on application tables"),
            Ddl(f"{drop}CREATE CONSTRAINT TRIGGER {name}\n"
                f"    AFTER INSERT OR UPDATE OF {', '.join(columns)} ON public.{table}\n"
                f"    FOR EACH ROW EXECUTE FUNCTION public.enforce_{name}()",
                f"{'ACCESS' if replacing else 'SHARE ROW'} EXCLUSIVE on {table} (catalog only, milliseconds)")]


def unguard_ddl(table: str, name: str, definition: str) -> list[Ddl]:
    """The guard back to a CHECK (NOT VALID: validated next, without blocking writes)."""
    return [Ddl(f"DROP TRIGGER IF EXISTS {name} ON public.{table};\n"
                f"ALTER TABLE public.{table} ADD CONSTRAINT {name} {definition} NOT VALID",
                f"ACCESS EXCLUSIVE on {table} (catalog only, milliseconds)"),
            drop_guard_function(name)]


class AddConstraint(Step):
    def __init__(self, table: str, constraint: str, definition: str, *, referenced: str | None = None,
                 guard: Guard | None = None, violations_sql: str | None = None) -> None:
        self.table, self.constraint, self.definition = table, constraint, definition
        self.referenced, self.guard, self.violations_sql = referenced, guard, violations_sql
        self.name = f"constraint_{constraint}"
        self.title = f"add {constraint} on {table} NOT VALID" + (
            " (a guard trigger of that name while legacy rows violate it)" if guard else "")

    def _locks(self) -> str:
        locks = f"SHARE ROW EXCLUSIVE on {self.table}"
        if self.referenced:
            locks += f" and {self.referenced}"
        return locks + " (catalog only, milliseconds)"

    def ddl(self, utf8: bool = True) -> list[Ddl]:
        return [Ddl(f"ALTER TABLE public.{self.table} ADD CONSTRAINT {self.constraint} {self.definition} NOT VALID",
                    self._locks())]

    def undo_ddl(self) -> list[Ddl]:
        out = []
        if self.guard:
            out.append(Ddl(f"DROP TRIGGER IF EXISTS {self.constraint} ON public.{self.table}",
                           f"SHARE ROW EXCLUSIVE on {self.table} (catalog only)"))
        out.append(Ddl(f"ALTER TABLE IF EXISTS public.{self.table} DROP CONSTRAINT IF EXISTS {self.constraint}",
                       f"ACCESS EXCLUSIVE on {self.table} (catalog only)"))
        if self.guard:
            out.append(drop_guard_function(self.constraint))
        return out

    def check(self, ctx: Context) -> bool:
        return constraint_form(ctx, self.table, self.constraint) is not None

    def apply(self, ctx: Context) -> dict[str, Any]:
        if self.check(ctx):
            return {"already": True}
        if self.guard:
            bad = count_violations(ctx, self.violations_sql)
            if bad:
                for d in guard_ddl(self.table, self.constraint, self.guard):
                    ctx.run(d, self.name)
                ctx.reporter.note(f"{self.constraint}: {bad} legacy rows violate it; enforced by a guard"
                                  " trigger of that name on new rows and changed values, so that the old"
                                  " application can still update those rows")
                return {"guard": True, "violating_rows": bad}
        return super().apply(ctx)


class ValidateConstraint(Step):
    """VALIDATE scans the table but blocks no reads or writes. When legacy rows violate a check
    (they are quarantined with the reason), it is left as a guard (see the module docstring) and
    the step reports how many rows keep it from validating."""

    phase = "validate"
    side_by_side = True

    def __init__(self, table: str, constraint: str, definition: str = "", violations_sql: str | None = None,
                 *, guard: Guard | None = None) -> None:
        self.table, self.constraint, self.definition = table, constraint, definition
        self.violations_sql, self.guard = violations_sql, guard
        self.name = f"validate_{constraint}"
        self.title = f"validate {constraint}"

    def ddl(self, utf8: bool = True) -> list[Ddl]:
        return [Ddl(f"ALTER TABLE public.{self.table} VALIDATE CONSTRAINT {self.constraint}",
                    f"SHARE UPDATE EXCLUSIVE on {self.table} (reads and writes go on)", gentle=True)]

    def check(self, ctx: Context) -> bool:
        form = constraint_form(ctx, self.table, self.constraint)
        return form is not None and form[1] and (form[0] != "t" or count_violations(ctx, self.violations_sql) > 0)

    def apply(self, ctx: Context) -> dict[str, Any]:
        form = constraint_form(ctx, self.table, self.constraint)
        if form is not None and form[0] != "t" and form[1]:
            return {"validated": True, "already": True}
        bad = count_violations(ctx, self.violations_sql)
        if bad:
            if self.guard and (form is None or form[0] != "t"):
                # A violating row arrived between the count and the CHECK (or the CHECK predates guards).
                for d in guard_ddl(self.table, self.constraint, self.guard, replacing=form is not None):
                    ctx.run(d, self.name)
            kept = "a guard on new rows and changed values" if self.guard else "NOT VALID, enforced for new writes"
            ctx.reporter.note(f"{self.constraint}: {bad} legacy rows violate it (quarantined); it stays {kept}")
            return {"validated": False, "violating_rows": bad, "guard": bool(self.guard)}
        if form is not None and form[0] == "t":
            for d in unguard_ddl(self.table, self.constraint, self.definition):
                ctx.run(d, self.name)
        elif self.guard:  # a run killed between the guard's removal and its function's
            ctx.run(drop_guard_function(self.constraint), self.name)
        super().apply(ctx)
        return {"validated": True}
