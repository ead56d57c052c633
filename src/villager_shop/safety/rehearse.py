"""Staging rehearsal: the whole online migration on a restored copy of production, under a live
workload, judged GO or NO-GO before anyone touches the live database.

Why this shape (the guide's "Test migration on staging environment" is `createdb` + `psql <
backup_*.sql` and then nothing measured): here the rehearsal
1. restores a manifest backup (checksum proven, row counts checked) into `<db>_staging_<ts>` on the
   same server - a name that is checked to differ from the live database and to carry the staging
   suffix, because that database is dropped WITH (FORCE) at the end - or where VILLAGER_SCRATCH_URL
   says when the role may not create databases (safety.scratch);
2. runs exactly what production will run (`runner.run`) while the LiveWriter plays the old and the
   new application against staging, recording every write's latency;
3. verifies (row-by-row equivalence, every write of the writer present), compares performance
   baselines and query plans before and after, lints the plan's SQL with squawk;
4. projects the production duration from the measured rates and production's row counts, and lists
   every reason for a NO-GO.
Production is only read: its row estimates, and the backup taken when the manifest has none.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from villager_shop.core.config import Settings
from villager_shop.core.db import connection
from villager_shop.core.errors import RefusedError, VillagerError, describe
from villager_shop.core.urls import dbname_of, mask_url
from villager_shop.legacy.schema import LEGACY_TABLES
from villager_shop.migration import runner, state
from villager_shop.migration import status as status_mod
from villager_shop.migration import verify as verify_mod
from villager_shop.migration.complete import legacy_column_dependents
from villager_shop.migration.context import Reporter, SilentReporter
from villager_shop.migration.dependents import summary
from villager_shop.migration.plan import build_plan, plan_sql
from villager_shop.migration.preflight import refuse_row_security
from villager_shop.safety import baseline, dbops, manifest
from villager_shop.safety.backup import create_backup, restore_into
from villager_shop.safety.manifest import BackupEntry
from villager_shop.safety.report import write_report
from villager_shop.safety.report.model import RehearsalReport, Span, StepResult
from villager_shop.safety.restore import PROTECTED
from villager_shop.safety.scratch import VARIABLE, plan_scratch, scratch_database
from villager_shop.workload.writer import LiveWriter, check_expected

Say = Callable[[str], None]

STAMP_FORMAT = "%Y%m%d_%H%M%S"
STAGING_SUFFIX = re.compile(r"_staging_\d{8}_\d{6}$")
BEFORE, AFTER = "rehearsal-before", "rehearsal-after"
LATENCY_BUCKETS = 240
QUARANTINE_EXAMPLES = 3
EXIT_NO_GO = 5  # = VerificationFailed.exit_code: the rehearsal ran and says NO-GO


def _quiet(_: str) -> None:
    return None


# --- the staging name: the one database this module may drop ---------------------------------------

def staging_name(live: str, stamp: str) -> str:
    """`<live>_staging_<stamp>`, the live name cut so the whole fits in 63 bytes."""
    return dbops.derived_name(live, f"_staging_{stamp}")


def check_staging_name(live: str, staging: str) -> None:
    """Refuse any staging name that could be production (or a system database): staging is
    restored into, migrated, and dropped WITH (FORCE)."""
    if staging == live:
        raise RefusedError(f"refusing to rehearse: the staging database name {staging!r} is the live database's; "
                           "rename the live database or retry in a second")
    if staging in PROTECTED:
        raise RefusedError(f"refusing to use {staging!r} as a staging database")
    if not STAGING_SUFFIX.search(staging):
        raise RefusedError(f"refusing to use {staging!r} as a staging database: it does not end with "
                           "_staging_<YYYYMMDD_HHMMSS>")


# --- options ----------------------------------------------------------------------------------------

@dataclass
class RehearsalOptions:
    backup_id: str | None = None
    writer_threads: int = 2  # legacy-application writer threads (plus new_writer_threads)
    new_writer_threads: int = 1
    keep: bool = False
    report_dir: Path | None = None
    max_latency_ms: float = 100.0
    max_quarantine_pct: float = 5.0
    catalog_rounds: int = 5


# --- progress bookkeeping ---------------------------------------------------------------------------

class _Timeline:
    """Wraps the caller's migration reporter and records when each step started and finished."""

    def __init__(self, inner: Reporter) -> None:
        self.inner = inner
        self.spans: dict[str, Span] = {}
        self.notes: list[str] = []

    def step_started(self, name: str, title: str) -> None:
        now = time.time()
        self.spans[name] = Span(name, now, now, "running")
        self.inner.step_started(name, title)

    def step_finished(self, name: str, detail: dict[str, Any]) -> None:
        span = self.spans.get(name)
        if span is not None:
            span.end, span.status = time.time(), "done"
        self.inner.step_finished(name, detail)

    def progress(self, name: str, done: int, total: int | None, rate: float) -> None:
        self.inner.progress(name, done, total, rate)

    def note(self, message: str) -> None:
        self.notes.append(message)
        self.inner.note(message)

    def close_running(self) -> None:
        for span in self.spans.values():
            if span.status == "running":
                span.end, span.status = time.time(), "failed"


