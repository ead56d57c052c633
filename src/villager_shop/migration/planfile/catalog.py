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
    defaults: dict[str, str] = field(default_factory=dict)  # column -> its default expression
    # Validated CHECK constraints: (name, definition as pg_get_constraintdef prints it, columns used).
    checks: tuple[tuple[str, str, tuple[str, ...]], ...] = ()
    # Indexes the table had when the run began: one a foreign key needs may be there already (the
    # plan then builds none, and rollback leaves it).
    indexes: frozenset[str] = frozenset()
    # Single-column foreign keys: column -> the table of schema public it references.
    references: dict[str, str] = field(default_factory=dict)
    # The first column of each of its indexes: a column an index can look rows up by.
    leading: frozenset[str] = frozenset()
    # Columns whose default calls a volatile function (random(), nextval(), clock_timestamp()): a
    # trigger that evaluates the default again gets another value, so it cannot tell a row that was
    # given the default from one that was given a value.
    volatile: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Catalog:
    tables: dict[str, TableInfo]

    def table(self, name: str) -> TableInfo:
        return self.tables.get(name) or TableInfo(None, "")

    def to_json(self) -> dict[str, Any]:
        return {t: {"key": i.key, "key_type": i.key_type, "columns": i.columns, "not_null": sorted(i.not_null),
                    "defaults": i.defaults, "checks": [[n, d, list(c)] for n, d, c in i.checks],
                    "indexes": sorted(i.indexes), "references": i.references,
                    "leading": sorted(i.leading), "volatile": sorted(i.volatile)}
                for t, i in self.tables.items()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Catalog:
        return cls({t: TableInfo(v.get("key"), v.get("key_type", ""), dict(v.get("columns", {})),
                                 frozenset(v.get("not_null", [])), dict(v.get("defaults", {})),
                                 tuple((str(n), str(d), tuple(c)) for n, d, c in v.get("checks", [])),
                                 frozenset(v.get("indexes", [])), dict(v.get("references", {})),
                                 frozenset(v.get("leading", [])), frozenset(v.get("volatile", [])))
                    for t, v in (data or {}).items()})


# The columns of the tables $1 whose default calls a volatile function, in one query for all tables.
# A function's name is looked for as a plain substring first (cheap): the regular expression, built
# and compiled per function, runs only where the name occurs (or is not ASCII, where case folding
# may differ), not for every volatile function against every default (0.1 s a table).
_VOLATILE = r"""
WITH d AS MATERIALIZED (
  SELECT t.name, a.attname, e.expr, lower(e.expr) AS folded
    FROM unnest(%s::text[]) AS t(name)
    JOIN pg_attrdef d ON d.adrelid = to_regclass('public.' || t.name)
    JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum
   CROSS JOIN LATERAL (SELECT pg_get_expr(d.adbin, d.adrelid) AS expr) e
   WHERE a.attgenerated = ''),
v AS MATERIALIZED (
  SELECT p.proname::text AS name, lower(p.proname::text) AS folded, p.proname::text ~ '[^\x01-\x7f]' AS wide
    FROM pg_proc p WHERE p.provolatile = 'v')
SELECT d.name, d.attname FROM d WHERE EXISTS (
  SELECT 1 FROM v WHERE CASE WHEN NOT v.wide AND strpos(d.folded, v.folded) = 0 THEN false
    ELSE d.expr ~* ('(^|[^[:alnum:]_$])' || regexp_replace(v.name, '([^[:alnum:]_])', '\\\1', 'g') || '\s*\(') END)
"""


def read(conn: psycopg.Connection[Any], tables: list[str]) -> Catalog:
    out: dict[str, TableInfo] = {}
    volatile_of: dict[str, list[str]] = {}
    for table, column in conn.execute(_VOLATILE, (list(tables),)).fetchall():
        volatile_of.setdefault(str(table), []).append(str(column))
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
        defaults = conn.execute(
            "SELECT a.attname, pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d"
            " JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum"
            " WHERE d.adrelid = to_regclass(%s) AND a.attgenerated = ''", (f"public.{table}",)).fetchall()
        volatile = volatile_of.get(table, [])
        checks = conn.execute(
            "SELECT k.conname, pg_get_constraintdef(k.oid),"
            "       array(SELECT a.attname FROM pg_attribute a WHERE a.attrelid = k.conrelid"
            "              AND a.attnum = ANY(k.conkey) ORDER BY a.attnum)"
            "  FROM pg_constraint k WHERE k.conrelid = to_regclass(%s) AND k.contype = 'c' AND k.convalidated"
            " ORDER BY k.conname", (f"public.{table}",)).fetchall()
        indexes = conn.execute("SELECT c.relname, CASE WHEN i.indpred IS NULL AND i.indisvalid THEN a.attname END"
                               "  FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
                               " LEFT JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]"
                               " WHERE i.indrelid = to_regclass(%s)",
                               (f"public.{table}",)).fetchall()
        references = conn.execute(
            "SELECT a.attname, r.relname FROM pg_constraint k"
            "  JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = k.conkey[1]"
            "  JOIN pg_class r ON r.oid = k.confrelid"
            " WHERE k.conrelid = to_regclass(%s) AND k.contype = 'f' AND cardinality(k.conkey) = 1"
            "   AND r.relnamespace = 'public'::regnamespace", (f"public.{table}",)).fetchall()
        out[table] = TableInfo(key, key_type, {str(c): str(t) for c, t, _ in cols},
                               frozenset(str(c) for c, _, nn in cols if nn),
                               {str(c): str(e) for c, e in defaults},
                               tuple((str(n), str(d), tuple(str(c) for c in cs)) for n, d, cs in checks),
                               frozenset(str(n) for n, _ in indexes), {str(c): str(r) for c, r in references},
                               frozenset(str(a) for _, a in indexes if a is not None),
                               frozenset(volatile))
    return Catalog(out)
