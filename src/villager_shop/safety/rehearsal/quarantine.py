"""The rows the migration quarantined on staging, as shares of production's rows, against the
threshold a GO allows."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from villager_shop.legacy.schema import LEGACY_TABLES
from villager_shop.migration import state

QUARANTINE_EXAMPLES = 3


def quarantine_summary(conn: psycopg.Connection[Any], max_pct: float, touched: set[tuple[str, str]]) -> dict[str, Any]:
    """Shares of production's rows: the rows the synthetic writer inserted, updated or deleted are
    left out of both counts (its rows are messy on purpose; 6 of 30 orders were counted where
    production had 2 of 4)."""
    tables = []
    present = state.schema_exists(conn)
    for table in LEGACY_TABLES:
        mine = [row_id for t, row_id in touched if t == table]
        # Whole counts minus the writer's rows found by key (never a scan per row of the table).
        total = int(conn.execute(
            sql.SQL("SELECT (SELECT count(*) FROM public.{t}) - (SELECT count(*) FROM public.{t}"
                    " WHERE id = ANY(%s::uuid[]))").format(t=sql.Identifier(table)),
            (mine,)).fetchone()[0])  # type: ignore[index]
        reasons: dict[str, int] = {}
        if present:
            count = ("SELECT q.reason, count(*) FROM villager_migration.quarantine q WHERE q.table_name = %s {}"
                     " GROUP BY q.reason")
            theirs = dict(conn.execute(count.format("AND q.row_id = ANY(%s::uuid[])"), (table, mine)).fetchall())
            for r, n_all in sorted(conn.execute(count.format(""), (table,)).fetchall()):
                if n_all - theirs.get(r, 0):
                    reasons[str(r)] = int(n_all - theirs.get(r, 0))
        n = sum(reasons.values())
        pct = 100.0 * n / total if total else 0.0
        tables.append({"table": table, "rows": total, "quarantined": n, "pct": round(pct, 3),
                       "reasons": reasons, "over_threshold": pct > max_pct, "writer_rows_left_out": len(mine)})
    examples: list[dict[str, Any]] = []
    if state.schema_exists(conn):
        examples = [{"table": t, "reason": r, "row_id": i, "detail": d} for t, r, i, d in conn.execute(
            "SELECT table_name, reason, row_id::text, left(detail::text, 240) FROM ("
            " SELECT q.*, row_number() OVER (PARTITION BY table_name, reason ORDER BY row_id) AS rn"
            " FROM villager_migration.quarantine q) x WHERE rn <= %s ORDER BY 1, 2, 3",
            (QUARANTINE_EXAMPLES,)).fetchall()]
    return {"tables": tables, "examples": examples}