@contextlib.contextmanager
def _phase(phases: list[Span], name: str, say: Say) -> Iterator[Span]:
    say(f"{name} …")
    span = Span(name, time.time(), time.time(), "running")
    phases.append(span)
    try:
        yield span
    except BaseException:
        span.end, span.status = time.time(), "failed"
        raise
    span.end = time.time()
    if span.status == "running":
        span.status = "done"


# --- the rehearsal ----------------------------------------------------------------------------------

def choose_backup(url: str, backup_dir: Path, backup_id: str | None, live: str,
                  say: Say = _quiet) -> tuple[BackupEntry, bool]:
    """The named backup, else the newest of this database in the manifest, else a new one."""
    if backup_id:
        entry = manifest.find(backup_dir, backup_id)
    else:
        mine = [e for e in manifest.load(backup_dir) if e.database == live]
        if mine:
            entry = max(mine, key=lambda e: (e.snapshot_at, e.id))
            say(f"using the newest backup of {live}: {entry.id} (snapshot {entry.snapshot_at})")
        else:
            say(f"no backup of {live} in {backup_dir}: creating one")
            return create_backup(url, backup_dir, say=say), True
    if entry.database != live:
        raise RefusedError(f"backup {entry.id} is of database {entry.database!r}, not of {live!r}: "
                           "its projection and its rehearsal would be about another database")
    return entry, False


