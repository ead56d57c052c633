"""Fixtures of the Prisma tests: the Node project installed and its three clients generated once per
session (skipped, with the reason, where Node.js or npm is missing), and the database in each phase."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.api.conftest import file_completed_template, file_migrating_template  # noqa: F401  (fixtures, shared as they are)
from tests.helpers import settings_for
from tests.migration.messy import load_messy
from tests.prisma import node
from villager_shop.core.db import create_database, drop_database
from villager_shop.legacy.schema import schema_sql
from villager_shop.migration.complete import complete
from villager_shop.migration.planfile import record
from villager_shop.migration.rollback import rollback
from villager_shop.migration.runner import make_context, run


@pytest.fixture(scope="session")
def prisma_project() -> Path:
    why = node.missing()
    if why:
        pytest.skip(why)
    node.install()
    node.generate()
    return node.PRISMA


@pytest.fixture(scope="session")
def phase_dbs(pg_admin_url: str) -> Iterator[dict[str, str]]:
    """One database per phase, built once: `legacy` (the legacy schema with the messy rows),
    `migrated` (after `migrate run` of the default plan, plans/villager.toml), `completed` (after `migrate complete`), `rolled_back`
    (after `migrate run` and `migrate rollback`)."""
    tag = uuid.uuid4().hex[:8]
    names = {phase: f"vt_phase_{phase}_{tag}" for phase in ("legacy", "migrated", "completed", "rolled_back")}
    urls = {"legacy": create_database(pg_admin_url, names["legacy"])}
    try:
        with psycopg.connect(urls["legacy"], autocommit=True) as c:
            c.execute(schema_sql().encode())
        load_messy(urls["legacy"])
        for phase in ("migrated", "rolled_back"):
            urls[phase] = create_database(pg_admin_url, names[phase], template=names["legacy"])
            _with_context(urls[phase], lambda ctx: run(ctx, file_plan=record.for_run(ctx.conn, None)))
        urls["completed"] = create_database(pg_admin_url, names["completed"], template=names["migrated"])
        _with_context(urls["completed"], lambda ctx: complete(ctx, quiet_seconds=0, reader_check=False))
        _with_context(urls["rolled_back"], rollback)
        yield urls
    finally:
        for name in names.values():
            drop_database(pg_admin_url, name)


def _with_context(url: str, action: object) -> None:
    ctx = make_context(url, settings_for(url))
    try:
        action(ctx)  # type: ignore[operator]
    finally:
        ctx.conn.close()
