"""Indexes built CONCURRENTLY. A build killed half-way (or one whose wait for older transactions
timed out) leaves an INVALID index that `IF NOT EXISTS` would silently accept: it is dropped
concurrently and built again, and only a valid index counts as done."""

from __future__ import annotations

from typing import Any

from villager_shop.migration.context import Context
from villager_shop.migration.ddl import Ddl
from villager_shop.migration.steps.base import Step


class CreateIndex(Step):
    phase = "index"

    def __init__(self, index: str, table: str, definition: str, *, unique: bool = False, why: str = "",
                 phase: str = "index") -> None:
        self.index, self.table, self.definition, self.unique = index, table, definition, unique
        self.name = f"index_{index}"
        self.title = f"build index {index} CONCURRENTLY" + (f" ({why})" if why else "")
        self.phase = phase

    def ddl(self, utf8: bool = True) -> list[Ddl]:
        unique = "UNIQUE " if self.unique else ""
        return [Ddl(f"CREATE {unique}INDEX CONCURRENTLY IF NOT EXISTS {self.index} ON public.{self.table} "
                    f"{self.definition}",
                    f"SHARE UPDATE EXCLUSIVE on {self.table} (reads and writes go on)", concurrent=True, gentle=True)]

    def undo_ddl(self) -> list[Ddl]:
        return [Ddl(f"DROP INDEX CONCURRENTLY IF EXISTS public.{self.index}",
                    f"SHARE UPDATE EXCLUSIVE on {self.table} (reads and writes go on)", concurrent=True, gentle=True)]

    def _valid(self, ctx: Context) -> bool | None:
        row = ctx.conn.execute(
            "SELECT i.indisvalid AND i.indisready FROM pg_index i WHERE i.indexrelid = to_regclass(%s)",
            (f"public.{self.index}",),
        ).fetchone()
        return None if row is None else bool(row[0])

    def check(self, ctx: Context) -> bool:
        return self._valid(ctx) is True

    def apply(self, ctx: Context) -> dict[str, Any]:
        found = self._valid(ctx)
        if found is True:
            return {"already": True}
        left = found is False
        if left:
            ctx.reporter.note(f"{self.index}: INVALID index left by an interrupted build; dropping and rebuilding")
        (build,), (drop,) = self.ddl(ctx.utf8), self.undo_ddl()
        builds = ctx.build(build, drop, lambda: self._valid(ctx), self.name)
        return {"rebuilt_invalid": left or builds > 1, "attempts": builds}
