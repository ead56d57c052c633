"""Migrated databases for the service tests: built once per session as templates, copied per test."""

from __future__ import annotations

from pathlib import Path

import psycopg

from tests.migration.messy import load_bulk, load_messy
from villager_shop.core.config import Settings
from villager_shop.core.urls import with_dbname
from villager_shop.legacy.schema import schema_sql
from villager_shop.migration.complete import complete
from villager_shop.migration.plan import legacy_columns
from villager_shop.migration.planfile import record, spec
from villager_shop.migration.runner import make_context, run
from villager_shop.migration.sqlfiles import section
from villager_shop.migration.steps.sync_triggers import TRIGGERS

BULK = {"users": 400, "shops": 25, "products": 1500, "orders": 300, "items": 600}


def build_migrated(url: str, plan_file: Path | None = None) -> None:
    """Legacy schema + messy rows + bulk rows, then `migrate run` (mid-migration: triggers live),
    of the built-in plan or of `plan_file`."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(schema_sql().encode())
    load_messy(url)
    load_bulk(url, **BULK)
    ctx = make_context(url, Settings(database_url=url))  # type: ignore[arg-type]
    try:
        if plan_file is None:
            run(ctx)
        else:
            run(ctx, file_plan=record.for_run(ctx.conn, spec.load(plan_file)))
    finally:
        ctx.conn.close()


def complete_for_real(url: str) -> None:
    """`migrate complete` itself (no old application is left to wait for)."""
    ctx = make_context(url, Settings(database_url=url))  # type: ignore[arg-type]
    try:
        complete(ctx, quiet_seconds=0.1, reader_check=False)
    finally:
        ctx.conn.close()


def simulate_complete(url: str) -> None:
    """What `migrate complete` does to the tables the service uses: triggers gone, legacy columns dropped."""
    with psycopg.connect(url, autocommit=True) as conn:
        for name, table, *_ in TRIGGERS:
            conn.execute(f"DROP TRIGGER IF EXISTS {name} ON public.{table}")
        for table, column in legacy_columns():  # the columns `migrate complete` drops
            conn.execute(f"ALTER TABLE public.{table} DROP COLUMN {column}")
        conn.execute(section("monitoring.sql", "check_data_integrity_completed").encode())
        conn.execute("ANALYZE")


def admin_to(url: str, dbname: str) -> str:
    return with_dbname(url, dbname)
