"""Runs DDL so that it never queues in front of application queries.

Every statement runs with a short `lock_timeout`; when the lock is not granted in time the
statement gives up (the application's queries behind it proceed) and is retried with exponential
backoff and full jitter. Statements whose locks do not conflict with reads and writes
(CREATE INDEX CONCURRENTLY, VALIDATE CONSTRAINT) get a longer timeout: queueing them blocks no
application query, and restarting them throws work away.
"""

from __future__ import annotations

import random
import threading
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
    # A blocking DDL waits for its lock in slices: between slices it leaves the lock queue, so the
    # application queries queued behind it are held for one slice at most, not the whole lock_timeout.
    lock_slice_ms: int = 50
    gentle_lock_timeout_ms: int = 60_000
    statement_timeout_ms: int = 60_000
    max_attempts: int = 60
    base_delay_s: float = 0.05
    max_delay_s: float = 5.0

    def delay(self, attempt: int) -> float:
        return random.uniform(0, min(self.max_delay_s, self.base_delay_s * 2**attempt))


def execute(conn: psycopg.Connection[Any], ddl: Ddl, policy: RetryPolicy,
            on_retry: Callable[[int, BaseException], None] | None = None) -> int:
    """Run one DDL statement with timeouts and retries; returns the number of attempts.

    An attempt may wait `lock_timeout_ms` in all for a blocking lock, in slices of `lock_slice_ms`;
    then it gives up and the next attempt comes after an exponential backoff with jitter."""
    assert conn.autocommit, "DDL runs on an autocommit connection (CONCURRENTLY needs it)"
    lock_ms = policy.gentle_lock_timeout_ms if ddl.gentle else policy.lock_timeout_ms
    slice_ms = lock_ms if ddl.gentle else max(1, min(lock_ms, policy.lock_slice_ms))
    stmt_ms = 0 if ddl.concurrent or ddl.gentle else policy.statement_timeout_ms
    attempt, waited_ms = 1, 0
    while True:
        try:
            conn.execute(f"SET lock_timeout = {int(slice_ms)}")
            conn.execute(f"SET statement_timeout = {int(stmt_ms)}")
            if ddl.concurrent:
                conn.execute(ddl.sql.encode())
            else:
                with conn.transaction():
                    conn.execute(ddl.sql.encode())
            return attempt
        except RETRYABLE as exc:
            waited_ms += slice_ms
            if isinstance(exc, errors.LockNotAvailable) and waited_ms < lock_ms:
                time.sleep(0.002)  # let the queue behind us through, then queue again
                continue
            if on_retry:
                on_retry(attempt, exc)
            if attempt == policy.max_attempts:
                raise LockRetriesExhausted(
                    f"gave up after {attempt} attempts to take the locks for: {first_line(ddl.sql)}"
                    f" ({ddl.locks}); a long transaction may be holding them — see pg_stat_activity"
                ) from exc
            time.sleep(policy.delay(attempt))
            attempt, waited_ms = attempt + 1, 0
        finally:
            if not conn.closed and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
                conn.execute("RESET lock_timeout")
                conn.execute("RESET statement_timeout")


def first_line(sql: str) -> str:
    for line in sql.splitlines():
        if line.strip() and not line.strip().startswith("--"):
            return line.strip()[:120]
    return sql[:120]


def execute_all(url: str, ddls: list[Ddl], policy: RetryPolicy, workers: int, name: str = "villager-shop ddl") -> None:
    """Run independent statements on `workers` connections at once (index builds on different
    tables or on a table nobody else uses, ANALYZE of different tables): the first error stops
    the others from starting new statements and is raised. Each connection builds its indexes
    with one process: the builds already run side by side, and each also starting parallel
    workers put more processes than cores to work (4 indexes of order_items at scale 1, two at a
    time: 0.25 s this way, 0.36 s with the default 2 workers per build)."""
    from villager_shop.core.db import connect, stop_work_when_client_dies

    queue = list(ddls)
    lock = threading.Lock()
    failures: list[BaseException] = []

    threads_n = max(1, min(workers, len(ddls)))

    def work(k: int) -> None:
        try:
            with connect(url, autocommit=True, application_name=f"{name} #{k}") as conn:
                stop_work_when_client_dies(conn)
                if threads_n > 1:
                    conn.execute("SET max_parallel_maintenance_workers = 0")
                while True:
                    with lock:
                        if not queue or failures:
                            return
                        ddl = queue.pop(0)
                    execute(conn, ddl, policy)
        except BaseException as exc:
            with lock:
                failures.append(exc)

    threads = [threading.Thread(target=work, args=(k,), name=f"ddl-{k}") for k in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        raise failures[0]
