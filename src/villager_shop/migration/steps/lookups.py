"""Lookup rows (addresses, categories) for every value the legacy rows already use, created
before the sync triggers exist.

Why: once the triggers run, an old-application write to a row the backfill has not reached yet
migrates that row, creating its lookup row when missing. Two such transactions (say, two
multi-row price updates of different shops) creating the same two new categories in opposite
orders wait on each other's uncommitted insert into the unique index: a deadlock, and an error
for the old application that the migration caused (tests/migration/test_control.py met it). With
every value in use present beforehand, the triggers only look rows up; only a value the old
application writes for the first time is created on the way."""

from __future__ import annotations

from villager_shop.migration.context import Context
from villager_shop.migration.ddl import Ddl
from villager_shop.migration.sqlfiles import section
from villager_shop.migration.steps.base import Step


class SeedLookup(Step):
    phase = "expand"

    def __init__(self, table: str, sources: list[str], title: str) -> None:
        self.table, self.sources = table, sources
        self.name = f"seed_{table}"
        self.title = title

    def ddl(self, utf8: bool = True) -> list[Ddl]:
        # Reads the legacy tables (ACCESS SHARE: nothing waits for it) and writes a table only we use yet.
        return [Ddl(section("lookups.sql", self.name),
                    f"ACCESS SHARE on {', '.join(self.sources)} (one read; reads and writes go on)", gentle=True)]

    def check(self, ctx: Context) -> bool:
        # Idempotent, and only needed once: values written later are created by the triggers.
        return True
