from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests.helpers import settings_for
from tests.migration.messy import load_messy
from villager_shop.migration.runner import make_context, run


def migrate(url: str) -> dict[str, Any]:
    ctx = make_context(url, settings_for(url))
    try:
        return run(ctx)
    finally:
        ctx.conn.close()


@pytest.fixture
def migrated_messy(legacy_db: str) -> str:
    """The hand-written messy data set, after `migrate run`."""
    load_messy(legacy_db)
    migrate(legacy_db)
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
