"""Walk a table in small transactions (SPEC defect 1).

Each batch: take the next slice of the table, lock its rows FOR NO KEY UPDATE SKIP LOCKED (we
never wait behind an application's row lock, so we cannot deadlock with it), run the step's
set-based actions on exactly the locked rows, and move the cursor - all in one transaction, so a
kill -9 at any point resumes at the last committed batch. Rows skipped because the application
held them are remembered and retried at the end (by then the sync trigger has usually done them).
The batch size adapts: it shrinks when a batch is slower than the target (locks are held for one
batch only) and grows back when there is room.

Two walks. The physical walk (PostgreSQL 14+, TID range scans) takes the heap pages in order:
each batch reads and writes a few neighbouring pages, so its speed does not fall when the table
outgrows the cache (a walk by random UUID key touches one page per row). It covers the pages the
table had when the step started: every older row version lies there, and every row written since
went through the sync triggers. A row our own update moved further into the walked range is met
again; the actions are no-ops on migrated rows, so that costs a read. A table rewritten meanwhile
(VACUUM FULL, CLUSTER: new relation file, tuples moved) restarts the step's walk from its first
page, which the same no-op property makes safe. The key walk (PostgreSQL 13, or
VILLAGER_BACKFILL_ORDER=key) takes primary-key ranges.

The key is any single-column primary key (`keys.Key`: the villager tables' `id uuid` unless told
otherwise): the batch marker binds to its column and type, a part's cursor (`backfill.last_key`) and
the rows to retry (`backfill_retry.row_id`) hold it as text, cast back with its type.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import errors

from villager_shop.core.db import connect, own_session
from villager_shop.core.errors import RefusedError, VillagerError
from villager_shop.migration.context import Context
from villager_shop.migration.ddl import LOCK_RETRYABLE
from villager_shop.migration.keys import VILLAGER_KEY, Key, KeyRange, key_bounds, key_ranges, uuid_ranges

# A batch also retries a cancelled statement (its own 60 s statement_timeout, or pg_cancel_backend):
# the batch committed nothing and is tried again (the walks halve it first). A DDL statement is not
# retried on a cancel: the same statement would hold its locks as long again.
BATCH_RETRYABLE = (*LOCK_RETRYABLE, errors.QueryCanceled)
MIN_BATCH = 50
MAX_PAGES = 4096
BATCH_MARK = re.compile(r"/\*BATCH (\w+)\*/")


class TableRewritten(Exception):
    """The table got a new relation file while the physical walk ran (tuple ids changed)."""


class _Stopped(Exception):
    """Ends a part's walk between two batches when the run is interrupted."""


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


def locked_rows(key: Key) -> str:
    """What a batch locked, from a CTE `l` (key, ctid): as array literals, plus their count and key
    range. The range is the key's own order (in the column's collation); uuid has no min() and its
    text orders as it does."""
    c = key.ident
    if key.is_uuid:
        lo, hi = f"(SELECT min({c}::text) FROM l)", f"(SELECT max({c}::text) FROM l)"
    else:
        lo, hi = (f"(SELECT {c} FROM l ORDER BY {c} LIMIT 1)::text",
                  f"(SELECT {c} FROM l ORDER BY {c} DESC LIMIT 1)::text")
    return (f"(SELECT count(*) FROM l), (SELECT coalesce(array_agg({c})::text, '{{}}') FROM l),"
            f" (SELECT coalesce(array_agg(ctid)::text, '{{}}') FROM l), {lo}, {hi}")



@dataclass(frozen=True)
class _Locked:
    """The rows a batch holds: `ids` and `tids` are PostgreSQL array literals (key type[], tid[])."""

    count: int
    ids: str
    tids: str
    lo: str | None
    hi: str | None

    def params(self) -> dict[str, Any]:
        return {"ids": self.ids, "tids": self.tids, "lo": self.lo, "hi": self.hi}


