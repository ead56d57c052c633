"""Constraints in two steps: added NOT VALID (enforced for new writes at once, no scan, a brief
lock), then validated later without blocking writes (SHARE UPDATE EXCLUSIVE)."""

from __future__ import annotations

from typing import Any

from villager_shop.migration.ddl import Ddl
from villager_shop.migration.steps.base import Context, Step, constraint_state


class AddConstraint(Step):
    def __init__(self, table: str, constraint: str, definition: str, *, referenced: str | None = None) -> None:
        self.table, self.constraint, self.definition = table, constraint, definition
        self.referenced = referenced
        self.name = f"constraint_{constraint}"
        self.title = f"add {constraint} on {table} NOT VALID"

    def _locks(self) -> str:
        locks = f"SHARE ROW EXCLUSIVE on {self.table}"
        if self.referenced:
            locks += f" and {self.referenced}"
        return locks + " (catalog only, milliseconds)"

    def ddl(self, utf8: bool = True) -> list[Ddl]:
        return [Ddl(f"ALTER TABLE public.{self.table} ADD CONSTRAINT {self.constraint} {self.definition} NOT VALID",
                    self._locks())]

    def undo_ddl(self) -> list[Ddl]:
        return [Ddl(f"ALTER TABLE IF EXISTS public.{self.table} DROP CONSTRAINT IF EXISTS {self.constraint}",
                    f"ACCESS EXCLUSIVE on {self.table} (catalog only)")]

    def check(self, ctx: Context) -> bool:
        return constraint_state(ctx, self.table, self.constraint) is not None

    def apply(self, ctx: Context) -> dict[str, Any]:
        if self.check(ctx):
            return {"already": True}
        return super().apply(ctx)


class ValidateConstraint(Step):
    """VALIDATE scans the table but blocks no reads or writes. When legacy rows violate a check
    (they are quarantined with the reason), the constraint stays NOT VALID — still enforced for
    every new write — and the step reports how many rows keep it from validating."""

    phase = "validate"
    side_by_side = True

    def __init__(self, table: str, constraint: str, violations_sql: str | None = None) -> None:
        self.table, self.constraint, self.violations_sql = table, constraint, violations_sql
        self.name = f"validate_{constraint}"
        self.title = f"validate {constraint}"

    def ddl(self, utf8: bool = True) -> list[Ddl]:
        return [Ddl(f"ALTER TABLE public.{self.table} VALIDATE CONSTRAINT {self.constraint}",
                    f"SHARE UPDATE EXCLUSIVE on {self.table} (reads and writes go on)", gentle=True)]

    def check(self, ctx: Context) -> bool:
        return constraint_state(ctx, self.table, self.constraint) is True

    def apply(self, ctx: Context) -> dict[str, Any]:
        if self.check(ctx):
            return {"validated": True, "already": True}
        if self.violations_sql:
            bad = int(ctx.scalar(self.violations_sql) or 0)
            if bad:
                ctx.reporter.note(f"{self.constraint}: {bad} legacy rows violate it (quarantined); it stays"
                                  " NOT VALID and is enforced for new writes")
                return {"validated": False, "violating_rows": bad}
        super().apply(ctx)
        return {"validated": True}
