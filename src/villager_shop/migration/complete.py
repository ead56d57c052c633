"""The contract step (the guide's post-migration cleanup), done only when it is safe (SPEC
defect 11): no object of the operator's uses a legacy column (dependents.py), verification passes
now, and no old application instance is still writing the legacy columns (the sync triggers count
such writes in a sequence; we watch it for a quiet period) or reading them (the statements the
server counted in that period, readers.py).
Then one short transaction runs the complete part of every step of the plan (the sync triggers go,
then the legacy columns); autovacuum settings and ANALYZE follow. Afterwards rollback is refused."""

from __future__ import annotations

import contextlib
import time
from typing import Any

import psycopg

from villager_shop.core.db import own_timeouts
from villager_shop.core.errors import RefusedError
from villager_shop.migration import dependents, readers, state
from villager_shop.migration.context import Context
from villager_shop.migration.cutover import LOCK_ORDER, run_cut
from villager_shop.migration.ddl import Ddl
from villager_shop.migration.plan import legacy_columns
from villager_shop.migration.planfile import record
from villager_shop.migration.planfile.verify import verify_database
from villager_shop.migration.runner import exclusive
from villager_shop.migration.steps.analyze import Analyze
from villager_shop.migration.steps.base import Step


def legacy_column_dependents(conn: psycopg.Connection[Any],
                             columns: tuple[tuple[str, str], ...] | None = None) -> list[dependents.Dependent]:
    """The operator's objects that would block the drop of the legacy columns, or vanish with them."""
    return dependents.find(conn, columns if columns is not None else record.legacy_columns_of(conn))


def cut_statements(plan: list[Step]) -> list[str]:
    """The one transaction of complete: every step's complete part in plan order, then what
    replaces the objects that compared the legacy columns (Step.complete_ddl, complete_last_ddl)."""
    return [*[d.sql for step in plan for d in step.complete_ddl()],
            *[d.sql for step in plan for d in step.complete_last_ddl()]]


def legacy_writes(ctx: Context) -> int:
    row = ctx.conn.execute("SELECT last_value, is_called FROM villager_migration.legacy_writes").fetchone()
    return int(row[0]) if row and row[1] else 0


def complete(ctx: Context, *, quiet_seconds: float = 5.0, reader_check: bool = True) -> dict[str, Any]:
    if not state.schema_exists(ctx.conn):
        raise RefusedError("complete refused: no migration has run on this database")
    with exclusive(ctx, "complete the migration"):
        phase = state.settled_phase(ctx.conn)
        if phase == "completed":
            return {"already": True, "phase": phase}
        if phase == "completing":  # the cut committed; what follows it did not finish
            return _after_cut(ctx, {"resumed_after_cut": True})
        if phase != "migrated":
            raise RefusedError(f"complete refused: the migration is in phase {phase!r}; "
                               "`villager-shop migrate run` must finish first")
        held_back = state.withdrawn(ctx.conn)
        if held_back:
            raise RefusedError(f"complete refused: steps withdrawn by the operator would be missing for good:"
                               f" {', '.join(sorted(held_back))}; put them back with `villager-shop migrate run"
                               " --reinstate NAME` first; nothing was changed")
        columns = record.legacy_columns_of(ctx.conn)
        found = legacy_column_dependents(ctx.conn, columns)
        if found:
            raise RefusedError(dependents.summary(found, "complete") + "; drop or change them first (`migrate plan`"
                               " lists them); nothing was changed")
        report = verify_database(ctx.conn)
        if not report.ok:
            bad = "; ".join(f"{c.name} ({c.detail or c.count})" for c in report.failures()[:4])
            raise RefusedError(f"complete refused: verify fails now: {bad}")
        if reader_check:
            readers.require_visible(ctx.conn)
        before = legacy_writes(ctx)
        seen = readers.watch(ctx.conn, columns, quiet_seconds) if reader_check else readers.wait(quiet_seconds)
        after = legacy_writes(ctx)
        if after > before:
            by = f"; seen: {seen.describe()}" if seen and seen.blocking else ""
            raise RefusedError(
                f"complete refused: an old application is still writing the legacy tables ({after - before} writes "
                f"in the last {quiet_seconds:g} s){by}; stop every old instance first")
        readers.refuse_if_read(seen, quiet_seconds)
        state.set_phase(ctx.conn, "completing")
        statements = cut_statements(record.steps_of(ctx.conn))
        try:
            file_plan = record.current(ctx.conn)
            cut = run_cut(ctx, statements, "complete",
                          (*file_plan.tables, *file_plan.new_tables) if file_plan else LOCK_ORDER)
        except BaseException:
            with contextlib.suppress(psycopg.Error):
                state.settled_phase(ctx.conn)  # the cut is one transaction: nothing was dropped
            raise
        return _after_cut(ctx, {"cut": cut, "legacy_writes_total": after, "reader_check": reader_check})


def _after_cut(ctx: Context, summary: dict[str, Any]) -> dict[str, Any]:
    """Settings and statistics for the normalized tables; safe to run again."""
    file_plan = record.current(ctx.conn)
    if file_plan is None:
        ctx.run(Ddl("ALTER TABLE public.product_variants SET (autovacuum_vacuum_scale_factor = 0.1,"
                    " autovacuum_analyze_scale_factor = 0.05)", "SHARE UPDATE EXCLUSIVE on product_variants",
                    gentle=True), "complete")
    analyze = Analyze(tuple(dict.fromkeys((*file_plan.tables, *file_plan.new_tables)))) if file_plan else Analyze()
    for d in analyze.ddl():
        ctx.run(d, "complete")
    with own_timeouts(ctx.conn):
        state.put(ctx.conn, "completed_at", time.time())
        state.set_phase(ctx.conn, "completed")
        quarantined = int(ctx.scalar("SELECT count(*) FROM villager_migration.quarantine"))
        if file_plan is not None:
            quarantined += int(ctx.scalar("SELECT count(*) FROM villager_migration.plan_quarantine"))
    columns = file_plan.legacy_columns if file_plan else legacy_columns()
    return {"phase": "completed", **summary, "dropped_columns": [f"{t}.{c}" for t, c in columns],
            "quarantined_rows_kept": quarantined,
            "quarantine_table": "villager_migration.plan_quarantine" if file_plan else "villager_migration.quarantine"}
