"""Performance baselines: `baseline capture | list | diff`.

Why: the guide's "performance baseline" is one query whose output scrolls away; to know whether the
migration made things better or worse we need the numbers *kept* and compared. A capture stores the
cumulative statistics (pg_stat_user_tables, pg_stat_user_indexes, sizes, and pg_stat_statements when it
is loaded) in `villager_baseline.snapshots` inside the shop database, so they travel with it; a diff
subtracts two captures. Counters are cumulative since the last statistics reset, so a diff is the
activity *between* the captures, and the first capture also tells how the tables were used before.

pg_stat_statements needs `shared_preload_libraries`; when it is not loaded (the stock Debian server)
captures simply have no statement section (SPEC defect 8: never assume it).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from villager_shop.core.db import connection, relation_exists
from villager_shop.core.errors import RefusedError, VillagerError

SCHEMA = "villager_baseline"
TOP_STATEMENTS = 25

DDL = f"""
CREATE SCHEMA IF NOT EXISTS {SCHEMA};
CREATE TABLE IF NOT EXISTS {SCHEMA}.snapshots (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name               text NOT NULL UNIQUE,
    captured_at        timestamptz NOT NULL DEFAULT now(),
    server_version_num integer NOT NULL,
    stats_reset        timestamptz,
    tables             jsonb NOT NULL,
    indexes            jsonb NOT NULL,
    statements         jsonb,            -- NULL: pg_stat_statements not loaded
    statements_note    text
);
"""

# The guide's query (Pre-Migration Checklist, "Performance Baseline") plus sizes.
TABLES_SQL = f"""
SELECT s.schemaname || '.' || s.relname AS "table",
       s.n_tup_ins, s.n_tup_upd, s.n_tup_del, s.seq_scan, s.seq_tup_read,
       coalesce(s.idx_scan, 0) AS idx_scan, coalesce(s.idx_tup_fetch, 0) AS idx_tup_fetch,
       s.n_live_tup, s.n_dead_tup,
       coalesce(pg_table_size(s.relid), 0) AS table_bytes,
       coalesce(pg_indexes_size(s.relid), 0) AS index_bytes
FROM pg_stat_user_tables s
WHERE s.schemaname <> '{SCHEMA}'
ORDER BY s.seq_tup_read DESC, 1
"""

INDEXES_SQL = f"""
SELECT s.schemaname || '.' || s.indexrelname AS "index", s.schemaname || '.' || s.relname AS "table",
       s.idx_scan, s.idx_tup_read, s.idx_tup_fetch,
       coalesce(pg_relation_size(s.indexrelid), 0) AS bytes, pg_get_indexdef(s.indexrelid) AS definition