def rehearse(url: str, settings: Settings, opts: RehearsalOptions, *, say: Say = _quiet,
             reporter: Reporter | None = None) -> RehearsalReport:
    """Rehearse the migration on a staging copy of the database at `url`; write the report files."""
    t0 = time.time()
    started = datetime.now(UTC)
    stamp = started.strftime(STAMP_FORMAT)
    live = dbname_of(url)
    staging = staging_name(live, stamp)
    check_staging_name(live, staging)
    if opts.writer_threads < 0 or opts.new_writer_threads < 0:
        raise VillagerError("writer thread counts cannot be negative")
    report_dir = (opts.report_dir or settings.data_dir / "reports" / f"rehearsal-{stamp}").expanduser().resolve()

    with connection(url, autocommit=True, application_name="villager-shop rehearse") as conn:
        phase = state.phase(conn) if state.schema_exists(conn) else "not_started"  # read only
        refuse_row_security(conn)  # the run would refuse it on staging, after the backup and restore
        dependents = legacy_column_dependents(conn)
    if phase in ("migrated", "completing", "completed"):
        raise RefusedError(f"nothing to rehearse: this database is already migrated (phase {phase}); a rehearsal"
                           " runs the migration on a copy of a database it has not reached (`migrate status`"
                           " shows where it stands)")

    given = settings.villager_scratch_url
    where = plan_scratch(url, given.get_secret_value() if given is not None else None, "rehearse")

    phases: list[Span] = []
    with _phase(phases, "backup", say):
        entry, created = choose_backup(url, settings.backup_dir, opts.backup_id, live, say)
        archive = manifest.check_file(settings.backup_dir, entry)
    with connection(url, autocommit=True, application_name="villager-shop rehearse") as admin:
        production = production_rows(admin)
        server = mask_url(url)
    # Created under the checked staging name (and dropped) or, with VILLAGER_SCRATCH_URL naming an
    # empty database, that database (emptied).
    with scratch_database(where, staging, live, keep=opts.keep, what="staging", say=say) as target:
        staging = target.name
        with _phase(phases, "restore into staging", say):
            restore_into(entry, archive, target.url, target.server_major, say, no_owner=where.provided)
            with connection(target.url, autocommit=True) as conn:
                conn.execute("ANALYZE")
        body = _on_staging(target.url, settings, opts, phases, say, reporter or SilentReporter())
    report = RehearsalReport(
        verdict="GO", reasons=[], started_at=_iso(started), finished_at=_iso(datetime.now(UTC)),
        seconds=round(time.time() - t0, 2), live_database=live, staging_database=staging,
        staging_kept=opts.keep, server=server,
        backup={"id": entry.id, "created_now": created, "snapshot_at": entry.snapshot_at, "lsn": entry.lsn,
                "size": entry.size, "rows": sum(entry.row_counts.values())},
        thresholds={"max_latency_ms": opts.max_latency_ms, "max_quarantine_pct": opts.max_quarantine_pct,
                    "writer_threads": {"legacy": opts.writer_threads, "new": opts.new_writer_threads}},
        phases=phases, **body,
    )
    report.projection = project(report.steps, report.backfill, production)
    report.projection["complete"] = report.run_error is None
    if report.run_error is not None:
        report.projection["note"] = "incomplete: the run failed on staging, so only the steps that ran are counted"
    report.reasons = decide(report, opts)
    report.verdict = "NO-GO" if report.reasons else "GO"
    report.legacy_column_dependents = [d.to_dict() for d in dependents]
    if dependents:
        report.notes.append(summary(dependents, "`migrate complete`") + "; drop or change them before completing")
    if opts.keep and where.create:
        report.notes.append(f"staging database {staging} kept (--keep): drop it with "
                            f'DROP DATABASE "{staging}" WITH (FORCE)')
    elif opts.keep:
        report.notes.append(f"staging database {staging} ({VARIABLE}) kept (--keep): empty it before it serves"
                            " again")
    report.report_dir = str(report_dir)
    report.files = [str(p) for p in write_report(report, report_dir)]
    return report


def _on_staging(staging_url: str, settings: Settings, opts: RehearsalOptions, phases: list[Span], say: Say,
                reporter: Reporter) -> dict[str, Any]:
    """Everything that happens inside the staging database; returns the report's fields."""
    plans: dict[str, dict[str, Any]] = {}
    with _phase(phases, "baseline before", say):
        samples = _catalog_samples(staging_url)
        _catalog_queries(staging_url, LEGACY_QUERIES, samples, opts.catalog_rounds, plans, "before")
        baseline.capture(staging_url, BEFORE, replace=True)

    timeline = _Timeline(reporter)
    writer = LiveWriter(staging_url, legacy_threads=opts.writer_threads, new_threads=opts.new_writer_threads)
    run_error: str | None = None
    with _phase(phases, "migration + live writer", say) as span:
        writer.start()
        try:
            ctx = runner.make_context(staging_url, settings, timeline)
            try:
                runner.run(ctx)
            finally:
                ctx.conn.close()
        except (VillagerError, psycopg.Error) as exc:
            run_error = describe(exc)[0]
            span.status = "failed"
            say(f"the migration failed on staging: {run_error}")
        finally:
            timeline.close_running()
            stats = writer.stop()

    with _phase(phases, "verify", say):
        with connection(staging_url, autocommit=True) as conn:
            report = verify_mod.verify(conn)
            st = status_mod.status(conn)
            rows = {r.name: r for r in state.steps(conn)}
            quarantine = _quarantine(conn, opts.max_quarantine_pct, set(writer.expected))
        try:
            lost = check_expected(staging_url, writer)
        except psycopg.Error as exc:
            lost = [f"the writer's rows could not be checked: {describe(exc)[0]}"]

    baseline_info: dict[str, Any] = {}
    with _phase(phases, "catalog queries + baseline after", say) as span:
        if run_error is None:
            _catalog_queries(staging_url, NEW_QUERIES, samples, opts.catalog_rounds, plans, "after")
        else:
            span.status = "skipped"
        _flush_stats(staging_url)
        baseline.capture(staging_url, AFTER, replace=True)
        baseline_info = _baseline_highlights(baseline.diff(baseline.load(staging_url, BEFORE),
                                                           baseline.load(staging_url, AFTER)))

    with _phase(phases, "squawk", say):
        squawk = run_squawk(plan_sql(settings.villager_lock_timeout_ms))

    steps = _steps(rows, timeline)
    t_origin = phases[0].start if phases else time.time()
    writer_summary = stats.summary()
    writer_summary["slowest"] = slowest_writes(stats.slow, steps, t_origin)
    return {
        "steps": steps,
        "run_error": run_error,
        "backfill": st["backfill"],
        "locks": _locks(steps, st["backfill"], writer_summary),
        "writer": writer_summary,
        "latency_series": latency_series(stats.samples, t_origin),
        "lost_writes": {"count": len(lost), "examples": lost[:10], "checked_rows": len(writer.expected)},
        "verify": report.to_dict(),
        "quarantine": quarantine,
        "squawk": squawk,
        "baseline": baseline_info,
        "query_plans": [{"query": name, **v} for name, v in plans.items()],
        "projection": {},
        "notes": timeline.notes[:50],
    }


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# --- steps, locks, latency --------------------------------------------------------------------------