def bind(sql: str, walk: str, key: Key = VILLAGER_KEY) -> str:
    """An action with its batch marker bound to the walk's parameters: %(tids)s within the page
    range %(plo)s..%(phi)s (physical: the range makes it a TID range scan of a few pages) or
    %(ids)s within %(lo)s..%(hi)s (key: the range lets the planner use the primary key; a bare
    `id = ANY(...)` of thousands of ids can plan a sequential scan), cast with the key's type."""
    if walk == "physical":
        return BATCH_MARK.sub(r"\1.ctid >= %(plo)s::tid AND \1.ctid < %(phi)s::tid AND \1.ctid = ANY(%(tids)s::tid[])",
                              sql)
    if walk == "pages":  # every row of the page range (a walk that locks nothing)
        return BATCH_MARK.sub(r"\1.ctid >= %(plo)s::tid AND \1.ctid < %(phi)s::tid", sql)
    c, t = key.ident, key.sqltype
    return BATCH_MARK.sub(lambda m: f"{m[1]}.{c} BETWEEN %(lo)s::{t} AND %(hi)s::{t} AND {m[1]}.{c} = ANY(%(ids)s::{t}[])",
                          sql)


def choose_walk(conn: psycopg.Connection[Any], step: str, wanted: str, prefer: str | None = None) -> str:
    """The walk a started backfill uses (kept across resumes), else the configured one; `auto` takes
    the step's preference (`prefer`), else the physical walk where the server has TID range scans."""
    row = conn.execute("SELECT min(walk) FROM villager_migration.backfill WHERE step LIKE %s",
                       (f"{step}#%",)).fetchone()
    conn.commit()
    if row and row[0]:
        return str(row[0])
    if wanted == "auto":
        if prefer:
            return prefer
        return "physical" if conn.info.server_version >= 140000 else "key"
    if wanted == "physical" and conn.info.server_version < 140000:
        raise VillagerError("VILLAGER_BACKFILL_ORDER=physical needs PostgreSQL 14 or later (TID range scans); "
                            "use key or auto")
    return wanted


def _init_progress(conn: psycopg.Connection[Any], step: str, table: str, key_range: KeyRange, key: Key
                   ) -> tuple[str | None, int, int]:
    """The part's cursor (the last key done; a row of an older version has it in `last_id`), rows
    done and saved batch size; the part's rows counted on its first run."""
    with conn.transaction():
        _unbounded(conn)
        row = conn.execute(
            "SELECT coalesce(last_key, last_id::text), rows_done, batch_size, rows_total IS NULL"
            " FROM villager_migration.backfill WHERE step = %s", (step,)).fetchone()
        if row is None or row[3]:
            lower = None if key_range.lo is None else ">=" if key_range.lo_inclusive else ">"
            where = key_bounds(key, lower, key_range.hi is not None)
            total = conn.execute(f"SELECT count(*) FROM public.{table} WHERE {where}",
                                 {"lo": key_range.lo, "hi": key_range.hi}).fetchone()
            if row is None:
                conn.execute(
                    "INSERT INTO villager_migration.backfill (step, table_name, rows_total, started_at, updated_at)"
                    " VALUES (%s, %s, %s, now(), now())", (step, table, total[0] if total else 0))
                return None, 0, 0
            conn.execute("UPDATE villager_migration.backfill SET rows_total = %s WHERE step = %s",
                         (total[0] if total else 0, step))
    return row[0], int(row[1]), int(row[2] or 0)


def _plan_keys(conn: psycopg.Connection[Any], step: str, table: str, key: Key, parts: int) -> list[KeyRange]:
    """The key ranges of the parts. uuid: the key space split evenly, the same every time, so
    nothing is recorded (each part records itself when it starts). Any other key is split at the
    table's keys as they are now: the split is recorded, every part in one transaction, and a
    resumed run takes it as it is (the table's keys have moved since)."""
    if key.is_uuid:
        return uuid_ranges(parts)
    with conn.transaction():
        rows = conn.execute("SELECT step, key_lo, key_hi FROM villager_migration.backfill WHERE step LIKE %s",
                            (f"{step}#%",)).fetchall()
        if rows:
            return [KeyRange(r[1], r[2]) for r in sorted(rows, key=lambda r: int(str(r[0]).rsplit("#", 1)[1]))]
        _unbounded(conn)
        ranges = key_ranges(conn, table, key, parts)
        for k, r in enumerate(ranges):
            conn.execute(
                "INSERT INTO villager_migration.backfill (step, table_name, walk, key_lo, key_hi, started_at, updated_at)"
                " VALUES (%s, %s, 'key', %s, %s, now(), now())", (f"{step}#{k}", table, r.lo, r.hi))
    return ranges


