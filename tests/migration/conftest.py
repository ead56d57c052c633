from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tests.helpers import settings_for
from tests.migration.messy import load_messy
from villager_shop.core.db import drop_database
from villager_shop.legacy.schema import schema_sql
from villager_shop.migration.plan import build_plan
from villager_shop.migration.planfile import bundled, record
from villager_shop.migration.planfile.spec import load
from villager_shop.migration.runner import make_context, run

VILLAGER_PLAN = bundled.path()


@contextmanager
def owned_legacy_db(pg_admin_url: str, prefix: str, role_options: str = "") -> Iterator[str]:
    """A legacy database (messy data) owned by a LOGIN role that is not superuser, as on a managed
    server; the URL connects as that role. Database and role are dropped afterwards."""
    if conninfo_to_dict(pg_admin_url).get("password"):
        pytest.skip("the server wants passwords; this test creates a role without one")
    tag = uuid.uuid4().hex[:10]
    role = db = f"{prefix}_{tag}"
    with psycopg.connect(pg_admin_url, autocommit=True) as c:
        c.execute(f"CREATE ROLE {role} LOGIN NOSUPERUSER {role_options}")
        c.execute(f"CREATE DATABASE {db} OWNER {role}")
    url = make_conninfo(pg_admin_url, user=role, dbname=db)
    try:
        with psycopg.connect(url, autocommit=True) as c:
            c.execute(schema_sql().encode())
        load_messy(url)
        yield url
    finally:
        drop_database(pg_admin_url, db)
        with psycopg.connect(pg_admin_url, autocommit=True) as c:
            c.execute(f"DROP ROLE IF EXISTS {role}")


def migrate(url: str, plan_file: Path | None = None) -> dict[str, Any]:
    """`migrate run` (of the built-in plan, or of `plan_file`)."""
    ctx = make_context(url, settings_for(url))
    try:
        return run(ctx, file_plan=record.for_run(ctx.conn, load(plan_file)) if plan_file else None)
    finally:
        ctx.conn.close()


def migrate_built_in(url: str) -> dict[str, Any]:
    """`migrate run` of the built-in plan, whichever plan the command runs by default: for the tests
    that compare the built-in plan with plans/villager.toml, or that are about its own SQL."""
    ctx = make_context(url, settings_for(url))
    try:
        return run(ctx, steps=build_plan())
    finally:
        ctx.conn.close()


@pytest.fixture
def migrated_messy(legacy_db: str) -> str:
    """The hand-written messy data set, after `migrate run`."""
    load_messy(legacy_db)
    migrate(legacy_db)
    return legacy_db


@pytest.fixture(params=["built-in", "file"])
def migrated_messy_any(request: pytest.FixtureRequest, legacy_db: str) -> str:
    """The same, by the built-in plan and by plans/villager.toml."""
    load_messy(legacy_db)
    migrate(legacy_db, VILLAGER_PLAN if request.param == "file" else None)
    return legacy_db


@pytest.fixture
def conn(migrated_messy: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(migrated_messy, autocommit=True) as c:
        yield c


def violations(c: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return c.execute("SELECT kind, table_name, row_id, detail FROM check_data_integrity()").fetchall()


def one(c: psycopg.Connection[Any], sql: str, *args: Any) -> Any:
    """The single value of a one-column row (else the row)."""
    row = c.execute(sql, args).fetchone()
    return row[0] if row and len(row) == 1 else row


def unicode_case(c: psycopg.Connection[Any]) -> bool:
    """Whether the database's LC_CTYPE maps case and classifies letters beyond ASCII (C.UTF-8, any
    language's locale) or not (C, POSIX): the rules use the database's upper(), lower() and
    [[:alnum:]], so 'é' and 'É' are one house only where the database says so."""
    return bool(one(c, "SELECT upper('é') = 'É' AND 'é' ~ '[[:alnum:]]'"))
