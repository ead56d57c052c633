"""Runs the plan: one step after another, each recorded in the database before and after, so a
run killed at any point (kill -9 included) resumes where it stopped. Only one run, rollback or
complete at a time (a session advisory lock, released by the server if the process dies)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import replace
from typing import Any

import psycopg

from villager_shop.core.channels import CATALOG_CHANNEL
from villager_shop.core.config import Settings
from villager_shop.core.db import connect, own_session, relation_exists
from villager_shop.core.errors import RefusedError, VillagerError, after_interrupt
from villager_shop.legacy.schema import LEGACY_TABLES
from villager_shop.migration import state
from villager_shop.migration.context import Context, Reporter, SilentReporter
from villager_shop.migration.ddl import RetryPolicy, side_by_side
from villager_shop.migration.plan import build_plan
from villager_shop.migration.planfile import record
from villager_shop.migration.planfile.assemble import FilePlan
from villager_shop.migration.preflight import refuse_row_security
from villager_shop.migration.steps.base import Step
from villager_shop.migration.steps.monitoring import ensure_pg_stat_statements
from villager_shop.migration.throttle import Limits, Throttle

ADVISORY_KEY = (742300, 1)
PHASE_OF_STEP = {"expand": "expanding", "sync": "expanding", "backfill": "backfilling",
                 "validate": "validating", "index": "validating", "analyze": "validating"}


def make_context(url: str, settings: Settings, reporter: Reporter | None = None,
                 conn: psycopg.Connection[Any] | None = None) -> Context:
    conn = conn or connect(url, autocommit=True, application_name="villager-shop migrate")
    own_session(conn)
    enc = conn.execute("SHOW server_encoding").fetchone()
    return Context(
        url=url,
        conn=conn,
        policy=RetryPolicy(lock_timeout_ms=settings.villager_lock_timeout_ms,
                           lock_slice_ms=settings.villager_lock_slice_ms,
                           snapshot_wait_s=settings.villager_snapshot_wait_s),
        utf8=bool(enc and str(enc[0]).upper() in ("UTF8", "UTF-8")),
        batch_size=settings.villager_batch_size,
        batch_pause_ms=settings.villager_batch_pause_ms,
        target_batch_ms=settings.villager_target_batch_ms,
        backfill_workers=settings.villager_backfill_workers,
        backfill_order=settings.villager_backfill_order,
        reporter=reporter or SilentReporter(),
        throttle=Throttle(url, Limits(
            max_replica_lag_ms=settings.villager_max_replica_lag_ms,
            max_replica_lag_mb=settings.villager_max_replica_lag_mb,
            max_wal_mb_per_s=settings.villager_max_wal_mb_per_s,
            max_archive_pending=settings.villager_max_archive_pending,
            autovacuum=settings.villager_throttle_autovacuum,
            standby_timeout_s=settings.villager_standby_timeout_s,
            ignore_standbys=frozenset(n.strip() for n in settings.villager_throttle_ignore_standbys.split(",")
                                      if n.strip())), (reporter or SilentReporter()).note),
    )


@contextmanager
def exclusive(ctx: Context, what: str, wait_s: float = 10.0) -> Iterator[None]:
    # A run killed a moment ago may still hold the lock until its server process notices: wait a little.
    deadline = time.monotonic() + wait_s
    got = ctx.scalar("SELECT pg_try_advisory_lock(%s, %s)", ADVISORY_KEY)
    if not got:
        ctx.reporter.note(f"another migration command holds the lock: waiting up to {wait_s:.0f} s")
    while not got and time.monotonic() < deadline:
        time.sleep(0.2)
        got = ctx.scalar("SELECT pg_try_advisory_lock(%s, %s)", ADVISORY_KEY)
    if not got:
        holder = ctx.conn.execute(
            "SELECT a.pid, a.application_name, a.backend_start FROM pg_locks l JOIN pg_stat_activity a USING (pid)"
            " WHERE l.locktype = 'advisory' AND l.classid = %s AND l.objid = %s AND l.granted"
            " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())", ADVISORY_KEY,
        ).fetchone()
        who = f" (pid {holder[0]}, {holder[1]!r}, since {holder[2]:%H:%M:%S})" if holder else ""
        raise RefusedError(f"cannot {what}: another migrate run/rollback/complete is in progress{who}")
    try:
        yield
    finally:
        if not ctx.conn.closed:
            ctx.scalar("SELECT pg_advisory_unlock(%s, %s)", ADVISORY_KEY)


def missing_legacy_tables(ctx: Context, tables: tuple[str, ...] = LEGACY_TABLES) -> list[str]:
    return [t for t in tables if not relation_exists(ctx.conn, f"public.{t}")]


def run(ctx: Context, *, steps: list[Step] | None = None, file_plan: FilePlan | None = None) -> dict[str, Any]:
    """Run (or resume) the whole plan - the built-in one, or `file_plan` (recorded in the
    database, so that every later command uses it); returns a summary per step."""
    tables = file_plan.tables if file_plan else LEGACY_TABLES
    missing = missing_legacy_tables(ctx, tables)
    if missing:
        if file_plan:
            raise VillagerError(f"plan {file_plan.name!r} does not fit this database: tables {', '.join(missing)}"
                                " are missing (`migrate plan --plan FILE` lists every problem)")
        raise VillagerError(f"not a villager_shop database: tables {', '.join(missing)} are missing"
                            " (create them with `villager-shop legacy init`)")
    refuse_row_security(ctx.conn, tables)
    plan = steps or (file_plan.steps if file_plan else build_plan())
    summary: dict[str, Any] = {}
    with exclusive(ctx, "run the migration"):
        current = state.settled_phase(ctx.conn) if state.schema_exists(ctx.conn) else "not_started"
        if current in ("completed", "completing"):
            raise RefusedError("the migration is already completed (legacy columns dropped); nothing to run")
        if current == "rolling_back":
            raise RefusedError("a rollback was interrupted; finish it with `villager-shop migrate rollback --yes`")
        plan[0].apply(ctx)  # the state schema itself
        if current == "rolled_back":
            reset(ctx)
        if current in ("not_started", "rolled_back"):
            record.record(ctx.conn, file_plan)
        state.register_steps(ctx.conn, [s.name for s in plan])
        if state.get(ctx.conn, "run_started_at") is None:
            # What rollback must give back: a table swap re-creates foreign keys and checks.
            state.record_constraints(ctx.conn, tables)
            state.put(ctx.conn, "run_started_at", time.time())
        ensure_pg_stat_statements(ctx)
        done = {r.name for r in state.steps(ctx.conn) if r.status == "done"}
        # Steps the operator withdrew (`migrate rollback --step`) stay out until reinstated.
        held_back = {r.name for r in state.steps(ctx.conn) if r.status == "withdrawn"}
        if held_back:
            ctx.reporter.note(f"left out, withdrawn by the operator: {', '.join(sorted(held_back))}"
                              " (`migrate run --reinstate NAME` puts one back)")
            plan = [s for s in plan if s.name not in held_back]
        try:
            i = 0
            while i < len(plan):
                j = i + 1
                while plan[i].side_by_side and j < len(plan) and plan[j].side_by_side:
                    j += 1
                if j - i > 1 and ctx.backfill_workers > 1:
                    summary.update(_run_side_by_side(ctx, plan[i:j], done))
                else:
                    j = i + 1
                    summary.update(_run_step(ctx, plan[i], done))
                i = j
        finally:
            if ctx.throttle:  # what status shows of the throttle must not outlive the run
                ctx.throttle.close()
        state.put(ctx.conn, "run_finished_at", time.time())
        state.set_phase(ctx.conn, "migrated")
        # The backfill's own writes notified nobody: one notification for all of them.
        ctx.conn.execute("SELECT pg_notify(%s, 'migrate run')", (CATALOG_CHANNEL,))
    return summary


def _run_step(ctx: Context, step: Step, done: set[str]) -> dict[str, Any]:
    """One step, recorded before and after (what a resumed run reads)."""
    phase = PHASE_OF_STEP.get(step.phase, "expanding")
    if state.phase(ctx.conn) != phase:
        state.set_phase(ctx.conn, phase)
    if step.name in done and (step.advisory or step.check(ctx)):
        return {step.name: {"skipped": "already done"}}
    if ctx.throttle:  # a paused run, or a standby far behind, waits here too (index builds write WAL)
        ctx.throttle.before_batch(None)
    ctx.reporter.step_started(step.name, step.title)
    state.mark(ctx.conn, step.name, "running")
    t0 = time.perf_counter()
    try:
        detail = step.apply(ctx)
    except BaseException as exc:
        if after_interrupt(exc):
            # Stopped by the operator, not failed: the next run resumes it. (Its connection may be
            # left mid-statement: then the step stays `running`, which a resumed run also resumes.)
            if not ctx.conn.closed and not ctx.conn.broken:
                with suppress(psycopg.Error):
                    state.mark(ctx.conn, step.name, "interrupted")
            raise
        if not ctx.conn.closed and not ctx.conn.broken:
            state.mark(ctx.conn, step.name, "failed", error=str(exc).splitlines()[0][:500] if str(exc) else
                       type(exc).__name__)
        raise
    if not step.advisory and not step.check(ctx):
        # An apply that returns is not proof: a statement can end without its effect (a concurrent
        # index build that gave up leaves an INVALID index, or none).
        why = (f"step {step.name} ran but its effect is not in place afterwards ({step.title}); it is"
               " not recorded as done: see `villager-shop migrate status`, then run again")
        state.mark(ctx.conn, step.name, "failed", error=why)
        raise RefusedError(why)
    detail = {**detail, "seconds": round(time.perf_counter() - t0, 3)}
    state.mark(ctx.conn, step.name, "done", detail=detail)
    state.event(ctx.conn, step.name, "done", step.title, detail)
    ctx.reporter.step_finished(step.name, detail)
    return {step.name: detail}


def _run_side_by_side(ctx: Context, group: list[Step], done: set[str]) -> dict[str, Any]:
    """Steps that block no reads or writes and wait for no other transaction (validations) on
    `backfill_workers` connections at once, one step per table at a time, in plan order per table."""
    phase = PHASE_OF_STEP.get(group[0].phase, "expanding")
    if state.phase(ctx.conn) != phase:
        state.set_phase(ctx.conn, phase)
    summary: dict[str, Any] = {}

    def run_one(conn: psycopg.Connection[Any], step: Step) -> None:
        summary.update(_run_step(replace(ctx, conn=conn), step, done))

    side_by_side(ctx.url, group, ctx.backfill_workers, "villager-shop migrate", run_one,
                 key=lambda step: getattr(step, "table", None))
    return {s.name: summary[s.name] for s in group}


def reset(ctx: Context) -> None:
    """A new run after a rollback starts from a clean state (history is kept in events)."""
    with ctx.conn.transaction():
        ctx.conn.execute("UPDATE villager_migration.steps SET status = 'pending', attempts = 0, started_at = NULL,"
                         " finished_at = NULL, last_error = NULL, detail = '{}'")
        ctx.conn.execute("DELETE FROM villager_migration.backfill")
        ctx.conn.execute("DELETE FROM villager_migration.backfill_retry")
        ctx.conn.execute("DELETE FROM villager_migration.quarantine")
        if relation_exists(ctx.conn, "villager_migration.plan_quarantine"):
            ctx.conn.execute("DELETE FROM villager_migration.plan_quarantine")
        ctx.conn.execute("DELETE FROM villager_migration.state WHERE key IN ('run_started_at', 'run_finished_at',"
                         " %s)", (state.CONSTRAINTS_FOUND,))
        ctx.conn.execute("DELETE FROM villager_migration.state WHERE key LIKE 'rebuild:%'")
        state.event(ctx.conn, None, "reset", "new run after a rollback")
