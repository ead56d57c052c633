"""COPY rows into a table as they are generated: the server receives them in chunks, and no table
is ever held whole in memory on either side."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import psycopg
from psycopg import sql


def copy_rows(conn: psycopg.Connection[Any], table: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
    """Stream `rows` (any iterable, typically a generator) into `table` by COPY; the count written."""
    stmt = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table), sql.SQL(", ").join(sql.Identifier(c) for c in columns))
    done = 0
    with conn.cursor() as cur, cur.copy(stmt) as copy:
        for row in rows:
            copy.write_row(row)
            done += 1
    return done


def reset_sequence(conn: psycopg.Connection[Any], table: str, column: str) -> None:
    """After a COPY of explicit keys, the key's sequence (serial or identity) continues above them."""
    conn.execute(sql.SQL("SELECT setval(pg_get_serial_sequence({t}, {c}), coalesce(max({col}), 0) + 1, false)"
                         " FROM {table}").format(t=sql.Literal(table), c=sql.Literal(column),
                                                 col=sql.Identifier(column), table=sql.Identifier(table)))
