"""An independent check of a migrated sample, in SQL of its own (not the engine's verify): the
legacy form and the normalized form of the data, each as rows of (table, key, values...), must be
the same multiset; a fingerprint of either form compares one moment with another (before and
after `complete`, before a run and after its rollback)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import psycopg

ZERO_WIDTH_SQL = "E'\\u200b\\u200c\\u200d\\u2060\\ufeff'"


def key_sql(expr: str) -> str:
    """What makes two spellings one value, written independently of the engine's normalizers:
    zero-width characters out, NFKC, runs of white space (no-break and next-line too) to one space,
    trimmed, lower case; NULL for a blank."""
    return (f"lower(NULLIF(btrim(regexp_replace(normalize(translate({expr}, {ZERO_WIDTH_SQL}, ''), NFKC),"
            f" '[[:space:]\\u0085\\u00a0]+', ' ', 'g')), ''))")


def differences(conn: psycopg.Connection[Any], legacy: str, normalized: str, examples: int = 10
                ) -> tuple[int, list[tuple[Any, ...]]]:
    """Rows in one form and not the other (multiset difference both ways): their count and a few."""
    diff = (f"(SELECT 'legacy only' AS side, * FROM (({legacy}) EXCEPT ALL ({normalized})) a)"
            f" UNION ALL (SELECT 'normalized only', * FROM (({normalized}) EXCEPT ALL ({legacy})) b)")
    n = conn.execute(f"SELECT count(*) FROM ({diff}) d").fetchone()
    rows = conn.execute(f"SELECT * FROM ({diff}) d ORDER BY 2, 3 LIMIT {int(examples)}").fetchall()
    return int(n[0]) if n else 0, rows


def fingerprint(conn: psycopg.Connection[Any], query: str) -> tuple[int, str]:
    """Row count and md5 of the query's rows in a fixed order (computed by the server)."""
    row = conn.execute(f"SELECT count(*), md5(coalesce(string_agg(x::text, E'\\n' ORDER BY x::text), ''))"
                       f" FROM ({query}) x").fetchone()
    assert row is not None
    return int(row[0]), str(row[1])


def tables_fingerprint(conn: psycopg.Connection[Any], tables: Mapping[str, str]) -> dict[str, Any]:
    """Tables (name -> key column) as they are: every row's text, and their definition (columns,
    constraints with their validation, indexes, triggers). Equal fingerprints: byte-identical tables."""
    out: dict[str, Any] = {}
    for table, key in tables.items():
        rows = fingerprint(conn, f"SELECT t FROM public.{table} t ORDER BY t.{key}")
        columns = conn.execute(
            "SELECT attname, format_type(atttypid, atttypmod), attnotnull, pg_get_expr(d.adbin, d.adrelid)"
            "  FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum"
            " WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            (f"public.{table}",)).fetchall()
        constraints = conn.execute(
            "SELECT conname, pg_get_constraintdef(oid), convalidated FROM pg_constraint"
            " WHERE conrelid = %s::regclass ORDER BY conname", (f"public.{table}",)).fetchall()
        indexes = conn.execute(
            "SELECT pg_get_indexdef(indexrelid), indisvalid FROM pg_index WHERE indrelid = %s::regclass ORDER BY 1",
            (f"public.{table}",)).fetchall()
        triggers = conn.execute(
            "SELECT tgname FROM pg_trigger WHERE tgrelid = %s::regclass AND NOT tgisinternal ORDER BY 1",
            (f"public.{table}",)).fetchall()
        out[table] = {"rows": rows, "columns": columns, "constraints": constraints, "indexes": indexes,
                      "triggers": triggers}
    return out