FROM pg_stat_user_indexes s
WHERE s.schemaname <> '{SCHEMA}'
ORDER BY 2, 1
"""

# Our own capture queries (and other monitoring reads) are left out: they are not the shop's workload.
STATEMENTS_SQL = """
SELECT queryid::text AS queryid, left(query, 1000) AS query, calls, total_exec_time, mean_exec_time, rows
FROM {schema}.pg_stat_statements
WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND query !~* '(villager_baseline|pg_stat_user_(tables|indexes)|pg_stat_statements|pg_available_extensions)'
ORDER BY mean_exec_time DESC
LIMIT %s
"""


@dataclass
class Snapshot:
    name: str
    captured_at: datetime
    server_version_num: int
    stats_reset: datetime | None
    tables: list[dict[str, Any]]
    indexes: list[dict[str, Any]]
    statements: list[dict[str, Any]] | None
    statements_note: str | None


def _rows(cur: psycopg.Cursor[Any]) -> list[dict[str, Any]]:
    names = [d.name for d in cur.description or []]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def _statements(conn: psycopg.Connection[Any], top: int) -> tuple[list[dict[str, Any]] | None, str | None]:
    """Top statements by mean time, or (None, why not)."""
    if conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'pg_stat_statements'").fetchone() is None:
        return None, "pg_stat_statements is not installed on this server"
    try:
        with conn.transaction():
            preload = str(conn.execute("SELECT current_setting('shared_preload_libraries')").fetchone()[0])  # type: ignore[index]
    except psycopg.Error:
        preload = None  # not allowed to read it: just try
    if preload is not None and "pg_stat_statements" not in preload:
        return None, "pg_stat_statements is not in shared_preload_libraries; statement timings skipped"
    try:
        with conn.transaction():
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    except psycopg.Error:
        pass  # no privilege: it may still exist
    row = conn.execute(
        "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace"
        " WHERE e.extname = 'pg_stat_statements'"
    ).fetchone()
    if row is None:
        return None, "extension pg_stat_statements could not be created in this database"
    from psycopg import sql

    query = sql.SQL(STATEMENTS_SQL).format(schema=sql.Identifier(str(row[0])))
    try:
        with conn.transaction():
            rows = _rows(conn.execute(query, (top,)))
    except psycopg.Error as exc:
        return None, f"pg_stat_statements unreadable: {str(exc).strip().splitlines()[0]}"
    for r in rows:
        r["total_exec_time"] = float(r["total_exec_time"])
        r["mean_exec_time"] = float(r["mean_exec_time"])
    return rows, None


def capture(url: str, name: str, *, replace: bool = False, top: int = TOP_STATEMENTS) -> Snapshot:
    """Store the current statistics under `name` (refuses an existing name unless `replace`)."""
    if not name.strip():
        raise VillagerError("a baseline needs a non-empty name")
    with connection(url, application_name="villager-shop baseline") as conn:
        conn.execute(DDL)
        conn.commit()
        if conn.execute(f"SELECT 1 FROM {SCHEMA}.snapshots WHERE name = %s", (name,)).fetchone() and not replace:
            raise RefusedError(f"baseline {name!r} exists; pick another name or pass --replace")
        statements, note = _statements(conn, top)
        tables = _rows(conn.execute(TABLES_SQL))
        indexes = _rows(conn.execute(INDEXES_SQL))
        meta = conn.execute(
            "SELECT now(), current_setting('server_version_num')::int, stats_reset"
            " FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
        assert meta is not None
        conn.execute(f"DELETE FROM {SCHEMA}.snapshots WHERE name = %s", (name,))
        conn.execute(
            f"INSERT INTO {SCHEMA}.snapshots (name, captured_at, server_version_num, stats_reset, tables, indexes,"
            " statements, statements_note) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            (name, meta[0], meta[1], meta[2], Jsonb(tables), Jsonb(indexes),
             None if statements is None else Jsonb(statements), note),
        )
    return Snapshot(name, meta[0], meta[1], meta[2], tables, indexes, statements, note)


def _schema_exists(conn: psycopg.Connection[Any]) -> bool:
    return relation_exists(conn, f"{SCHEMA}.snapshots")


def list_snapshots(url: str) -> list[Snapshot]:
    with connection(url, application_name="villager-shop baseline") as conn:
        if not _schema_exists(conn):
            return []
        rows = conn.execute(
            f"SELECT name, captured_at, server_version_num, stats_reset, tables, indexes, statements,"
            f" statements_note FROM {SCHEMA}.snapshots ORDER BY captured_at, id"
        ).fetchall()
    return [Snapshot(*row) for row in rows]


def load(url: str, name: str) -> Snapshot:
    with connection(url, application_name="villager-shop baseline") as conn:
        row = None
        if _schema_exists(conn):
            row = conn.execute(
                f"SELECT name, captured_at, server_version_num, stats_reset, tables, indexes, statements,"
                f" statements_note FROM {SCHEMA}.snapshots WHERE name = %s",
                (name,),
            ).fetchone()
    if row is None:
        raise VillagerError(f"unknown baseline {name!r} (see `villager-shop baseline list`)")
    return Snapshot(*row)


# --- diff -----------------------------------------------------------------------------------------


@dataclass
class TableChange:
    table: str
    seq_scan: int  # deltas between the captures
    idx_scan: int
    seq_tup_read: int
    idx_tup_fetch: int
    n_tup_ins: int
    n_tup_upd: int
    n_tup_del: int
    seq_scan_before: int  # cumulative at the first capture: how the table was read before
    idx_scan_before: int
    table_bytes_before: int
    table_bytes_after: int
    index_bytes_before: int
    index_bytes_after: int
    new: bool = False
    reset: bool = False  # a counter went down: statistics were reset, deltas are counts since then


@dataclass
class IndexChange:
    index: str
    table: str
    status: str  # new | dropped | kept
    idx_scan: int  # delta for kept indexes, total for new ones, 0 for dropped
    bytes_before: int
    bytes_after: int
    definition: str


@dataclass
class BaselineDiff:
    before: str
    after: str
    before_at: str
    after_at: str
    tables: list[TableChange] = field(default_factory=list)
    seq_to_index: list[str] = field(default_factory=list)
    indexes: list[IndexChange] = field(default_factory=list)
    statements_before: list[dict[str, Any]] | None = None
    statements_after: list[dict[str, Any]] | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_COUNTERS = ("seq_scan", "idx_scan", "seq_tup_read", "idx_tup_fetch", "n_tup_ins", "n_tup_upd", "n_tup_del")


def _delta(after: dict[str, Any], before: dict[str, Any] | None, key: str) -> tuple[int, bool]:
    b = int((before or {}).get(key) or 0)
    a = int(after.get(key) or 0)
    return (a, True) if a < b else (a - b, False)


def diff(a: Snapshot, b: Snapshot, *, top: int = 10) -> BaselineDiff:
    """What changed from capture `a` to capture `b`."""
    out = BaselineDiff(a.name, b.name, a.captured_at.isoformat(), b.captured_at.isoformat())
    if a.captured_at > b.captured_at:
        out.notes.append(f"{a.name!r} was captured after {b.name!r}: deltas are negative in time")
    if a.stats_reset != b.stats_reset:
        out.notes.append("statistics were reset between the captures: counts are since the reset")
    before_tables = {t["table"]: t for t in a.tables}
    for t in b.tables:
        prev = before_tables.get(t["table"])
        deltas: dict[str, int] = {}
        reset = False
        for key in _COUNTERS:
            deltas[key], r = _delta(t, prev, key)
            reset |= r and prev is not None
        change = TableChange(
            table=t["table"], **deltas,
            seq_scan_before=int((prev or {}).get("seq_scan") or 0),
            idx_scan_before=int((prev or {}).get("idx_scan") or 0),
            table_bytes_before=int((prev or {}).get("table_bytes") or 0), table_bytes_after=int(t["table_bytes"]),
            index_bytes_before=int((prev or {}).get("index_bytes") or 0), index_bytes_after=int(t["index_bytes"]),
            new=prev is None, reset=reset,
        )
        out.tables.append(change)
        # Mostly sequential before the first capture, mostly by index between the captures.
        if (prev is not None and change.seq_scan_before > change.idx_scan_before
                and change.idx_scan > change.seq_scan):
            out.seq_to_index.append(change.table)
    out.tables.sort(key=lambda c: (-(abs(c.seq_scan) + abs(c.idx_scan)), c.table))
    before_idx = {i["index"]: i for i in a.indexes}
    after_idx = {i["index"]: i for i in b.indexes}
    for name, i in after_idx.items():
        prev = before_idx.get(name)
        scans, _ = _delta(i, prev, "idx_scan")
        out.indexes.append(IndexChange(
            name, i["table"], "kept" if prev else "new", scans,
            int((prev or {}).get("bytes") or 0), int(i["bytes"]), str(i.get("definition") or "")))
    for name, i in before_idx.items():
        if name not in after_idx:
            out.indexes.append(IndexChange(name, i["table"], "dropped", 0, int(i["bytes"]), 0,
                                           str(i.get("definition") or "")))
    order = {"new": 0, "dropped": 1, "kept": 2}
    out.indexes.sort(key=lambda c: (order[c.status], -c.idx_scan, c.index))
    out.statements_before = None if a.statements is None else a.statements[:top]
    out.statements_after = None if b.statements is None else b.statements[:top]
    for snap in (a, b):
        if snap.statements is None:
            out.notes.append(f"{snap.name!r} has no statement timings: {snap.statements_note}")
    return out
