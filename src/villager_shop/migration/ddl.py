"""Runs DDL so that it never queues in front of application queries.

Every statement runs with a short `lock_timeout`; when the lock is not granted in time the
statement gives up (the application's queries behind it proceed) and is retried with exponential
backoff and full jitter. Statements whose locks do not conflict with reads and writes
(CREATE INDEX CONCURRENTLY, VALIDATE CONSTRAINT) get a longer timeout: queueing them blocks no
application query, and restarting them throws work away.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import errors

from villager_shop.core.errors import VillagerError

RETRYABLE = (errors.LockNotAvailable, errors.DeadlockDetected, errors.SerializationFailure)


class LockRetriesExhausted(VillagerError):
    exit_code = 6


@dataclass(frozen=True)
class Ddl:
    """One statement with the locks it takes, as the plan shows them."""

    sql: str
    locks: str
    concurrent: bool = False  # must run outside a transaction block (CONCURRENTLY)
    gentle: bool = False  # its locks do not block application reads or writes


@dataclass
class RetryPolicy:
    lock_timeout_ms: int = 500
    gentle_lock_timeout_ms: int = 60_000
    statement_timeout_ms: int = 60_000
    max_attempts: int = 60
    base_delay_s: float = 0.05
    max_delay_s: float = 5.0

    def delay(self, attempt: int) -> float:
        return random.uniform(0, min(self.max_delay_s, self.base_delay_s * 2**attempt))


def execute(conn: psycopg.Connection[Any], ddl: Ddl, policy: RetryPolicy,
            on_retry: Callable[[int, BaseException], None] | None = None) -> int:
    """Run one DDL statement with timeouts and retries; returns the number of attempts."""
    assert conn.autocommit, "DDL runs on an autocommit connection (CONCURRENTLY needs it)"
    lock_ms = policy.gentle_lock_timeout_ms if ddl.gentle else policy.lock_timeout_ms
    stmt_ms = 0 if ddl.concurrent or ddl.gentle else policy.statement_timeout_ms
    for attempt in range(1, policy.max_attempts + 1):
        try:
            conn.execute(f"SET lock_timeout = {int(lock_ms)}")
            conn.execute(f"SET statement_timeout = {int(stmt_ms)}")
            if ddl.concurrent:
                conn.execute(ddl.sql.encode())
            else:
                with conn.transaction():
                    conn.execute(ddl.sql.encode())
            return attempt
        except RETRYABLE as exc:
            if on_retry:
                on_retry(attempt, exc)
            if attempt == policy.max_attempts:
                raise LockRetriesExhausted(
                    f"gave up after {attempt} attempts to take the locks for: {first_line(ddl.sql)}"
                    f" ({ddl.locks}); a long transaction may be holding them — see pg_stat_activity"
                ) from exc
            time.sleep(policy.delay(attempt))
        finally:
            if not conn.closed and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
                conn.execute("RESET lock_timeout")
                conn.execute("RESET statement_timeout")
    raise AssertionError("unreachable")


def first_line(sql: str) -> str:
    for line in sql.splitlines():
        if line.strip() and not line.strip().startswith("--"):
            return line.strip()[:120]
    return sql[:120]