def part_names(conn: psycopg.Connection[Any], step: str, workers: int) -> int:
    """Keep the number of parts a started backfill was split into, whatever the setting says now."""
    row = conn.execute("SELECT count(*) FROM villager_migration.backfill WHERE step LIKE %s", (f"{step}#%",)).fetchone()
    conn.commit()
    return int(row[0]) if row and row[0] else workers


# A `%` that is not one of the walk's own named parameters (`%(ids)s`): it is SQL's (`x % 2`,
# `LIKE 'a%'` in a plan's condition), and psycopg would take it for a placeholder.
_LONE_PERCENT = re.compile(r"%(?!\(\w+\)s)")


def literal_percents(sql: str) -> str:
    """`sql`, to be run with the walk's parameters: every `%` but theirs doubled."""
    return _LONE_PERCENT.sub("%%", sql)


def run_backfill(ctx: Context, step: str, table: str, actions: list[str], busy: list[str] | None = None,
                 only: str | None = None, *, locking: bool = True, on_rewrite: str | None = None,
                 prefer: str | None = None, key: Key = VILLAGER_KEY) -> BackfillResult:
    """Backfill `table` with `ctx.backfill_workers` connections, each walking its own part.
    `key`: the table's single-column primary key (keys.primary_key reads it from the catalog).
    `locking=False` is for actions that only read the table (a copy whose changes are logged
    meanwhile): no row locks, nothing skipped, and batches bounded by time rather than rows.
    `on_rewrite`: SQL that undoes what the walk did so far, run in the transaction that restarts a
    walk over a rewritten table (needed when the actions are not no-ops on a second visit).
    The actions and `only` may carry a plan's conditions: their `%` are SQL's, not parameters."""
    actions, busy = [literal_percents(a) for a in actions], [literal_percents(b) for b in busy or []]
    only = literal_percents(only) if only else only
    for attempt in range(1, 4):
        try:
            return _run_parts(ctx, step, table, actions, busy or [], only, locking, prefer, key)
        except TableRewritten:
            ctx.reporter.note(f"{step}: {table} was rewritten (VACUUM FULL or CLUSTER?) while the backfill ran;"
                              f" walking it again from the start (attempt {attempt + 1})")
            with connect(ctx.url) as conn:
                if on_rewrite:
                    conn.execute(on_rewrite.encode())
                conn.execute("DELETE FROM villager_migration.backfill WHERE step LIKE %s", (f"{step}#%",))
    return _run_parts(ctx, step, table, actions, busy or [], only, locking, key=key)


def _plan_pages(conn: psycopg.Connection[Any], step: str, table: str, parts: int) -> None:
    """Split the pages the table has now into `parts` ranges, all recorded in one transaction (a
    crash between two parts' records would otherwise let a resumed run split a grown table
    differently and leave a gap)."""
    with conn.transaction():
        if conn.execute("SELECT 1 FROM villager_migration.backfill WHERE step LIKE %s LIMIT 1",
                        (f"{step}#%",)).fetchone():
            return
        pages, filenode, xid_from = conn.execute(
            "SELECT pg_relation_size(c.oid) / current_setting('block_size')::bigint, pg_relation_filenode(c.oid),"
            " pg_snapshot_xmax(pg_current_snapshot())::text::bigint"
            " FROM pg_class c WHERE c.oid = %s::regclass", (f"public.{table}",)).fetchone() or (0, 0, 0)
        for k in range(parts):
            first, last = pages * k // parts, pages * (k + 1) // parts
            conn.execute(
                "INSERT INTO villager_migration.backfill (step, table_name, walk, page_from, page_to, next_page,"
                " filenode, xid_from, started_at, updated_at)"
                " VALUES (%s, %s, 'physical', %s, %s, %s, %s, %s, now(), now())",
                (f"{step}#{k}", table, first, last, first, filenode, xid_from))


