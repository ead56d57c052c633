"""What every migration step is: like a pgroll operation, it knows how to apply itself
(idempotently, so re-running after a crash resumes it), check whether it is done, and undo itself.
The runner, not the step, owns timeouts, retries and state bookkeeping."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import psycopg
from psycopg.errors import LockNotAvailable

from villager_shop.migration.ddl import Ddl, RetryPolicy, build_concurrently, execute, holders
from villager_shop.migration.throttle import Throttle


class Reporter(Protocol):
    def step_started(self, name: str, title: str) -> None: ...
    def step_finished(self, name: str, detail: dict[str, Any]) -> None: ...
    def progress(self, name: str, done: int, total: int | None, rate: float) -> None: ...
    def note(self, message: str) -> None: ...


class SilentReporter:
    def step_started(self, name: str, title: str) -> None:
        pass

    def step_finished(self, name: str, detail: dict[str, Any]) -> None:
        pass

    def progress(self, name: str, done: int, total: int | None, rate: float) -> None:
        pass

    def note(self, message: str) -> None:
        pass


@dataclass
class Context:
    url: str
    conn: psycopg.Connection[Any]  # autocommit; DDL and state
    policy: RetryPolicy
    utf8: bool = True
    batch_size: int = 2000
    batch_pause_ms: int = 0
    target_batch_ms: int = 50
    backfill_workers: int = 2
    backfill_order: str = "auto"  # physical | key | auto (the step's preference, else physical on 14+)
    reporter: Reporter = field(default_factory=SilentReporter)
    throttle: Throttle | None = None  # holds the backfill while production hurts or the operator paused it

    def run(self, ddl: Ddl, step: str = "") -> int:
        def on_retry(attempt: int, exc: BaseException) -> None:
            if attempt in (1, 5, 10) or attempt % 20 == 0:
                who = holders(self.conn) if attempt >= 5 else ""
                self.reporter.note(f"{step}: lock not granted within the timeout (attempt {attempt}), retrying"
                                   + (f"; {who}" if who else ""))

        return execute(self.conn, ddl, self.policy, on_retry)

    def build(self, ddl: Ddl, drop: Ddl, valid: Callable[[], bool | None], step: str = "") -> int:
        """A concurrent index build (see ddl.build_concurrently); every retry says who it waits for."""
        def on_retry(attempt: int, exc: BaseException, who: str) -> None:
            why = "timed out" if isinstance(exc, LockNotAvailable) else type(exc).__name__
            self.reporter.note(f"{step}: the build's wait for older transactions {why} (attempt {attempt});"
                               " dropping the unfinished index and building again; "
                               + (who or "no older transaction is visible to this role"))

        return build_concurrently(self.conn, ddl, drop, valid, self.policy, on_retry)

    def scalar(self, sql: str, params: Any = None) -> Any:
        row = self.conn.execute(sql, params).fetchone()
        return None if row is None else row[0]


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


def relation_exists(ctx: Context, name: str) -> bool:
    return bool(ctx.scalar("SELECT to_regclass(%s) IS NOT NULL", (name,)))


def column_exists(ctx: Context, table: str, column: str) -> bool:
    return bool(ctx.scalar(
        "SELECT EXISTS (SELECT 1 FROM information_schema.columns"
        " WHERE table_schema = 'public' AND table_name = %s AND column_name = %s)", (table, column)))


def function_exists(ctx: Context, qualified: str) -> bool:
    return bool(ctx.scalar("SELECT to_regproc(%s) IS NOT NULL", (qualified,)))
