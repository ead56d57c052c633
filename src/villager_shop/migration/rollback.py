"""Rollback before `complete`: lossless and fast, because the legacy columns never stopped being
the whole truth (the sync triggers carried every write of the new application back to them).

Order (SPEC defect 12): 1) one short transaction drops the sync triggers, the new constraints, the
new columns and moves the new tables into an archive schema (nothing the new application wrote is
deleted: rows that have no legacy form, such as extra variants, stay there for inspection); the
old application never sees a half-state. 2) then the remaining new indexes on legacy tables are
dropped CONCURRENTLY (outside any transaction), and every legacy constraint that was validated
before the run and is not now is validated again. After `complete` there is no rollback: the legacy
columns are gone, and only a restore from backup (which loses later writes) could go back."""

from __future__ import annotations

import time
from typing import Any

from psycopg import sql

from villager_shop.core.db import own_timeouts, relation_exists
from villager_shop.core.errors import RefusedError
from villager_shop.migration import state
from villager_shop.migration.context import Context
from villager_shop.migration.cutover import LOCK_ORDER, run_cut
from villager_shop.migration.ddl import Ddl
from villager_shop.migration.plan import build_plan
from villager_shop.migration.planfile import record
from villager_shop.migration.planfile.assemble import FilePlan
from villager_shop.migration.planfile.spec import ExtractLookup, SplitChild
from villager_shop.migration.runner import exclusive
from villager_shop.migration.steps.base import column_exists

SERVICE_TABLES = ("credentials", "idempotency_keys")
ARCHIVED = ("addresses", "product_categories", "product_variants", *SERVICE_TABLES)
# The shop service's own tables (passwords, idempotency keys) reference users and orders: they go
# to the archive too, so that no foreign key of the new application constrains the old one's writes
# (a key update, a TRUNCATE) after a rollback. `users set-password` starts them afresh.
SERVICE_SCHEMA = "villager_service"


def new_only_rows(ctx: Context) -> dict[str, int]:  # of the built-in plan
    """What exists only in the new structures (kept in the archive schema)."""
    out: dict[str, int] = {}
    with own_timeouts(ctx.conn):  # counting is not bound by the database's statement_timeout
        if relation_exists(ctx.conn, "public.product_variants"):
            out["non_default_variants"] = int(
                ctx.scalar("SELECT count(*) FROM public.product_variants WHERE NOT is_default"))
        if relation_exists(ctx.conn, "public.product_categories"):
            out["unused_categories"] = int(ctx.scalar(
                "SELECT count(*) FROM public.product_categories c WHERE NOT EXISTS"
                " (SELECT 1 FROM public.products p WHERE p.category_id = c.id)"))
    return out


def new_only_rows_of_file(ctx: Context, plan: FilePlan) -> dict[str, int]:
    """The same for a plan file: the children that are not a parent's default, and the lookup rows no
    source row references (kept in the archive schema)."""
    out: dict[str, int] = {}
    with own_timeouts(ctx.conn):
        for op in plan.spec.operations:
            if isinstance(op, SplitChild) and relation_exists(ctx.conn, f"public.{op.child}"):
                out[f"non_default_{op.child}"] = int(ctx.scalar(
                    f"SELECT count(*) FROM public.{op.child} WHERE NOT {op.default_flag}"))
            elif isinstance(op, ExtractLookup) and relation_exists(ctx.conn, f"public.{op.lookup}"):
                used = " AND ".join(
                    f"NOT EXISTS (SELECT 1 FROM public.{s.table} t WHERE t.{s.fk} = l.id)" for s in op.sources
                    if column_exists(ctx, s.table, s.fk))
                out[f"unused_{op.lookup}"] = int(ctx.scalar(
                    f"SELECT count(*) FROM public.{op.lookup} l{f' WHERE {used}' if used else ''}"))
    return out


def refuse_if_impossible(phase: str) -> None:
    """Why no rollback can run in `phase` (the CLI asks this before it asks for confirmation)."""
    if phase in ("completed", "completing"):
        raise RefusedError(
            "rollback refused: `migrate complete` already dropped the legacy columns, so there is no lossless "
            "way back; only `villager-shop restore ID` from a backup remains, and it loses every write made "
            "since that backup")
    if phase == "not_started":
        raise RefusedError("nothing to roll back: no migration has run on this database")


def refuse_early(ctx: Context) -> None:
    """The refusals that need no lock (an unfinished `complete` is settled under the lock)."""
    phase = state.phase(ctx.conn)
    if phase != "completing":
        refuse_if_impossible(phase)