def _run_parts(ctx: Context, step: str, table: str, actions: list[str], busy: list[str],
               only: str | None, locking: bool = True, prefer: str | None = None,
               key: Key = VILLAGER_KEY) -> BackfillResult:
    probe = connect(ctx.url, application_name=f"villager-shop backfill {table}")
    try:
        parts = part_names(probe, step, max(1, ctx.backfill_workers))
        walk = choose_walk(probe, step, ctx.backfill_order, prefer)
        ranges: list[KeyRange] = []
        if walk == "physical":
            _plan_pages(probe, step, table, parts)
        else:
            ranges = _plan_keys(probe, step, table, key, parts)
            parts = len(ranges)
    finally:
        probe.close()
    results: list[BackfillResult | BaseException] = [BaseException("not run")] * parts
    progress = [(0, 0)] * parts
    lock = threading.Lock()
    started = time.perf_counter()

    def report(k: int, done: int, total: int, new_rows: int) -> None:
        if stopping.is_set():  # the batch just reported is committed: the part stops after it
            raise _Stopped(step)
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
            own_session(conn)
            begin = walk_settings(conn, ctx)
            on_batch = lambda done, total, n: report(k, done, total, n)  # noqa: E731
            if walk == "physical":
                results[k] = _walk_pages(ctx, conn, begin, f"{step}#{k}", table, actions, busy, on_batch, only,
                                         locking, key)
            else:
                results[k] = _walk_keys(ctx, conn, begin, f"{step}#{k}", table, actions, busy, ranges[k], on_batch,
                                        only, locking, key)
        except BaseException as exc:
            results[k] = exc
        finally:
            conn.close()

    threads = [threading.Thread(target=work, args=(k,), name=f"backfill-{table}-{k}") for k in range(parts)]
    stopping = threading.Event()
    for t in threads:
        t.start()
    try:
        for t in threads:
            t.join()
    except BaseException:
        # Ctrl-C reaches this thread only: each part ends after its current batch, so the step
        # stops within a batch's time instead of walking on to the end of its range.
        stopping.set()
        if ctx.throttle:
            ctx.throttle.interrupt()
        for t in threads:
            t.join()
        raise
    for r in results:
        if isinstance(r, TableRewritten):
            raise r
    for r in results:
        if not isinstance(r, BackfillResult):
            raise r
    done = [r for r in results if isinstance(r, BackfillResult)]
    return BackfillResult(sum(r.rows for r in done), sum(r.batches for r in done), max(r.seconds for r in done),
                          sum(r.retried_rows for r in done), max(r.max_batch_ms for r in done))


