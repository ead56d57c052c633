"""Walk a table by primary key in small transactions (SPEC defect 1).

Each batch: pick the next N ids after the cursor, lock them FOR NO KEY UPDATE SKIP LOCKED (we
never wait behind an application's row lock, so we cannot deadlock with it), run the step's
set-based actions on exactly the locked rows, and move the cursor - all in one transaction, so a
kill -9 at any point resumes at the last committed batch. Rows skipped because the application
held them are remembered and retried at the end (by then the sync trigger has usually done them).
The batch size adapts: it shrinks when a batch is slower than the target (locks are held for one
batch only) and grows back when there is room.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import errors

from villager_shop.core.db import connect, stop_work_when_client_dies
from villager_shop.migration.steps.base import Context

RETRYABLE = (errors.LockNotAvailable, errors.DeadlockDetected, errors.SerializationFailure,
             errors.QueryCanceled)
MIN_BATCH = 50


@dataclass
class BackfillResult:
    rows: int
    batches: int
    seconds: float
    retried_rows: int
    max_batch_ms: float

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


def _init_progress(conn: psycopg.Connection[Any], step: str, table: str, key_range: tuple[str, str]
                   ) -> tuple[str | None, int, int]:
    with conn.transaction():
        row = conn.execute(
            "SELECT last_id::text, rows_done, batch_size FROM villager_migration.backfill WHERE step = %s",
            (step,)).fetchone()
        if row is None:
            total = conn.execute(f"SELECT count(*) FROM public.{table} WHERE id BETWEEN %s AND %s",
                                 key_range).fetchone()
            conn.execute(
                "INSERT INTO villager_migration.backfill (step, table_name, rows_total, started_at, updated_at)"
                " VALUES (%s, %s, %s, now(), now())", (step, table, total[0] if total else 0))
            return None, 0, 0
    return row[0], int(row[1]), int(row[2] or 0)


def key_ranges(parts: int) -> list[tuple[str, str]]:
    """Split the uuid key space into `parts` contiguous ranges (random v4 keys spread evenly)."""
    top = 1 << 128
    bounds = [top * k // parts for k in range(parts + 1)]
    return [(str(uuid.UUID(int=bounds[k])), str(uuid.UUID(int=bounds[k + 1] - 1))) for k in range(parts)]


def part_names(conn: psycopg.Connection[Any], step: str, workers: int) -> int:
    """Keep the number of parts a started backfill was split into, whatever the setting says now."""
    row = conn.execute("SELECT count(*) FROM villager_migration.backfill WHERE step LIKE %s", (f"{step}#%",)).fetchone()
    conn.commit()
    return int(row[0]) if row and row[0] else workers


def run_backfill(ctx: Context, step: str, table: str, actions: list[str], busy: list[str] | None = None,
                 only: str | None = None) -> BackfillResult:
    """Backfill `table` with `ctx.backfill_workers` connections, each walking its own key range."""
    probe = connect(ctx.url, application_name=f"villager-shop backfill {table}")
    try:
        parts = part_names(probe, step, max(1, ctx.backfill_workers))
    finally:
        probe.close()
    ranges = key_ranges(parts)
    results: list[BackfillResult | BaseException] = [BaseException("not run")] * parts
    progress = [(0, 0)] * parts
    lock = threading.Lock()
    started = time.perf_counter()

    def report(k: int, done: int, total: int, new_rows: int) -> None:
        with lock:
            progress[k] = (done, total)
            moved[0] += new_rows
            spent = time.perf_counter() - started
            ctx.reporter.progress(step, sum(p[0] for p in progress), sum(p[1] for p in progress),
                                  moved[0] / spent if spent > 0 else 0.0)

    moved = [0]

    def work(k: int) -> None:
        conn = connect(ctx.url, application_name=f"villager-shop backfill {table} #{k}")
        try:
            stop_work_when_client_dies(conn)
            results[k] = _run(ctx, conn, f"{step}#{k}", table, actions, busy or [], ranges[k],
                              lambda done, total, n: report(k, done, total, n), only)
        except BaseException as exc:
            results[k] = exc
        finally:
            conn.close()

    threads = [threading.Thread(target=work, args=(k,), name=f"backfill-{table}-{k}") for k in range(parts)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in results:
        if not isinstance(r, BackfillResult):
            raise r
    done = [r for r in results if isinstance(r, BackfillResult)]
    return BackfillResult(sum(r.rows for r in done), sum(r.batches for r in done), max(r.seconds for r in done),
                          sum(r.retried_rows for r in done), max(r.max_batch_ms for r in done))


def _run(ctx: Context, conn: psycopg.Connection[Any], step: str, table: str, actions: list[str],
         busy: list[str], key_range: tuple[str, str], report: Callable[[int, int, int], None],
         only: str | None = None) -> BackfillResult:
    lo, hi = key_range
    last_id, done, saved_size = _init_progress(conn, step, table, key_range)
    max_size = max(MIN_BATCH, ctx.batch_size)
    # Start small: the first batches of a table also warm caches and plans.
    size = min(max_size, saved_size or min(max_size, 500))
    target_s = ctx.target_batch_ms / 1000
    started = time.perf_counter()
    rows = batches = 0
    max_batch = 0.0
    failures = 0
    total = _total(conn, step)
    pick = (f"WITH r AS (SELECT id FROM public.{table} WHERE id {{op}} %(last)s::uuid AND id <= %(hi)s::uuid"
            f" ORDER BY id LIMIT %(n)s)"
            " SELECT (SELECT id FROM r ORDER BY id DESC LIMIT 1)::text, (SELECT count(*) FROM r)")
    # `only`: a predicate over the row; when given, only the rows matching it need the actions, so
    # only they are locked (a scan that quarantines a few rows writes nothing to the others).
    where_only = f" AND ({only})" if only else ""
    lock = (f"SELECT coalesce(array_agg(id), ARRAY[]::uuid[]) FROM (SELECT id FROM public.{table} t"
            f" WHERE id {{op}} %(last)s::uuid AND id <= %(upper)s::uuid{where_only} FOR NO KEY UPDATE SKIP LOCKED) l")
    remember = (f"INSERT INTO villager_migration.backfill_retry (step, row_id)"
                f" SELECT %(step)s, id FROM public.{table} t WHERE id {{op}} %(last)s::uuid AND id <= %(upper)s::uuid"
                f" AND id <> ALL(%(ids)s){where_only} ON CONFLICT DO NOTHING")
    while True:
        op = ">" if last_id is not None else ">="
        t0 = time.perf_counter()
        try:
            with conn.transaction():
                _batch_settings(conn, ctx)
                upper, n = conn.execute(pick.format(op=op), {"last": last_id or lo, "n": size, "hi": hi}
                                        ).fetchone() or (None, 0)
                if not n:
                    break
                params = {"last": last_id or lo, "upper": upper, "step": step}
                ids = conn.execute(lock.format(op=op), params).fetchone()[0]  # type: ignore[index]
                if ids and busy:
                    ids = _without_busy(conn, busy, ids)
                if len(ids) < n or only:
                    conn.execute(remember.format(op=op), {**params, "ids": ids})
                if ids:
                    _apply(conn, actions, ids)
                elapsed = time.perf_counter() - t0
                conn.execute(
                    "UPDATE villager_migration.backfill SET last_id = %s, rows_done = rows_done + %s,"
                    " batches = batches + 1, batch_size = %s, elapsed_s = elapsed_s + %s,"
                    " max_batch_ms = greatest(max_batch_ms, %s), updated_at = now() WHERE step = %s",
                    (upper, n, size, elapsed, elapsed * 1000, step))
        except RETRYABLE as exc:
            failures += 1
            size = max(MIN_BATCH, size // 2)
            ctx.reporter.note(f"{step}: batch gave way to the application ({type(exc).__name__}); "
                              f"batch size now {size}")
            if failures > 200:
                raise
            time.sleep(min(2.0, 0.02 * 2 ** min(failures, 6)))
            continue
        dt = time.perf_counter() - t0
        failures = 0
        last_id = upper
        rows += n
        done += n
        batches += 1
        max_batch = max(max_batch, dt * 1000)
        if dt > target_s * 1.2 and size > MIN_BATCH:
            size = max(MIN_BATCH, int(size * max(0.3, target_s / dt)))
        elif dt < target_s * 0.6 and size < max_size:
            size = min(max_size, int(size * 1.5) + 1)
        report(done, max(total, done), n)
        if ctx.batch_pause_ms:
            time.sleep(ctx.batch_pause_ms / 1000)
    retried = _retry_skipped(ctx, conn, step, table, actions)
    seconds = time.perf_counter() - started
    with conn.transaction():
        conn.execute("UPDATE villager_migration.backfill SET finished_at = now(), updated_at = now(),"
                     " rows_total = greatest(rows_total, rows_done) WHERE step = %s", (step,))
    return BackfillResult(rows, batches, seconds, retried, max_batch)


def _without_busy(conn: psycopg.Connection[Any], busy: list[str], ids: list[Any]) -> list[Any]:
    params = {"ids": ids, "lo": min(ids), "hi": max(ids)}
    skip: set[Any] = set()
    for sql in busy:
        row = conn.execute(sql, params).fetchone()
        skip.update(row[0] if row else [])
    return [i for i in ids if i not in skip] if skip else ids


def _apply(conn: psycopg.Connection[Any], actions: list[str], ids: list[Any]) -> None:
    params = {"ids": ids, "lo": min(ids), "hi": max(ids)}
    for action in actions:
        conn.execute(action, params)


def _total(conn: psycopg.Connection[Any], step: str) -> int:
    row = conn.execute("SELECT coalesce(rows_total, 0) FROM villager_migration.backfill WHERE step = %s",
                       (step,)).fetchone()
    conn.commit()
    return int(row[0]) if row else 0


def _batch_settings(conn: psycopg.Connection[Any], ctx: Context) -> None:
    conn.execute("SET LOCAL villager.backfill = 'on'")
    # A crash may lose the last few batches' commits - and their cursor moves with them, so the
    # resumed run redoes exactly those batches: no durability is needed per batch.
    conn.execute("SET LOCAL synchronous_commit = off")
    # Row-level waits of a batch are bounded by the batch target, not the DDL lock_timeout: an
    # application write queued behind us must never wait longer than a batch.
    conn.execute(f"SET LOCAL lock_timeout = {int(min(ctx.policy.lock_timeout_ms, max(10, ctx.target_batch_ms)))}")
    conn.execute("SET LOCAL statement_timeout = '60s'")


def _retry_skipped(ctx: Context, conn: psycopg.Connection[Any], step: str, table: str, actions: list[str]) -> int:
    """Rows that were locked by the application when their batch ran: take them now, waiting for
    their lock at most lock_timeout each time."""
    retried = 0
    for attempt in range(1, 1000):
        try:
            with conn.transaction():
                _batch_settings(conn, ctx)
                ids = conn.execute(
                    f"SELECT coalesce(array_agg(id), ARRAY[]::uuid[]) FROM (SELECT t.id FROM public.{table} t"
                    " JOIN villager_migration.backfill_retry r ON r.row_id = t.id AND r.step = %s"
                    " ORDER BY t.id LIMIT 500 FOR NO KEY UPDATE OF t) l", (step,)).fetchone()[0]  # type: ignore[index]
                if ids:
                    _apply(conn, actions, ids)
                conn.execute("DELETE FROM villager_migration.backfill_retry WHERE step = %s AND"
                             " (row_id = ANY(%s) OR NOT EXISTS (SELECT 1 FROM public." + table +
                             " t WHERE t.id = row_id))", (step, ids))
                retried += len(ids)
                if not ids:
                    return retried
        except RETRYABLE:
            time.sleep(min(2.0, 0.05 * attempt))
    return retried
