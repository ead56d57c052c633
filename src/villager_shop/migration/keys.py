"""The key a backfill walks by: any single-column primary key (the villager tables' `id uuid`, a
blog's `id bigserial`, `isbn text`, `post_id integer`, ...), and how its key space is split into the
ranges the walk's parallel parts take.

Every comparison the walk makes involves the table's own column (or a bound read from it), so it is
made in the column's collation, as its index orders it; a bound is kept as text and cast back with
the key's SQL type."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any

import psycopg

_IDENT = r'(?:[A-Za-z_][A-Za-z0-9_$]*|"(?:[^"\x00]|"")+")'
_TYPMOD = r"(?:\(\d+(?:, ?\d+)?\))"
# What format_type() writes: a (qualified) name, a type modifier, and the words of the SQL
# standard's multi-word names; nothing that could end the cast and go on with other SQL.
_WORDS = r"(?: (?:varying|precision|with|without|time|zone|year|month|day|hour|minute|second|to))"
_SQLTYPE = re.compile(rf"{_IDENT}(?:\.{_IDENT})?{_TYPMOD}?(?:{_WORDS}{_TYPMOD}?)*")
_PLAIN = re.compile(r"[a-z_][a-z0-9_]*")
INTEGER_TYPES = frozenset({"smallint", "integer", "bigint"})


@dataclass(frozen=True)
class Key:
    """A single-column primary key: its column and its SQL type as format_type() writes it."""

    column: str = "id"
    sqltype: str = "uuid"

    def __post_init__(self) -> None:
        if not self.column or "\x00" in self.column or len(self.column.encode()) > 63:
            raise ValueError(f"not a column name: {self.column!r}")
        if not _SQLTYPE.fullmatch(self.sqltype):
            raise ValueError(f"not an SQL type name: {self.sqltype!r}")

    @property
    def ident(self) -> str:
        """The column as SQL: quoted, but for the villager tables' `id` (their SQL stays as it was)."""
        if self.column == "id":
            return "id"
        return '"' + self.column.replace('"', '""') + '"'

    @property
    def is_uuid(self) -> bool:
        return self.sqltype == "uuid"


VILLAGER_KEY = Key()


def primary_key(conn: psycopg.Connection[Any], table: str) -> Key | None:
    """The single-column primary key of `table` (`public.` unless qualified), or None when it has
    none or a composite one."""
    name = table if "." in table else f"public.{table}"
    row = conn.execute(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_index i"
        " JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]"
        " WHERE i.indrelid = to_regclass(%s) AND i.indisprimary AND i.indnkeyatts = 1 AND i.indkey[0] > 0",
        (name,)).fetchone()
    return Key(str(row[0]), str(row[1])) if row else None


@dataclass(frozen=True)
class KeyRange:
    """The keys a part walks: above `lo` (None: from the first key; `lo` itself too when
    `lo_inclusive`) up to `hi` included (None: to the last key). Bounds are text, cast with the
    key's type."""

    lo: str | None
    hi: str | None
    lo_inclusive: bool = False


def uuid_ranges(parts: int) -> list[KeyRange]:
    """Split the uuid key space into `parts` contiguous ranges (random v4 keys spread evenly)."""
    top = 1 << 128
    bounds = [top * k // parts for k in range(parts + 1)]
    return [KeyRange(str(uuid.UUID(int=bounds[k])), str(uuid.UUID(int=bounds[k + 1] - 1)), True)
            for k in range(parts)]


def split_at(bounds: list[str]) -> list[KeyRange]:
    """Ranges ending at each bound (included), the last one open: together they cover every key."""
    edges: list[str | None] = [None, *bounds, None]
    return [KeyRange(edges[k], edges[k + 1]) for k in range(len(bounds) + 1)]


def key_ranges(conn: psycopg.Connection[Any], table: str, key: Key, parts: int) -> list[KeyRange]:
    """At most `parts` ranges covering every key (fewer when the table has fewer keys to split at).
    uuid: the key space split evenly (needs no reading); integers: [min, max] split evenly; any
    other type: at quantiles of a sample of the table's pages, ordered as the key's index orders."""
    if key.is_uuid:
        return uuid_ranges(parts)
    if parts <= 1:
        return [KeyRange(None, None)]
    c = key.ident
    if key.sqltype in INTEGER_TYPES:
        row = conn.execute(f"SELECT min({c})::text, max({c})::text FROM public.{table}").fetchone()
        if not row or row[0] is None:
            return [KeyRange(None, None)]
        lo, hi = int(row[0]), int(row[1])
        span = hi - lo + 1
        bounds = sorted({lo + span * j // parts - 1 for j in range(1, parts)} - {lo - 1})
        return split_at([str(b) for b in bounds])
    # Pages sampled: enough for a few thousand keys per part, the whole table when it is small.
    pages = conn.execute("SELECT pg_relation_size(%s::regclass) / current_setting('block_size')::bigint",
                         (f"public.{table}",)).fetchone()
    percent = min(100.0, 100.0 * 64 * parts / max(1, int(pages[0]) if pages else 1))
    rows = conn.execute(
        f"WITH s AS (SELECT k, row_number() OVER (ORDER BY k) AS rn, count(*) OVER () AS n"
        f" FROM (SELECT {c} AS k FROM public.{table} TABLESAMPLE SYSTEM (%(pct)s)) z)"
        " SELECT k::text FROM s WHERE rn IN (SELECT s.n * j / %(parts)s FROM generate_series(1, %(parts)s - 1) j)"
        " ORDER BY rn", {"pct": percent, "parts": parts}).fetchall()
    return split_at([str(r[0]) for r in rows])


def key_bounds(key: Key, lower: str | None, upper: bool, param_lo: str = "lo", param_hi: str = "hi",
               alias: str = "") -> str:
    """A WHERE condition (`true` when unbounded): the key `lower` ('>', '>=' or None) %(lo)s and
    at most %(hi)s (when `upper`)."""
    c = f"{alias}{key.ident}"
    conds = []
    if lower:
        conds.append(f"{c} {lower} %({param_lo})s::{key.sqltype}")
    if upper:
        conds.append(f"{c} <= %({param_hi})s::{key.sqltype}")
    return " AND ".join(conds) or "true"