def _steps(rows: dict[str, state.StepRow], timeline: _Timeline) -> list[StepResult]:
    out: list[StepResult] = []
    for step in build_plan():
        r = rows.get(step.name)
        span = timeline.spans.get(step.name)
        detail = dict(r.detail) if r else {}
        status = r.status if r else ("failed" if span and span.status == "failed" else "pending")
        seconds = detail.get("seconds")
        if seconds is None and span is not None:
            seconds = round(span.seconds, 3)
        attempts = int(detail.get("attempts") or 0)
        statements = int(detail.get("statements") or (1 if attempts else 0))
        out.append(StepResult(
            name=step.name, title=step.title, phase=step.phase, status=status,
            seconds=None if seconds is None else float(seconds),
            start=span.start if span else None, end=span.end if span else None,
            attempts=attempts, lock_retries=max(0, attempts - statements),
            error=r.last_error if r else None, detail=detail,
        ))
    return out


def _locks(steps: list[StepResult], backfill: list[dict[str, Any]], writer: dict[str, Any]) -> dict[str, Any]:
    """The longest waits and holds the application could have felt."""
    worst = max(backfill, key=lambda b: b["max_batch_ms"], default=None)
    brief = [s for s in steps if s.phase in ("expand", "sync") and s.seconds is not None]
    longest = max(brief, key=lambda s: s.seconds or 0.0, default=None)
    return {
        "max_backfill_batch_ms": worst["max_batch_ms"] if worst else None,
        "max_backfill_batch_table": worst["table"] if worst else None,
        "ddl_lock_retries": sum(s.lock_retries for s in steps),
        "ddl_retried_steps": [{"step": s.name, "attempts": s.attempts, "lock_retries": s.lock_retries}
                              for s in steps if s.lock_retries],
        "longest_brief_lock_step": longest.name if longest else None,
        "longest_brief_lock_step_ms": round((longest.seconds or 0.0) * 1000, 1) if longest else None,
        "writer_max_ms": writer.get("writer_max_ms"),
        "writer_p99_ms": writer.get("writer_p99_ms"),
    }


def slowest_writes(slow: list[tuple[float, float, str]], steps: list[StepResult], origin: float,
                   top: int = 10) -> list[dict[str, Any]]:
    """The slowest writes, each with the migration step(s) running while it waited."""
    out = []
    for t, ms, op in sorted(slow, key=lambda x: -x[1])[:top]:
        during = [s.name for s in steps if s.start is not None and s.end is not None
                  and s.start <= t + ms / 1000 and t <= s.end]
        out.append({"t": round(t - origin, 3), "ms": round(ms, 1), "op": op, "during": during})
    return out