def rollback(ctx: Context) -> dict[str, Any]:
    refuse_early(ctx)
    with exclusive(ctx, "roll back"):
        phase = state.settled_phase(ctx.conn)
        refuse_if_impossible(phase)
        if phase == "rolled_back":
            return {"already": True, "phase": phase}
        state.set_phase(ctx.conn, "rolling_back")
        file_plan = record.current(ctx.conn)
        plan = file_plan.steps if file_plan else build_plan()
        archive = f"villager_archive_{time.strftime('%Y%m%d%H%M%S', time.gmtime())}"
        kept = new_only_rows(ctx) if file_plan is None else new_only_rows_of_file(ctx, file_plan)
        statements = [f"CREATE SCHEMA IF NOT EXISTS {archive}"]
        concurrent = []
        for step in reversed(plan):
            for d in step.undo_ddl():
                if d.concurrent:
                    concurrent.append(d)
                else:
                    statements.append(d.sql.replace("{archive}", archive))
        # The shop service's own tables go too, whichever plan it ran on.
        statements.append(_archive_schema(SERVICE_SCHEMA, archive))
        statements.append(_drop_archived_foreign_keys(archive))
        if state.get(ctx.conn, "created_pg_stat_statements"):
            statements.append("DROP EXTENSION IF EXISTS pg_stat_statements")
        cut = run_cut(ctx, statements, "rollback",
                      (*file_plan.tables, *file_plan.new_tables) if file_plan else LOCK_ORDER)
        for d in concurrent:
            ctx.run(d, "rollback")
        revalidated = _revalidate(ctx)
        with own_timeouts(ctx.conn):
            for step in plan:
                if step.undo_ddl():
                    state.mark(ctx.conn, step.name, "undone")
            ctx.conn.execute("UPDATE villager_migration.steps SET status = 'undone' WHERE status <> 'undone'")
            state.put(ctx.conn, "archive_schema", archive)
            state.put(ctx.conn, "created_pg_stat_statements", False)
            state.set_phase(ctx.conn, "rolled_back")
        with own_timeouts(ctx.conn):
            archived = {t: int(ctx.scalar(f"SELECT count(*) FROM {archive}.{t}"))
                        for t in ((*file_plan.new_tables, *SERVICE_TABLES) if file_plan else ARCHIVED)
                        if relation_exists(ctx.conn, f"{archive}.{t}")}
        return {"phase": "rolled_back", "archive_schema": archive, "archived_rows": archived,
                "new_only_rows": kept, "cut": cut, "indexes_dropped": len(concurrent), "revalidated": revalidated}


def _revalidate(ctx: Context) -> list[str]:
    """Every legacy constraint that was validated when the run started, and is NOT VALID now, is
    validated again: a table swap re-creates foreign keys and checks NOT VALID and validates them
    right after, so a run that stopped in between leaves them unvalidated (the planner then ignores
    them, and a later dump restores them NOT VALID). VALIDATE takes SHARE UPDATE EXCLUSIVE: reads
    and writes go on."""
    wanted = {(t, n) for t, n, valid in state.recorded_constraints(ctx.conn) if valid}
    for key in ctx.conn.execute("SELECT key, value -> 'validate' FROM villager_migration.state"
                                " WHERE key LIKE 'rebuild:%'").fetchall():
        wanted |= {(key[0].split(":", 1)[1], str(n)) for n in key[1] or []}
    done = []
    for table, name in sorted(wanted):
        row = ctx.conn.execute("SELECT convalidated FROM pg_constraint WHERE conrelid = to_regclass(%s)"
                               " AND conname = %s", (f"public.{table}", name)).fetchone()
        if row is None or row[0]:
            continue
        stmt = sql.SQL("ALTER TABLE {} VALIDATE CONSTRAINT {}").format(sql.Identifier("public", table),
                                                                       sql.Identifier(name))
        ctx.run(Ddl(stmt.as_string(ctx.conn), f"SHARE UPDATE EXCLUSIVE on {table} (reads and writes go on)",
                    gentle=True), "rollback")
        done.append(f"{table}.{name}")
    return done


def _archive_schema(schema: str, archive: str) -> str:
    return f"""DO $do$
DECLARE r record;
BEGIN
    FOR r IN SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = '{schema}' AND c.relkind IN ('r', 'p')
    LOOP
        EXECUTE format('ALTER TABLE %I.%I SET SCHEMA {archive}', '{schema}', r.relname);
    END LOOP;
    BEGIN
        EXECUTE 'DROP SCHEMA IF EXISTS {schema}';
    EXCEPTION WHEN dependent_objects_still_exist THEN
        NULL;  -- something else of the operator's lives there: the schema stays, empty of our tables
    END;
END
$do$"""


def _drop_archived_foreign_keys(archive: str) -> str:
    """An archived table must not keep a foreign key into a live table (product_variants ->
    products would cascade deletes and block nothing useful)."""
    return f"""DO $do$
DECLARE r record;
BEGIN
    FOR r IN SELECT c.conrelid::regclass AS tbl, c.conname FROM pg_constraint c
              JOIN pg_class t ON t.oid = c.conrelid JOIN pg_namespace n ON n.oid = t.relnamespace
             WHERE n.nspname = '{archive}' AND c.contype = 'f'
    LOOP
        EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', r.tbl, r.conname);
    END LOOP;
END
$do$"""
