"""Runs DDL so that it never queues in front of application queries.

Every statement runs with a short `lock_timeout`; when the lock is not granted in time the
statement gives up (the application's queries behind it proceed) and is retried with exponential
backoff and full jitter. Statements whose locks do not conflict with reads and writes
(CREATE INDEX CONCURRENTLY, VALIDATE CONSTRAINT) get a longer timeout: queueing them blocks no
application query, and restarting them throws work away.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import psycopg
from psycopg import errors

from villager_shop.core.db import connect, own_session
from villager_shop.core.errors import RefusedError

T = TypeVar("T")

# A statement that gave way to another transaction's locks: the same statement, tried again later,
# usually succeeds.
LOCK_RETRYABLE = (errors.LockNotAvailable, errors.DeadlockDetected, errors.SerializationFailure)


class LockRetriesExhausted(RefusedError):
    """Gave up waiting rather than go on unsafely (queueing for good in front of the application)."""


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
    # How long a concurrent index build may wait, in all, for older transactions (and their
    # snapshots) to end: each failed wait throws the build away, so it must end somewhere.
    snapshot_wait_s: float = 300.0
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
            run_once(conn, ddl, slice_ms, stmt_ms)
            return attempt
        except LOCK_RETRYABLE as exc:
            waited_ms += slice_ms
            if isinstance(exc, errors.LockNotAvailable) and waited_ms < lock_ms:
                time.sleep(0.002)  # let the queue behind us through, then queue again
                continue
            if on_retry:
                on_retry(attempt, exc)
            if attempt == policy.max_attempts:
                raise LockRetriesExhausted(
                    f"gave up after {attempt} attempts to take the locks for: {first_line(ddl.sql)}"
                    f" ({ddl.locks}); {holders(conn) or 'a long transaction may be holding them'}"
                ) from exc
            time.sleep(policy.delay(attempt))
            attempt, waited_ms = attempt + 1, 0


def run_once(conn: psycopg.Connection[Any], ddl: Ddl, lock_ms: int, stmt_ms: int) -> None:
    """One attempt of `ddl` under these timeouts (0: none), whatever the database or role sets."""
    if ddl.concurrent:
        # Outside a transaction block, so session settings, reset right after (this is a
        # direct connection of our own: no other client ever sees them).
        conn.execute(f"SET lock_timeout = {int(lock_ms)}")
        conn.execute(f"SET statement_timeout = {int(stmt_ms)}")
        try:
            conn.execute(ddl.sql.encode())
        finally:
            if not conn.closed and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
                conn.execute("RESET lock_timeout")
                conn.execute("RESET statement_timeout")
    else:
        with conn.transaction():
            conn.execute("SELECT set_config('lock_timeout', %s, true), set_config('statement_timeout', %s, true),"
                         " set_config('idle_in_transaction_session_timeout', '0', true)",
                         (f"{int(lock_ms)}ms", f"{int(stmt_ms)}ms"))
            conn.execute(ddl.sql.encode())


# The snapshot budget is spread over this many builds, so that the operator hears who is in the
# way (at each retry) well before the run gives up; with the defaults, one build per minute.
SNAPSHOT_WAITS = 5


def build_concurrently(conn: psycopg.Connection[Any], build: Ddl, drop: Ddl, valid: Callable[[], bool | None],
                       policy: RetryPolicy, on_retry: Callable[[int, BaseException, str], None] | None = None) -> int:
    """Build an index CONCURRENTLY until it is valid; returns the number of builds.

    The build ends by waiting for every transaction whose snapshot is older than it, and a wait
    that times out leaves an INVALID index behind (which IF NOT EXISTS would then accept). So an
    INVALID index is dropped CONCURRENTLY before each build; the waits add up to at most
    `snapshot_wait_s` (in up to SNAPSHOT_WAITS builds, each retry naming who is in the way), and
    then the build gives up saying who."""
    budget_ms = max(1, int(policy.snapshot_wait_s * 1000))
    waited_ms, attempt = 0, 1
    while True:
        if valid() is False:
            execute(conn, drop, policy)
        since = conn.execute("SELECT clock_timestamp()").fetchone()[0]  # type: ignore[index]
        lock_ms = max(1, min(policy.gentle_lock_timeout_ms, -(-budget_ms // SNAPSHOT_WAITS), budget_ms - waited_ms))
        t0 = time.monotonic()
        try:
            run_once(conn, build, lock_ms, 0)
        except LOCK_RETRYABLE as exc:
            waited_ms += max(lock_ms if isinstance(exc, errors.LockNotAvailable) else 0,
                             int((time.monotonic() - t0) * 1000))
            who = "; ".join(w for w in (snapshot_holders(conn, since), holders(conn)) if w)
            if waited_ms >= budget_ms or attempt >= policy.max_attempts:
                if valid() is False:  # one short try: the next run drops it before building anyway
                    with contextlib.suppress(psycopg.Error, LockRetriesExhausted):
                        execute(conn, drop, replace(policy, max_attempts=1,
                                                    gentle_lock_timeout_ms=min(policy.gentle_lock_timeout_ms, 5000)))
                raise LockRetriesExhausted(
                    f"gave up on {first_line(build.sql)} after waiting {waited_ms / 1000:.0f} s for older"
                    f" transactions to end; {who or 'a long transaction may be in the way'}; end them (or let"
                    " them finish) and run again") from exc
            if on_retry:
                on_retry(attempt, exc, who)
            time.sleep(policy.delay(attempt))
            attempt += 1
            continue
        if valid() is True:
            return attempt
        attempt += 1  # a build that ended without a valid index (an IF NOT EXISTS that met an INVALID one)
        if attempt > policy.max_attempts:
            raise LockRetriesExhausted(f"{first_line(build.sql)} did not leave a valid index after"
                                       f" {policy.max_attempts} builds")


# Sessions of this database whose transaction (and snapshot) began before `since`: what a
# concurrent index build started then waits for before it may end. Autovacuum is never waited for.
SNAPSHOT_HOLDERS = """
SELECT a.pid, coalesce(nullif(a.application_name, ''), '?'), coalesce(a.state, '?'),
       round(extract(epoch FROM now() - a.xact_start))::bigint, a.query_start
  FROM pg_stat_activity a
 WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()
   AND a.xact_start < %s AND (a.backend_xmin IS NOT NULL OR a.backend_xid IS NOT NULL)
   AND a.backend_type NOT IN ('autovacuum worker', 'autovacuum launcher')
 ORDER BY a.xact_start
 LIMIT 3"""


def snapshot_holders(conn: psycopg.Connection[Any], since: Any) -> str:
    """The oldest transactions that began before `since` and still hold a snapshot or a
    transaction id; empty when none or not visible to this role."""
    try:
        rows = conn.execute(SNAPSHOT_HOLDERS, (since,)).fetchall()
    except psycopg.Error:
        return ""
    return "; ".join(f"pid {pid} ({app!r}, {state}, transaction open {age} s, last query started"
                     f" {started:%H:%M:%S}) holds an older snapshot" if started else
                     f"pid {pid} ({app!r}, {state}, transaction open {age} s) holds an older snapshot"
                     for pid, app, state, age, started in rows)


HOLDERS = """
SELECT a.pid, coalesce(a.state, '?'), round(extract(epoch FROM now() - a.xact_start))::bigint,
       string_agg(DISTINCT c.relname, ', ')
  FROM pg_locks l
  JOIN pg_stat_activity a ON a.pid = l.pid
  JOIN pg_class c ON c.oid = l.relation AND c.relnamespace = 'public'::regnamespace
 WHERE l.granted AND l.pid <> pg_backend_pid() AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
   AND a.xact_start < now() - interval '1 second'
 GROUP BY a.pid, a.state, a.xact_start
 ORDER BY a.xact_start
 LIMIT 3"""


def holders(conn: psycopg.Connection[Any]) -> str:
    """The oldest open transactions holding locks on the application's tables: the likely reason a
    DDL keeps waiting (the operator can end them, or wait). Empty when none or not visible."""
    try:
        rows = conn.execute(HOLDERS).fetchall()
    except psycopg.Error:
        return ""
    return "; ".join(f"pid {pid} ({state}, transaction open {age} s) holds locks on {rels}"
                     for pid, state, age, rels in rows)


def first_line(sql: str) -> str:
    for line in sql.splitlines():
        if line.strip() and not line.strip().startswith("--"):
            return line.strip()[:120]
    return sql[:120]


def side_by_side(url: str, items: list[T], workers: int, name: str,
                 run: Callable[[psycopg.Connection[Any], T], None], *,
                 key: Callable[[T], Hashable] | None = None,
                 setup: Callable[[psycopg.Connection[Any]], None] | None = None) -> None:
    """Run `items` on up to `workers` autocommit connections at once. Each connection takes the
    first pending item whose `key` no other connection is working on and no earlier pending item
    shares, so items with one key run one at a time, in order (no key: any order). The first
    failure stops new items from starting and is raised once the running ones end."""
    pending = [(key(item) if key else n, item) for n, item in enumerate(items)]
    busy: set[Hashable] = set()
    failures: list[BaseException] = []
    cond = threading.Condition()

    def take() -> tuple[Hashable, T] | None:
        while True:
            if failures or not pending:
                return None
            seen: set[Hashable] = set()
            for n, (k, _item) in enumerate(pending):
                if k not in busy and k not in seen:
                    busy.add(k)
                    return pending.pop(n)
                seen.add(k)
            cond.wait()

    def work(n: int) -> None:
        try:
            with connect(url, autocommit=True, application_name=f"{name} #{n}") as conn:
                own_session(conn)
                if setup:
                    setup(conn)
                while True:
                    with cond:
                        got = take()
                    if got is None:
                        return
                    try:
                        run(conn, got[1])
                    finally:
                        with cond:
                            busy.discard(got[0])
                            cond.notify_all()
        except BaseException as exc:
            with cond:
                failures.append(exc)
                cond.notify_all()

    threads = [threading.Thread(target=work, args=(n,), name=f"{name}-{n}")
               for n in range(max(1, min(workers, len(items))))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        raise failures[0]


def execute_all(url: str, ddls: list[Ddl], policy: RetryPolicy, workers: int, name: str = "villager-shop ddl") -> None:
    """Run independent statements on `workers` connections at once (index builds on different
    tables or on a table nobody else uses, ANALYZE of different tables). Each connection builds
    its indexes with one process: the builds already run side by side, and each also starting
    parallel workers put more processes than cores to work (4 indexes of order_items at scale 1,
    two at a time: 0.25 s this way, 0.36 s with the default 2 workers per build)."""

    def one_process(conn: psycopg.Connection[Any]) -> None:
        conn.execute("SET max_parallel_maintenance_workers = 0")

    def run(conn: psycopg.Connection[Any], ddl: Ddl) -> None:
        execute(conn, ddl, policy)

    side_by_side(url, ddls, workers, name, run, setup=one_process if min(workers, len(ddls)) > 1 else None)