def latency_series(samples: list[tuple[float, float, str]], origin: float,
                   buckets: int = LATENCY_BUCKETS) -> list[dict[str, float]]:
    """Writer latency over time, bucketed: seconds since `origin`, writes, p50 and max per bucket."""
    if not samples:
        return []
    ordered = sorted(samples)
    first, last = ordered[0][0], ordered[-1][0]
    width = max((last - first) / buckets, 0.05)
    groups: dict[int, list[float]] = {}
    for t, ms, _op in ordered:
        groups.setdefault(min(buckets - 1, int((t - first) / width)), []).append(ms)
    out = []
    for i in sorted(groups):
        lat = sorted(groups[i])
        out.append({"t": round(first - origin + (i + 0.5) * width, 3), "n": len(lat),
                    "p50_ms": round(lat[len(lat) // 2], 2), "max_ms": round(lat[-1], 2)})
    return out


# --- quarantine -------------------------------------------------------------------------------------

def _quarantine(conn: psycopg.Connection[Any], max_pct: float, touched: set[tuple[str, str]]) -> dict[str, Any]:
    """Shares of production's rows: the rows the synthetic writer inserted, updated or deleted are
    left out of both counts (its rows are messy on purpose; 6 of 30 orders were counted where
    production had 2 of 4)."""
    tables = []
    present = state.schema_exists(conn)
    for table in LEGACY_TABLES:
        mine = [row_id for t, row_id in touched if t == table]
        # Whole counts minus the writer's rows found by key (never a scan per row of the table).
        total = int(conn.execute(
            sql.SQL("SELECT (SELECT count(*) FROM public.{t}) - (SELECT count(*) FROM public.{t}"
                    " WHERE id = ANY(%s::uuid[]))").format(t=sql.Identifier(table)),
            (mine,)).fetchone()[0])  # type: ignore[index]
        reasons: dict[str, int] = {}
        if present:
            count = ("SELECT q.reason, count(*) FROM villager_migration.quarantine q WHERE q.table_name = %s {}"
                     " GROUP BY q.reason")
            theirs = dict(conn.execute(count.format("AND q.row_id = ANY(%s::uuid[])"), (table, mine)).fetchall())
            for r, n_all in sorted(conn.execute(count.format(""), (table,)).fetchall()):
                if n_all - theirs.get(r, 0):
                    reasons[str(r)] = int(n_all - theirs.get(r, 0))
        n = sum(reasons.values())
        pct = 100.0 * n / total if total else 0.0
        tables.append({"table": table, "rows": total, "quarantined": n, "pct": round(pct, 3),
                       "reasons": reasons, "over_threshold": pct > max_pct, "writer_rows_left_out": len(mine)})
    examples: list[dict[str, Any]] = []
    if state.schema_exists(conn):
        examples = [{"table": t, "reason": r, "row_id": i, "detail": d} for t, r, i, d in conn.execute(
            "SELECT table_name, reason, row_id::text, left(detail::text, 240) FROM ("
            " SELECT q.*, row_number() OVER (PARTITION BY table_name, reason ORDER BY row_id) AS rn"
            " FROM villager_migration.quarantine q) x WHERE rn <= %s ORDER BY 1, 2, 3",
            (QUARANTINE_EXAMPLES,)).fetchall()]
    return {"tables": tables, "examples": examples}


# --- catalog workload, plans and baselines -----------------------------------------------------------

# The catalog reads the shop serves, written for the legacy schema (before) and the normalized one
# (after): the same questions, so their plans can be compared.
LEGACY_QUERIES = {
    "catalog by category": "SELECT id, name, price FROM public.products WHERE category = %(category)s"
                           " AND is_available ORDER BY rating DESC, order_count DESC, id LIMIT 20",
    "a shop's products in a category": "SELECT id, name FROM public.products WHERE shop_id = %(shop)s"
                                       " AND category = %(category)s AND is_available",
    "a customer's orders": "SELECT id, total, created_at FROM public.orders WHERE customer_id = %(customer)s"
                           " ORDER BY created_at DESC LIMIT 20",
}
NEW_QUERIES = {
    "catalog by category": "SELECT p.id, p.name, v.price FROM public.products p"
                           " JOIN public.product_variants v ON v.product_id = p.id AND v.is_default AND v.is_active"
                           " WHERE p.category_id = (SELECT c.id FROM public.product_categories c"
                           " WHERE c.name_key = villager_migration.category_key(%(category)s))"
                           " AND p.is_available ORDER BY p.rating DESC, p.order_count DESC, p.id LIMIT 20",
    "a shop's products in a category": "SELECT p.id, p.name FROM public.products p WHERE p.shop_id = %(shop)s"
                                       " AND p.category_id = (SELECT c.id FROM public.product_categories c"
                                       " WHERE c.name_key = villager_migration.category_key(%(category)s))"
                                       " AND p.is_available",
    "a customer's orders": LEGACY_QUERIES["a customer's orders"],
}


def _catalog_samples(url: str, n: int = 5) -> list[dict[str, Any]]:
    """Parameters for the catalog queries: frequent categories, shops that sell them, customers."""
    with connection(url) as conn:
        rows = conn.execute(
            "SELECT category, (array_agg(shop_id ORDER BY shop_id))[1]::text FROM public.products"
            " WHERE category IS NOT NULL AND is_available GROUP BY category ORDER BY count(*) DESC, category"
            " LIMIT %s", (n,)).fetchall()
        customers = [r[0] for r in conn.execute(
            "SELECT customer_id::text FROM public.orders ORDER BY id LIMIT %s", (n,)).fetchall()]
    if not rows or not customers:
        return []
    return [{"category": rows[i % len(rows)][0], "shop": rows[i % len(rows)][1],
             "customer": customers[i % len(customers)]} for i in range(n)]


def _catalog_queries(url: str, queries: dict[str, str], samples: list[dict[str, Any]], rounds: int,
                     plans: dict[str, dict[str, Any]], when: str) -> None:
    if not samples:
        return
    with connection(url, autocommit=True, application_name="villager-shop rehearse catalog") as conn:
        for name, text in queries.items():
            plan = conn.execute(sql.SQL("EXPLAIN (FORMAT JSON) ") + sql.SQL(text), samples[0]).fetchone()
            t0 = time.perf_counter()
            runs = 0
            for _ in range(max(1, rounds)):
                for params in samples:
                    conn.execute(text, params).fetchall()
                    runs += 1
            ms = (time.perf_counter() - t0) * 1000 / runs
            entry = plans.setdefault(name, {})
            entry[when] = {"scans": scan_nodes(plan[0] if plan else []), "mean_ms": round(ms, 3),
                           "cost": _total_cost(plan[0] if plan else [])}


def scan_nodes(plan_json: Any) -> list[str]:
    """`Seq Scan on products`, `Index Scan using idx_x on products`, … from EXPLAIN (FORMAT JSON)."""
    out: list[str] = []

    def walk(node: dict[str, Any]) -> None:
        kind = str(node.get("Node Type", ""))
        rel = node.get("Relation Name")
        if "Scan" in kind:
            using = f" using {node['Index Name']}" if node.get("Index Name") else ""
            out.append(f"{kind}{using}" + (f" on {rel}" if rel else ""))
        for child in node.get("Plans", []) or []:
            walk(child)

    for top in plan_json or []:
        walk(top.get("Plan", {}))
    return out


def _total_cost(plan_json: Any) -> float | None:
    try:
        return float(plan_json[0]["Plan"]["Total Cost"])
    except (IndexError, KeyError, TypeError, ValueError):
        return None


def _flush_stats(url: str) -> None:
    """Make this session's and the workload's statistics visible to the capture that follows."""
    with connection(url, autocommit=True) as conn:
        if int(conn.info.server_version) >= 150000:
            conn.execute("SELECT pg_stat_force_next_flush()")
            return
    time.sleep(0.6)  # PostgreSQL 13/14: the statistics collector reports every 500 ms


def _baseline_highlights(d: baseline.BaselineDiff) -> dict[str, Any]:
    used_new = [{"index": i.index, "table": i.table, "idx_scan": i.idx_scan, "bytes": i.bytes_after}
                for i in d.indexes if i.status == "new" and i.idx_scan > 0 and i.index.startswith("public.")]
    unused_new = [i.index for i in d.indexes if i.status == "new" and i.idx_scan == 0 and i.index.startswith("public.")]
    tables = [{"table": t.table, "seq_scan": t.seq_scan, "idx_scan": t.idx_scan, "seq_tup_read": t.seq_tup_read,
               "seq_scan_before": t.seq_scan_before, "idx_scan_before": t.idx_scan_before,
               "bytes_before": t.table_bytes_before + t.index_bytes_before,
               "bytes_after": t.table_bytes_after + t.index_bytes_after, "new": t.new}
              for t in d.tables if t.table.startswith("public.")]
    return {"before": d.before, "after": d.after, "seq_to_index": d.seq_to_index, "new_indexes_used": used_new,
            "new_indexes_unused": unused_new, "tables": tables, "notes": d.notes}


# --- squawk -----------------------------------------------------------------------------------------

def squawk_binary() -> str | None:
    beside = Path(sys.executable).parent / "squawk"
    if beside.is_file():
        return str(beside)
    return shutil.which("squawk")


def run_squawk(script: str) -> dict[str, Any]:
    """Lint the plan's SQL; never fails the rehearsal itself (absent squawk is reported as such)."""
    exe = squawk_binary()
    if exe is None:
        return {"available": False, "ok": None, "detail": "squawk not found beside the interpreter nor on PATH;"
                " install the dev extra (squawk-cli) to lint the plan", "output": []}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "migrate-plan.sql"
        path.write_text(script, encoding="utf-8")
        try:
            res = subprocess.run([exe, "--reporter", "gcc", str(path)], capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return {"available": False, "ok": None, "detail": f"squawk could not run: {exc}", "output": []}
    output = [ln.replace(str(path), "plan.sql") for ln in (res.stdout + res.stderr).splitlines() if ln.strip()]
    ok = res.returncode == 0
    return {"available": True, "ok": ok, "binary": exe, "exit_code": res.returncode,
            "detail": "no problems found in `migrate plan --sql`" if ok else
            f"{len(output)} line(s) of findings on `migrate plan --sql`", "output": output[:40]}


# --- projection -------------------------------------------------------------------------------------

def production_rows(conn: psycopg.Connection[Any]) -> dict[str, dict[str, Any]]:
    """Row counts of the legacy tables on the live database: the planner's estimate (free), or an
    exact count when the table was never analyzed."""
    out: dict[str, dict[str, Any]] = {}
    for table in LEGACY_TABLES:
        row = conn.execute(
            "SELECT c.reltuples, c.relpages FROM pg_class c WHERE c.oid = to_regclass(%s)",
            (f"public.{table}",)).fetchone()
        if row is None:
            continue
        reltuples, relpages = float(row[0]), int(row[1])
        if reltuples > 0 or (reltuples == 0 and relpages > 0):
            out[table] = {"rows": int(reltuples), "source": "pg_class.reltuples"}
        else:  # -1 (never analyzed, PG 14+) or 0 pages (PG 13): count
            n = conn.execute(sql.SQL("SELECT count(*) FROM public.{}").format(sql.Identifier(table))).fetchone()
            out[table] = {"rows": int(n[0]) if n else 0, "source": "count(*)"}
    return out


def project(steps: list[StepResult], backfill: list[dict[str, Any]],
            production: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Production duration = per backfilled table, production rows / staging rows per second, plus
    the other steps as measured (steps that scan one table scaled by its production/staging ratio)."""
    by_step = {s.name: s for s in steps}
    staging_rows: dict[str, int] = {}
    tables = []
    for b in backfill:
        step = by_step.get(b["step"])
        seconds = step.seconds if step and step.seconds else None
        rows = int(b["rows_done"])
        staging_rows[b["table"]] = rows
        rate = rows / seconds if seconds else float(b.get("rows_per_s") or 0)
        prod = production.get(b["table"], {}).get("rows")
        tables.append({"table": b["table"], "staging_rows": rows, "staging_seconds": seconds,
                       "rows_per_s": round(rate, 1), "production_rows": prod,
                       "production_source": production.get(b["table"], {}).get("source"),
                       "projected_seconds": round(prod / rate, 2) if prod is not None and rate > 0 else None})
    other_measured = other_scaled = 0.0
    plan = {s.name: s for s in build_plan()}
    for s in steps:
        if s.phase == "backfill" or s.seconds is None:
            continue
        other_measured += s.seconds
        table = getattr(plan.get(s.name), "table", None)
        ratio = 1.0
        if s.phase in ("validate", "index") and table in staging_rows and staging_rows[table]:
            prod = production.get(str(table), {}).get("rows")
            if prod is not None:
                ratio = max(1.0, prod / staging_rows[str(table)])
        other_scaled += s.seconds * ratio
    backfill_s = sum(t["projected_seconds"] or 0.0 for t in tables)
    unknown = [t["table"] for t in tables if t["projected_seconds"] is None]
    return {"tables": tables, "backfill_seconds": round(backfill_s, 2),
            "other_steps_seconds_measured": round(other_measured, 2),
            "other_steps_seconds_scaled": round(other_scaled, 2),
            "total_seconds": round(backfill_s + other_scaled, 2),
            "unknown_tables": unknown,
            "note": "rates measured on staging under the rehearsal's writer load; validate/index steps scaled by "
                    "their table's production/staging row ratio, the others as measured"}


# --- the verdict ------------------------------------------------------------------------------------

def decide(report: RehearsalReport, opts: RehearsalOptions) -> list[str]:
    """Every reason for a NO-GO (empty: GO)."""
    reasons: list[str] = []
    failed = [s for s in report.steps if s.status == "failed"]
    for s in failed:
        reasons.append(f"step {s.name} failed: {s.error or report.run_error or 'see the run error'}")
    if report.run_error and not failed:
        reasons.append(f"the migration run failed: {report.run_error}")
    if not report.verify.get("ok"):
        bad = [c for c in report.verify.get("checks", []) if not c.get("ok")]
        shown = "; ".join(f"{c['name']}: {c.get('detail') or c.get('count')}" for c in bad[:6])
        reasons.append(f"verify failed ({len(bad)} check{'s' if len(bad) != 1 else ''}): {shown}")
    if report.lost_writes["count"]:
        reasons.append(f"{report.lost_writes['count']} writes of the live writer are missing or wrong on staging "
                       f"(e.g. {report.lost_writes['examples'][0]})")
    errors = int(report.writer.get("writer_errors") or 0)
    if errors:
        sample = (report.writer.get("error_samples") or ["?"])[0]
        reasons.append(f"the live writer saw {errors} failed write{'s' if errors != 1 else ''} (e.g. {sample})")
    max_ms = float(report.writer.get("writer_max_ms") or 0.0)
    if max_ms >= opts.max_latency_ms:
        worst = (report.writer.get("slowest") or [None])[0]
        where = ""
        if worst:
            where = f": {worst['op']} at {worst['t']:.1f} s" + (
                f", during {', '.join(worst['during'])}" if worst["during"] else ", while no step was running")
        slow = sum(1 for w in report.writer.get("slowest") or [] if w["ms"] >= opts.max_latency_ms)
        more = f" ({slow}{'+' if slow >= 10 else ''} writes over the threshold)" if slow > 1 else ""
        reasons.append(f"writer max latency {max_ms:.1f} ms >= {opts.max_latency_ms:g} ms (--max-latency-ms)"
                       f"{where}{more}")
    if report.squawk.get("available") and report.squawk.get("ok") is False:
        first = (report.squawk.get("output") or [""])[0]
        reasons.append(f"squawk found problems in `migrate plan --sql`: {first}")
    for t in report.quarantine.get("tables", []):
        if t["over_threshold"]:
            why = ", ".join(f"{r} {n}" for r, n in sorted(t["reasons"].items()))
            reasons.append(f"{t['quarantined']} of {t['rows']} rows of {t['table']} quarantined "
                           f"({t['pct']:.2f}% > {opts.max_quarantine_pct:g}% --max-quarantine-pct): {why}")
    return reasons
