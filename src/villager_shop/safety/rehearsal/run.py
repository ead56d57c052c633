"""The rehearsal from start to end: check what may be rehearsed, choose the backup, restore it into
staging, run the migration there under the live writer, measure, and write the judged report."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import psycopg

from villager_shop.core.config import Settings
from villager_shop.core.db import connection
from villager_shop.core.errors import RefusedError, VillagerError, describe
from villager_shop.core.urls import dbname_of, mask_url
from villager_shop.migration import runner, state
from villager_shop.migration import status as status_mod
from villager_shop.migration.complete import legacy_column_dependents
from villager_shop.migration.context import Reporter, SilentReporter
from villager_shop.migration.dependents import summary
from villager_shop.migration.plan import plan_sql
from villager_shop.migration.planfile import catalog as planfile_catalog
from villager_shop.migration.planfile import record
from villager_shop.migration.planfile.assemble import assemble
from villager_shop.migration.planfile.verify import verify_database
from villager_shop.migration.preflight import refuse_row_security
from villager_shop.safety import manifest
from villager_shop.safety.rehearsal.baselines import capture_after, capture_before
from villager_shop.safety.rehearsal.catalog import LEGACY_QUERIES, NEW_QUERIES, catalog_queries, catalog_samples
from villager_shop.safety.rehearsal.judge import decide, production_rows, project
from villager_shop.safety.rehearsal.latency import latency_series, locks, slowest_writes
from villager_shop.safety.rehearsal.options import RehearsalOptions
from villager_shop.safety.rehearsal.quarantine import quarantine_summary
from villager_shop.safety.rehearsal.squawk import run_squawk
from villager_shop.safety.rehearsal.staging import (
    STAMP_FORMAT,
    check_staging_name,
    choose_backup,
    kept_note,
    restored_staging,
    staging_name,
)
from villager_shop.safety.rehearsal.timeline import Say, Timeline, phase, quiet, step_results
from villager_shop.safety.report import write_report
from villager_shop.safety.report.model import RehearsalReport, Span
from villager_shop.safety.scratch import plan_scratch
from villager_shop.workload.writer import LiveWriter, check_expected


def rehearse(url: str, settings: Settings, opts: RehearsalOptions, *, say: Say = quiet,
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
        reached = state.phase(conn) if state.schema_exists(conn) else "not_started"  # read only
        refuse_row_security(conn)  # the run would refuse it on staging, after the backup and restore
        columns = None
        if opts.plan is not None:  # the columns its complete drops
            columns = assemble(opts.plan, planfile_catalog.read(conn, opts.plan.tables())).legacy_columns
        dependents = legacy_column_dependents(conn, columns)
    if reached in ("migrated", "completing", "completed"):
        raise RefusedError(f"nothing to rehearse: this database is already migrated (phase {reached}); a rehearsal"
                           " runs the migration on a copy of a database it has not reached (`migrate status`"
                           " shows where it stands)")

    given = settings.villager_scratch_url
    where = plan_scratch(url, given.get_secret_value() if given is not None else None, "rehearse")

    phases: list[Span] = []
    with phase(phases, "backup", say):
        entry, created = choose_backup(url, settings.backup_dir, opts.backup_id, live, say)
        archive = manifest.check_file(settings.backup_dir, entry)
    with connection(url, autocommit=True, application_name="villager-shop rehearse") as admin:
        production = production_rows(admin)
        server = mask_url(url)
    with restored_staging(where, staging, live, entry, archive, keep=opts.keep, phases=phases, say=say) as target:
        staging = target.name
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
    if (note := kept_note(where, staging, opts.keep)) is not None:
        report.notes.append(note)
    report.report_dir = str(report_dir)
    report.files = [str(p) for p in write_report(report, report_dir)]
    return report


def _on_staging(staging_url: str, settings: Settings, opts: RehearsalOptions, phases: list[Span], say: Say,
                reporter: Reporter) -> dict[str, Any]:
    """Everything that happens inside the staging database; returns the report's fields."""
    plans: dict[str, dict[str, Any]] = {}
    with phase(phases, "baseline before", say):
        samples = catalog_samples(staging_url)
        catalog_queries(staging_url, LEGACY_QUERIES, samples, opts.catalog_rounds, plans, "before")
        capture_before(staging_url)

    timeline = Timeline(reporter)
    writer = LiveWriter(staging_url, legacy_threads=opts.writer_threads, new_threads=opts.new_writer_threads)
    run_error: str | None = None
    with phase(phases, "migration + live writer", say) as span:
        writer.start()
        try:
            ctx = runner.make_context(staging_url, settings, timeline)
            try:
                runner.run(ctx, file_plan=record.for_run(ctx.conn, opts.plan) if opts.plan else None)
            finally:
                ctx.conn.close()
        except (VillagerError, psycopg.Error) as exc:
            run_error = describe(exc)[0]
            span.status = "failed"
            say(f"the migration failed on staging: {run_error}")
        finally:
            timeline.close_running()
            stats = writer.stop()

    with phase(phases, "verify", say):
        with connection(staging_url, autocommit=True) as conn:
            report = verify_database(conn)
            st = status_mod.status(conn)
            file_plan = record.current(conn)
            rows = {r.name: r for r in state.steps(conn)}
            quarantine = quarantine_summary(conn, opts.max_quarantine_pct, set(writer.expected))
        try:
            lost = check_expected(staging_url, writer)
        except psycopg.Error as exc:
            lost = [f"the writer's rows could not be checked: {describe(exc)[0]}"]

    baseline_info: dict[str, Any] = {}
    with phase(phases, "catalog queries + baseline after", say) as span:
        if run_error is None:
            catalog_queries(staging_url, NEW_QUERIES, samples, opts.catalog_rounds, plans, "after")
        else:
            span.status = "skipped"
        baseline_info = capture_after(staging_url)

    with phase(phases, "squawk", say):
        squawk = run_squawk(plan_sql(settings.villager_lock_timeout_ms, file_plan.steps if file_plan else None))

    steps = step_results(rows, timeline, file_plan.steps if file_plan else None)
    t_origin = phases[0].start if phases else time.time()
    writer_summary = stats.summary()
    writer_summary["slowest"] = slowest_writes(stats.slow, steps, t_origin)
    return {
        "steps": steps,
        "run_error": run_error,
        "backfill": st["backfill"],
        "locks": locks(steps, st["backfill"], writer_summary),
        "writer": writer_summary,
        "latency_series": latency_series(stats.samples, t_origin),
        "lost_writes": {"count": len(lost), "examples": lost[:10], "checked_rows": len(writer.expected)},
        "verify": report.to_dict(),
        "quarantine": quarantine,
        "plan": opts.plan.name if opts.plan else "villager_shop",
        "squawk": squawk,
        "baseline": baseline_info,
        "query_plans": [{"query": name, **v} for name, v in plans.items()],
        "projection": {},
        "notes": timeline.notes[:50],
    }


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
