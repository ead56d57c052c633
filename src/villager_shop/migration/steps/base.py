"""What every migration step is: like a pgroll operation, it knows how to apply itself
(idempotently, so re-running after a crash resumes it), check whether it is done, and undo itself.
The runner, not the step, owns timeouts, retries and state bookkeeping."""

from __future__ import annotations

from typing import Any

from villager_shop.migration.context import Context
from villager_shop.migration.ddl import Ddl


class Step:
    """A step of the plan. Subclasses set `name`, `title`, `phase` and implement the methods."""

    name: str = ""
    title: str = ""
    phase: str = "expand"
    reversible: bool = True
    # Side by side: a run of consecutive steps that set this may run at once, on `backfill_workers`
    # connections, one step per table (their `table`) at a time and in plan order per table. Only
    # steps whose locks let reads and writes go on, and that wait for no other transaction, set it
    # (validations; not a concurrent index build, which waits for every older transaction to end).
    side_by_side: bool = False
    # An optimisation whose absence makes nothing wrong (VACUUM, ANALYZE): done once it ran. Its
    # effect shows only in statistics views, which lag behind on PostgreSQL < 15, and it may be
    # skipped on purpose (a table autovacuum holds).
    advisory: bool = False

    def ddl(self, utf8: bool = True) -> list[Ddl]:
        """The statements `apply` runs, as `migrate plan --sql` shows them."""
        return []

    def undo_ddl(self) -> list[Ddl]:
        """The statements that reverse the step (rollback runs the non-concurrent ones of all
        steps in one short transaction, then the concurrent ones)."""
        return []

    def complete_ddl(self) -> list[Ddl]:
        """What contracting this step means (pgroll's Complete): `complete` runs every step's part,
        in plan order, in one short transaction, so the application meets either both
        representations or the new one alone. The sync triggers come before the backfills in the
        plan, so they go before the legacy columns whose values the backfills carried over."""
        return []

    def complete_last_ddl(self) -> list[Ddl]:
        """What the same transaction runs after every step's complete part, once the legacy columns
        are gone: an object of the step's that compared them is replaced by one that does not."""
        return []

    def contracts(self) -> list[tuple[str, str]]:
        """The legacy columns (table, column) whose values this step carries into the new structure:
        its complete part drops them, and `complete` refuses while an object of the operator's
        uses one of them (migration/dependents.py)."""
        return []

    def apply(self, ctx: Context) -> dict[str, Any]:
        attempts = 0
        for d in self.ddl(ctx.utf8):
            attempts += ctx.run(d, self.name)
        return {"statements": len(self.ddl(ctx.utf8)), "attempts": attempts}

    def check(self, ctx: Context) -> bool:
        """Whether the step's effect is present in the database now."""
        return False

    def locks(self) -> str:
        seen: list[str] = []
        for d in self.ddl():
            if d.locks not in seen:
                seen.append(d.locks)
        return "; ".join(seen) or "none on application tables"


def column_exists(ctx: Context, table: str, column: str) -> bool:
    return bool(ctx.scalar(
        "SELECT EXISTS (SELECT 1 FROM information_schema.columns"
        " WHERE table_schema = 'public' AND table_name = %s AND column_name = %s)", (table, column)))


def function_exists(ctx: Context, qualified: str) -> bool:
    return bool(ctx.scalar("SELECT to_regproc(%s) IS NOT NULL", (qualified,)))
