"""Read-only queries spread over a few connections that all see one snapshot: the caller's
transaction exports it (pg_export_snapshot), each extra connection imports it (SET TRANSACTION
SNAPSHOT) in a REPEATABLE READ READ ONLY transaction. Several statements then read the database as
of one instant, as one statement would, while the server's cores share the work. Everything each
connection sets is transaction-local, and its transaction ends with the job: safe through a pooler."""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import psycopg
from psycopg import sql

from villager_shop.core.db import OWN_TIMEOUTS, connect

T = TypeVar("T")
Job = Callable[[psycopg.Connection[Any]], T]


def _worker(conn: psycopg.Connection[Any], snapshot: str, work_mem: str) -> psycopg.Connection[Any] | None:
    """A second session of the same role and database on `snapshot`, or None when none can be had
    (connection limit, a pooler that refuses): the caller's session then does the work alone."""
    params = conn.info.get_parameters()
    if conn.info.password:
        params["password"] = conn.info.password
    try:
        other = connect(psycopg.conninfo.make_conninfo("", **params), autocommit=True)
    except Exception:  # any failure: work on the caller's connection alone
        return None
    try:
        other.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        other.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)))
        other.execute(OWN_TIMEOUTS, ("0ms", "0ms"))
        # Comparisons are hash joins of whole tables: in memory, not in batches spilled to disk.
        other.execute("SELECT set_config('work_mem', %s, true)", (work_mem,))
        return other
    except psycopg.Error:
        other.close()
        return None


def run_on_snapshot(conn: psycopg.Connection[Any], jobs: Sequence[Job[T]], *, workers: int = 2,
                    alongside: Callable[[], None] | None = None, work_mem: str = "64MB") -> list[T]:
    """Each job's result, in the order given. `conn` must be in a transaction of the caller's that has
    written nothing (its snapshot is what the others import). Jobs are taken largest first from one
    queue by `workers` extra connections; `alongside` runs meanwhile on `conn` itself. With no extra
    connection to be had, every job runs on `conn`, one after another."""
    snapshot = str(conn.execute("SELECT pg_export_snapshot()").fetchone()[0])  # type: ignore[index]
    sessions = [s for s in (_worker(conn, snapshot, work_mem) for _ in range(max(1, workers))) if s is not None]
    results: list[Any] = [None] * len(jobs)
    if not sessions:
        if alongside:
            alongside()
        return [job(conn) for job in jobs]
    todo: queue.Queue[int] = queue.Queue()
    for i in range(len(jobs)):
        todo.put(i)
    errors: list[BaseException] = []

    def work(session: psycopg.Connection[Any]) -> None:
        try:
            while not errors:
                try:
                    i = todo.get_nowait()
                except queue.Empty:
                    return
                results[i] = jobs[i](session)
        except BaseException as exc:  # handed to the caller's thread below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(s,), daemon=True) for s in sessions]
    try:
        for t in threads:
            t.start()
        if alongside:
            alongside()
    finally:
        for t in threads:
            t.join()
        for s in sessions:
            with contextlib.suppress(psycopg.Error):
                s.execute("ROLLBACK")
            s.close()
    if errors:
        raise errors[0]
    return results
