"""The rows the migration quarantined on staging, as shares of production's rows, against the
threshold a GO allows."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from villager_shop.legacy.schema import LEGACY_TABLES
from villager_shop.migration import state
from villager_shop.migration.planfile import record

QUARANTINE_EXAMPLES = 3


def quarantine_summary(conn: psycopg.Connection[Any], max_pct: float, touched: set[tuple[str, str]]) -> dict[str, Any]:
    """Shares of production's rows: the rows the synthetic writer inserted, updated or deleted are
    left out of both counts (its rows are messy on purpose; 6 of 30 orders were counted where
    production had 2 of 4)."""
    tables = []
    present = state.schema_exists(conn)
    # The quarantine of the plan the database is migrated with: the built-in plan's (uuid row ids), or
    # a plan file's (text keys, a row per rule), which a plan file rolled back earlier leaves behind.
    plan_file = record.recorded(conn) is not None
    q_table, key, keys = (("villager_migration.plan_quarantine", "row_key", "%s::uuid[]::text[]") if plan_file
                          else ("villager_migration.quarantine", "row_id", "%s::uuid[]"))
    for table in LEGACY_TABLES:
        mine = [row_id for t, row_id in touched if t == table]
        # Whole counts minus the writer's rows found by key (never a scan per row of the table).
        total = int(conn.execute(
            sql.SQL("SELECT (SELECT count(*) FROM public.{t}) - (SELECT count(*) FROM public.{t}"
                    " WHERE id = ANY(%s::uuid[]))").format(t=sql.Identifier(table)),
            (mine,)).fetchone()[0])  # type: ignore[index]
        reasons: dict[str, int] = {}
        if present:
            count = (f"SELECT q.reason, count(*) FROM {q_table} q WHERE q.table_name = %s {{}}"
                     " GROUP BY q.reason")
            theirs = dict(conn.execute(count.format(f"AND q.{key} = ANY({keys})"), (table, mine)).fetchall())
            for r, n_all in sorted(conn.execute(count.format(""), (table,)).fetchall()):
                if n_all - theirs.get(r, 0):
                    reasons[str(r)] = int(n_all - theirs.get(r, 0))
        n = sum(reasons.values())
        if plan_file and len(reasons) > 1:  # a row may be held by several rules: counted once
            n = int(conn.execute(f"SELECT count(DISTINCT q.{key}) FROM {q_table} q WHERE q.table_name = %s"
                                 f" AND NOT q.{key} = ANY({keys})", (table, mine)).fetchone()[0])  # type: ignore[index]
        pct = 100.0 * n / total if total else 0.0
        tables.append({"table": table, "rows": total, "quarantined": n, "pct": round(pct, 3),
                       "reasons": reasons, "over_threshold": pct > max_pct, "writer_rows_left_out": len(mine)})
    examples: list[dict[str, Any]] = []
    if present:
        examples = [{"table": t, "reason": r, "row_id": i, "detail": d} for t, r, i, d in conn.execute(
            f"SELECT table_name, reason, {key}::text, left(detail::text, 240) FROM ("
            f" SELECT q.*, row_number() OVER (PARTITION BY table_name, reason ORDER BY {key}) AS rn"
            f" FROM {q_table} q) x WHERE rn <= %s ORDER BY 1, 2, 3",
            (QUARANTINE_EXAMPLES,)).fetchall()]
    return {"tables": tables, "examples": examples}
