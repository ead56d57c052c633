"""Database-level operations shared by backup verification and restore.

Why here: both restore an archive into a new database on the same server and compare its per-table row
counts with the manifest; doing that in one place keeps "verified" meaning the same thing in both.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from villager_shop.core.db import connection, create_database_on
from villager_shop.core.errors import VerificationFailed

MAX_IDENTIFIER = 63  # NAMEDATALEN - 1, in bytes

USER_TABLES = r"""
SELECT n.nspname, c.relname
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND c.relpersistence <> 't'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\_toast%' AND n.nspname NOT LIKE 'pg\_temp\_%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d
                  WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 1, 2
"""


def derived_name(base: str, suffix: str) -> str:
    """`<base><suffix>` cut to fit PostgreSQL's 63-byte identifiers (the suffix is kept whole)."""
    room = MAX_IDENTIFIER - len(suffix.encode())
    cut = base.encode()[:room].decode(errors="ignore")
    return cut + suffix


def user_tables(conn: psycopg.Connection[Any]) -> list[tuple[str, str]]:
    """Ordinary tables that pg_dump dumps with their data (not extension-owned, not temporary)."""
    return [(str(s), str(t)) for s, t in conn.execute(USER_TABLES).fetchall()]


def qualified(schema: str, table: str) -> str:
    return f"{schema}.{table}"


def split_qualified(name: str) -> tuple[str, str]:
    schema, _, table = name.partition(".")
    return schema, table


def lock_shared(conn: psycopg.Connection[Any], tables: list[tuple[str, str]], timeout: str) -> None:
    """ACCESS SHARE on every table (blocks only DDL), waiting at most `timeout` (transaction-local)."""
    if not tables:
        return
    conn.execute("SELECT set_config('lock_timeout', %s, true)", (timeout,))
    names = sql.SQL(", ").join(sql.SQL("{}.{}").format(sql.Identifier(s), sql.Identifier(t)) for s, t in tables)
    conn.execute(sql.SQL("LOCK TABLE {} IN ACCESS SHARE MODE").format(names))
    conn.execute("SELECT set_config('lock_timeout', '0', true)")


def count_rows(conn: psycopg.Connection[Any], tables: list[tuple[str, str]]) -> dict[str, int]:
    """Exact row counts (count(*) streams on the server; nothing comes back but the number)."""
    counts: dict[str, int] = {}
    for schema, table in tables:
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(table)))
        counts[qualified(schema, table)] = int(row.fetchone()[0])  # type: ignore[index]
    return counts


def compare_counts(expected: dict[str, int], url: str) -> list[str]:
    """Differences between the manifest's row counts and the database at `url` (empty = equal)."""
    problems: list[str] = []
    with connection(url) as conn:
        present = {qualified(s, t) for s, t in user_tables(conn)}
        for name, want in sorted(expected.items()):
            if name not in present:
                problems.append(f"{name} is missing")
                continue
            got = count_rows(conn, [split_qualified(name)])[name]
            if got != want:
                problems.append(f"{name} has {got} rows, the manifest says {want}")
    return problems


def check_counts(expected: dict[str, int], url: str, what: str) -> None:
    problems = compare_counts(expected, url)
    if problems:
        shown = "; ".join(problems[:5]) + (f"; … {len(problems) - 5} more" if len(problems) > 5 else "")
        raise VerificationFailed(f"{what} differs from the manifest: {shown}")


def create_restore_target(admin: psycopg.Connection[Any], name: str, like: str | None) -> None:
    """An empty database to restore an archive into, with the encoding and locale of `like` when that
    database exists. From template0: objects someone added to template1 would collide with the restore."""
    create_database_on(admin, name, template="template0", locale_of=like)