class _Pace:
    """The adaptive batch size: shrink when a batch is slower than the target, grow when there is room."""

    def __init__(self, ctx: Context, size: int, smallest: int, largest: int) -> None:
        self.ctx = ctx
        self.smallest, self.largest = smallest, max(smallest, largest)
        self.size = max(self.smallest, min(self.largest, size))
        self.failures = 0

    @property
    def target_s(self) -> float:
        """The batch time target: the configured one, or what `migrate throttle --batch-ms` set since."""
        ms = self.ctx.throttle.batch_target_ms(self.ctx.target_batch_ms) if self.ctx.throttle else self.ctx.target_batch_ms
        return ms / 1000

    def after(self, seconds: float) -> None:
        self.failures = 0
        if seconds > self.target_s * 1.2 and self.size > self.smallest:
            self.size = max(self.smallest, int(self.size * max(0.3, self.target_s / seconds)))
        elif seconds < self.target_s * 0.6 and self.size < self.largest:
            self.size = min(self.largest, int(self.size * 1.5) + 1)

    def gave_way(self, ctx: Context, step: str, exc: BaseException) -> None:
        self.failures += 1
        self.size = max(self.smallest, self.size // 2)
        ctx.reporter.note(f"{step}: batch gave way to the application ({type(exc).__name__}); "
                          f"batch size now {self.size}")
        if self.failures > 200:
            raise exc
        time.sleep(min(2.0, 0.02 * 2 ** min(self.failures, 6)))


def _walk_pages(ctx: Context, conn: psycopg.Connection[Any], begin: bytes, step: str, table: str, actions: list[str],
                busy: list[str], report: Callable[[int, int, int], None], only: str | None,
                locking: bool = True, key: Key = VILLAGER_KEY) -> BackfillResult:
    row = conn.execute(
        "SELECT page_from, page_to, next_page, filenode, rows_done, rows_total, batch_size, xid_from"
        " FROM villager_migration.backfill WHERE step = %s", (step,)).fetchone()
    conn.commit()
    if row is None:
        raise RuntimeError(f"{step}: no page range recorded")
    first, last, page, filenode, done, total, saved, xid_from = row
    done = int(done)
    rng = "ctid >= %(plo)s::tid AND ctid < %(phi)s::tid"
    # Progress counts the row versions older than the walk, each once, where it lies: a version
    # written since (by our batches, or by the application through the triggers) is complete and is
    # not counted again when the walk meets it. Only the count uses the age test (a frozen
    # row of an earlier xid epoch could be misjudged); what is processed does not depend on it.
    older = "c.now - (c.now - t.xmin::text::bigint) %% 4294967296 < %(xid_from)s"
    now = "(SELECT pg_current_xact_id()::text::bigint AS now) c"
    if total is None:  # counted by the worker itself, in parallel with the other parts
        with conn.transaction():
            _unbounded(conn)
            total = conn.execute(f"SELECT count(*) FILTER (WHERE {older}) FROM {now}, public.{table} t WHERE {rng}",
                                 {"plo": f"({first},0)", "phi": f"({last},0)", "xid_from": xid_from}
                                 ).fetchone()[0]  # type: ignore[index]
            conn.execute("UPDATE villager_migration.backfill SET rows_total = %s WHERE step = %s", (total, step))
    total = int(total)
    bound = [bind(a, "physical" if locking else "pages") for a in actions]
    rows_cap = max(MIN_BATCH, ctx.batch_size) * (1 if locking else 10)
    where_only = f" AND ({only})" if only else ""
    # One statement counts the page range and locks what needs the actions (one snapshot for
    # both). The locked rows come back as array literals, passed to the actions as they are:
    # turning thousands of ids into Python objects and back cost more than the round trips.
    c = key.ident
    locked = (f"WITH l AS MATERIALIZED (SELECT {c}, ctid FROM public.{table} t WHERE {rng}{where_only}"
              f"{' FOR NO KEY UPDATE SKIP LOCKED' if locking else ' AND false'})"
              f" SELECT c.n, c.needed, c.node, {locked_rows(key)} FROM"
              f" (SELECT count(*) FILTER (WHERE {older}) AS n, count(*) FILTER (WHERE true{where_only}) AS needed,"
              f" pg_relation_filenode(%(rel)s::regclass) AS node FROM {now}, public.{table} t WHERE {rng}) c")
    remember = (f"INSERT INTO villager_migration.backfill_retry (step, row_id)"
                f" SELECT %(step)s, {c}::text FROM public.{table} t WHERE {rng}{where_only}"
                f" AND {c} <> ALL(%(ids)s::{key.sqltype}[]) ON CONFLICT DO NOTHING")
    per_page = max(1.0, total / max(1, last - first))
    pace = _Pace(ctx, int(saved or 8), 1, MAX_PAGES)
    tally = _Tally(ctx, report, done, total)
    while page < last:
        if ctx.throttle:
            ctx.throttle.before_batch(table)
        # Keep the batch within the row cap too (VILLAGER_BATCH_SIZE) at the table's density.
        size = max(1, min(pace.size, int(rows_cap / per_page)))
        upto = min(last, page + size)
        params: dict[str, Any] = {"plo": f"({page},0)", "phi": f"({upto},0)", "rel": f"public.{table}", "step": step,
                                  "xid_from": xid_from}
        t0 = time.perf_counter()
        try:
            with _batch(conn, begin):
                n, needed, node, *rows = conn.execute(locked, params).fetchone()  # type: ignore[misc]
                if node != filenode:
                    raise TableRewritten(table)
                batch = _Locked(*rows)
                if batch.count and busy:
                    batch = _without_busy(conn, busy, batch, key)
                if not locking:
                    for action in bound:
                        conn.execute(action, params)
                elif batch.count < needed:  # rows locked by the application, or busy: come back for them
                    conn.execute(remember, {**params, "ids": batch.ids})
                if batch.count:
                    _apply(conn, bound, batch, params)
                _record_batch(conn, step, "next_page", upto, n, size, time.perf_counter() - t0)
        except BATCH_RETRYABLE as exc:
            pace.gave_way(ctx, step, exc)
            continue
        dt = time.perf_counter() - t0
        pace.after(dt)
        tally.batch_done(n, dt)
        if n:
            per_page = max(1.0, 0.7 * per_page + 0.3 * n / (upto - page))
        page = upto
    return _finish(ctx, conn, begin, step, table, actions, tally, key)


def _record_batch(conn: psycopg.Connection[Any], step: str, cursor_column: str, cursor: Any, rows: int,
                  size: int, elapsed: float) -> None:
    """Move the part's cursor (`next_page` or `last_key`) inside the batch's own transaction."""
    conn.execute(
        f"UPDATE villager_migration.backfill SET {cursor_column} = %s, rows_done = rows_done + %s,"
        " batches = batches + 1, batch_size = %s, elapsed_s = elapsed_s + %s,"
        " max_batch_ms = greatest(max_batch_ms, %s), updated_at = now() WHERE step = %s",
        (cursor, rows, size, elapsed, elapsed * 1000, step))


class _Tally:
    """What a part's walk has done so far: reported after every batch, summed up at the end."""

    def __init__(self, ctx: Context, report: Callable[[int, int, int], None], done: int, total: int) -> None:
        self.ctx, self.report, self.done, self.total = ctx, report, done, total
        self.started = time.perf_counter()
        self.rows = self.batches = 0
        self.max_batch_ms = 0.0

    def batch_done(self, rows: int, seconds: float) -> None:
        self.rows += rows
        self.done += rows
        self.batches += 1
        self.max_batch_ms = max(self.max_batch_ms, seconds * 1000)
        self.report(self.done, max(self.total, self.done), rows)
        if self.ctx.batch_pause_ms:
            time.sleep(self.ctx.batch_pause_ms / 1000)


def _finish(ctx: Context, conn: psycopg.Connection[Any], begin: bytes, step: str, table: str, actions: list[str],
            tally: _Tally, key: Key) -> BackfillResult:
    retried = _retry_skipped(conn, begin, step, table, actions, key)
    with conn.transaction():
        conn.execute("UPDATE villager_migration.backfill SET finished_at = now(), updated_at = now(),"
                     " rows_total = greatest(rows_total, rows_done) WHERE step = %s", (step,))
    return BackfillResult(tally.rows, tally.batches, time.perf_counter() - tally.started, retried, tally.max_batch_ms)


def _walk_keys(ctx: Context, conn: psycopg.Connection[Any], begin: bytes, step: str, table: str, actions: list[str],
               busy: list[str], key_range: KeyRange, report: Callable[[int, int, int], None],
               only: str | None = None, locking: bool = True, key: Key = VILLAGER_KEY) -> BackfillResult:
    lo = key_range.lo
    last_id, done, saved_size = _init_progress(conn, step, table, key_range, key)
    if last_id is None and not key_range.lo_inclusive:
        last_id = lo  # the part starts above its lower bound, as if a batch had ended there
    max_size = max(MIN_BATCH, ctx.batch_size)
    # Start small: the first batches of a table also warm caches and plans.
    pace = _Pace(ctx, min(max_size, saved_size or min(max_size, 500)), MIN_BATCH, max_size)
    bound = [bind(a, "key", key) for a in actions]
    tally = _Tally(ctx, report, done, _total(conn, step))
    c = key.ident
    # `only`: a predicate over the row; when given, only the rows matching it need the actions, so
    # only they are locked (a scan that quarantines a few rows writes nothing to the others).
    where_only = f" AND ({only})" if only else ""
    row_lock = " FOR NO KEY UPDATE SKIP LOCKED" if locking else ""
    hi = key_range.hi is not None

    def statements(lower: str | None) -> tuple[str, str, str]:
        """Pick the next batch's keys, lock its rows, remember the rows skipped: above the cursor
        (`>`), from the part's first key (`>=`), or from the table's first key (None)."""
        batch_rows = key_bounds(key, lower, True, "last", "upper")
        pick = (f"WITH r AS (SELECT {c} FROM public.{table} WHERE {key_bounds(key, lower, hi, 'last', 'hi')}"
                f" ORDER BY {c} LIMIT %(n)s)"
                f" SELECT (SELECT {c} FROM r ORDER BY {c} DESC LIMIT 1)::text, (SELECT count(*) FROM r)")
        lock = (f"WITH l AS MATERIALIZED (SELECT {c}, ctid FROM public.{table} t"
                f" WHERE {batch_rows}{where_only}{row_lock}) SELECT {locked_rows(key)}")
        remember = (f"INSERT INTO villager_migration.backfill_retry (step, row_id)"
                    f" SELECT %(step)s, {c}::text FROM public.{table} t WHERE {batch_rows}"
                    f" AND {c} <> ALL(%(ids)s::{key.sqltype}[]){where_only} ON CONFLICT DO NOTHING")
        return pick, lock, remember

    sql = {lower: statements(lower) for lower in (">", ">=", None)}
    while True:
        if ctx.throttle:
            ctx.throttle.before_batch(table)
        pick, lock, remember = sql[">" if last_id is not None else ">=" if lo is not None else None]
        size = pace.size
        t0 = time.perf_counter()
        try:
            with _batch(conn, begin):
                start = last_id if last_id is not None else lo
                upper, n = conn.execute(pick, {"last": start, "n": size, "hi": key_range.hi}).fetchone() or (None, 0)
                if not n:
                    break
                params = {"last": start, "upper": upper, "step": step}
                batch = _Locked(*conn.execute(lock, params).fetchone())  # type: ignore[misc]
                if batch.count and busy:
                    batch = _without_busy(conn, busy, batch, key)
                if batch.count < n or only:
                    conn.execute(remember, {**params, "ids": batch.ids})
                if batch.count:
                    _apply(conn, bound, batch)
                _record_batch(conn, step, "last_key", upper, n, size, time.perf_counter() - t0)
        except BATCH_RETRYABLE as exc:
            pace.gave_way(ctx, step, exc)
            continue
        dt = time.perf_counter() - t0
        pace.after(dt)
        tally.batch_done(n, dt)
        last_id = upper
    return _finish(ctx, conn, begin, step, table, actions, tally, key)


def _without_busy(conn: psycopg.Connection[Any], busy: list[str], batch: _Locked, key: Key = VILLAGER_KEY
                  ) -> _Locked:
    """The batch without the rows the busy checks name (usually none: then nothing more is sent)."""
    skip: list[Any] = []
    for sql in busy:
        row = conn.execute(sql, batch.params()).fetchone()
        skip += row[0] if row else []
    if not skip:
        return batch
    c, t = key.ident, key.sqltype
    left = _Locked(*conn.execute(  # type: ignore[misc]
        f"WITH l AS MATERIALIZED (SELECT {c}, ctid FROM unnest(%(ids)s::{t}[], %(tids)s::tid[]) u({c}, ctid)"
        f" WHERE {c} <> ALL(%(skip)s::{t}[])) SELECT {locked_rows(key)}", {**batch.params(), "skip": skip}).fetchone())
    if key.is_uuid:
        return left
    # Keys out of the table's column order in the type's default collation, not the column's: the
    # batch's own range still bounds what is left.
    return _Locked(left.count, left.ids, left.tids, batch.lo, batch.hi)


def _apply(conn: psycopg.Connection[Any], actions: list[str], batch: _Locked, extra: dict[str, Any] | None = None
           ) -> None:
    params = {**(extra or {}), **batch.params()}
    for action in actions:
        conn.execute(action, params)


def _total(conn: psycopg.Connection[Any], step: str) -> int:
    row = conn.execute("SELECT coalesce(rows_total, 0) FROM villager_migration.backfill WHERE step = %s",
                       (step,)).fetchone()
    conn.commit()
    return int(row[0]) if row else 0


def walk_settings(conn: psycopg.Connection[Any], ctx: Context) -> bytes:
    """What each of the walk's transactions sets for itself, transaction-local (SET LOCAL: nothing
    outlives the transaction, so a connection handed on by a pooler carries none of it):
    - `villager.backfill`: our own writes skip the sync triggers;
    - `synchronous_commit` off: a crash may lose the last few batches' commits, and their cursor
      moves with them, so the resumed run redoes exactly those batches;
    - `lock_timeout` of one batch target, not the DDL's (an application write queued behind us
      must never wait longer than a batch), and a 60 s statement bound (not the database's or
      role's, nor its idle_in_transaction_session_timeout);
    - `session_replication_role = replica` where the role may (superuser, or granted SET on it):
      no triggers nor rules fire for our writes. Our sync triggers skip them already; what this
      saves is the foreign-key check of every default variant we insert, as costly as the insert.
      The check is redundant: the batch holds a row lock on each of its products, so none can be
      deleted before we commit. Without the privilege, the checks simply run."""
    lock_ms = int(min(ctx.policy.lock_timeout_ms, max(10, ctx.target_batch_ms)))
    sets = ["set_config('villager.backfill', 'on', true)", "set_config('synchronous_commit', 'off', true)",
            f"set_config('lock_timeout', '{lock_ms}ms', true)", "set_config('statement_timeout', '60s', true)",
            "set_config('idle_in_transaction_session_timeout', '0', true)"]
    try:
        with conn.transaction():
            conn.execute("SELECT set_config('session_replication_role', 'replica', true)")
        sets.append("set_config('session_replication_role', 'replica', true)")
    except errors.InsufficientPrivilege:
        pass
    return f"SELECT {', '.join(sets)}".encode()


@contextmanager
def _batch(conn: psycopg.Connection[Any], begin: bytes) -> Iterator[None]:
    """One transaction of the walk, with the walk's settings (`walk_settings`)."""
    with conn.transaction():
        conn.execute(begin)
        yield


def _unbounded(conn: psycopg.Connection[Any]) -> None:
    """For a transaction that counts a whole part once, before the walk: the batch bounds set for
    the connection (a 60 s statement, a lock wait of one batch) are not meant for it, and it is
    outside the batches' retries."""
    conn.execute("SELECT set_config('lock_timeout', '0', true), set_config('statement_timeout', '0', true)")


def _retry_skipped(conn: psycopg.Connection[Any], begin: bytes, step: str, table: str, actions: list[str],
                   key: Key = VILLAGER_KEY) -> int:
    """Rows that were locked by the application when their batch ran: take them now, waiting for
    their lock at most the walk's lock_timeout each time. The retry rows hold keys as text: cast to
    the key's type, so each one is an index probe of the table."""
    retried = 0
    c, typ = key.ident, key.sqltype
    for attempt in range(1, 1000):
        try:
            with _batch(conn, begin):
                batch = _Locked(*conn.execute(  # type: ignore[misc]
                    f"WITH l AS MATERIALIZED (SELECT t.{c}, t.ctid FROM public.{table} t"
                    f" JOIN villager_migration.backfill_retry r ON t.{c} = r.row_id::{typ} AND r.step = %s"
                    f" ORDER BY t.{c} LIMIT 500 FOR NO KEY UPDATE OF t) SELECT {locked_rows(key)}", (step,)).fetchone())
                if batch.count:
                    _apply(conn, [bind(a, "key", key) for a in actions], batch)
                conn.execute(f"DELETE FROM villager_migration.backfill_retry r WHERE r.step = %s AND"
                             f" (r.row_id::{typ} = ANY(%s::{typ}[]) OR NOT EXISTS (SELECT 1 FROM public.{table} t"
                             f" WHERE t.{c} = r.row_id::{typ}))", (step, batch.ids))
                retried += batch.count
                if not batch.count:
                    return retried
        except BATCH_RETRYABLE:
            time.sleep(min(2.0, 0.05 * attempt))
    # Not done: the step must not count as finished with rows left behind (its check looks here).
    held = conn.execute("SELECT count(*) FROM villager_migration.backfill_retry WHERE step = %s", (step,)).fetchone()
    conn.commit()
    raise RefusedError(f"{step}: {held[0] if held else '?'} rows of {table} stayed locked by the application through"
                       " every retry (a transaction left open?); end it, then run `villager-shop migrate run` again:"
                       " it resumes with those rows")
