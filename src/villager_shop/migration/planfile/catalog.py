"""What the plan needs to know of the live tables (primary keys, column types), read once when a
run starts and recorded with the plan: every later command (status, verify, rollback, complete)
builds the same steps from the record, even after `complete` dropped the legacy columns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg


@dataclass(frozen=True)
class TableInfo:
    key: str | None  # the single-column primary key (None: none, or several columns)
    key_type: str
    columns: dict[str, str] = field(default_factory=dict)  # name -> format_type
    not_null: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Catalog:
    tables: dict[str, TableInfo]

    def table(self, name: str) -> TableInfo:
        return self.tables.get(name) or TableInfo(None, "")

    def to_json(self) -> dict[str, Any]:
        return {t: {"key": i.key, "key_type": i.key_type, "columns": i.columns, "not_null": sorted(i.not_null)}
                for t, i in self.tables.items()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Catalog:
        return cls({t: TableInfo(v.get("key"), v.get("key_type", ""), dict(v.get("columns", {})),
                                 frozenset(v.get("not_null", []))) for t, v in (data or {}).items()})


def read(conn: psycopg.Connection[Any], tables: list[str]) -> Catalog:
    out: dict[str, TableInfo] = {}
    for table in tables:
        cols = conn.execute(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull FROM pg_attribute a"
            " WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            (f"public.{table}",)).fetchall()
        if not cols:
            continue
        pk = conn.execute(
            "SELECT array_agg(a.attname ORDER BY a.attnum), min(format_type(a.atttypid, a.atttypmod))"
            " FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)"
            " WHERE i.indrelid = to_regclass(%s) AND i.indisprimary", (f"public.{table}",)).fetchone()
        names = list(pk[0] or []) if pk else []
        key, key_type = (str(names[0]), str(pk[1])) if pk and len(names) == 1 else (None, "")
        out[table] = TableInfo(key, key_type, {str(c): str(t) for c, t, _ in cols},
                               frozenset(str(c) for c, _, nn in cols if nn))
    return Catalog(out)
