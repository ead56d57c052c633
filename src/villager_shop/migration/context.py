"""What a step is given to work with: the connection it runs on, the retry policy for its DDL, the
backfill's settings and throttle, and where it reports. Below the steps and the backfill engine, so
that both can take it without knowing about each other or about the plan that runs them."""

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
