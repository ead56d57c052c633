"""Add a nullable column to a legacy table: a catalog-only change (no rewrite), but it needs
ACCESS EXCLUSIVE for an instant, so it runs under the short lock_timeout with retries."""

from __future__ import annotations

from villager_shop.migration.ddl import Ddl
from villager_shop.migration.steps.base import Context, Step, column_exists


class AddColumn(Step):
    def __init__(self, table: str, column: str, coltype: str) -> None:
        self.table, self.column, self.coltype = table, column, coltype
        self.name = f"column_{table}_{column}"
        self.title = f"add {table}.{column} {coltype} (nullable, no default: catalog only)"

    def ddl(self, utf8: bool = True) -> list[Ddl]:
        return [Ddl(f"ALTER TABLE public.{self.table} ADD COLUMN IF NOT EXISTS {self.column} {self.coltype}",
                    f"ACCESS EXCLUSIVE on {self.table} (catalog only, milliseconds)")]

    def undo_ddl(self) -> list[Ddl]:
        return [Ddl(f"ALTER TABLE public.{self.table} DROP COLUMN IF EXISTS {self.column}",
                    f"ACCESS EXCLUSIVE on {self.table} (catalog only, milliseconds)")]

    def check(self, ctx: Context) -> bool:
        return column_exists(ctx, self.table, self.column)
