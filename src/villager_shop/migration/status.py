"""Where the migration stands: phase, each step, backfill progress with rate and ETA, quarantine;
and, once migrated, who still reads the legacy columns (readers.py), before anyone runs complete."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row

from villager_shop.core.db import own_timeouts, relation_exists
from villager_shop.migration import readers, state
from villager_shop.migration.control import runtime
from villager_shop.migration.planfile import record
from villager_shop.migration.runner import ADVISORY_KEY
from villager_shop.migration.steps.rebuild import RebuildTable


def status(conn: psycopg.Connection[Any], *, readers_window_s: float = 0.0) -> dict[str, Any]:
    """One transaction under our own timeouts (see core.db.own_timeouts). With `readers_window_s`
    (an autocommit `conn`), a migrated database is also watched that long for statements reading
    the legacy columns: the evidence `complete` would refuse on."""
    with own_timeouts(conn):
        st = _status(conn)
    if readers_window_s > 0 and st["phase"] == "migrated":
        st["readers"] = readers.watch(conn, record.legacy_columns_of(conn), readers_window_s).to_dict()
    return st


def _status(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    name, plan = record.upcoming(conn)
    if not state.schema_exists(conn):
        return {"phase": "not_started", "plan": name, "running": False, "steps": [
            {"name": s.name, "title": s.title, "status": "pending"} for s in plan], "backfill": [],
            "quarantine": {}, "steps_done": 0, "steps_total": len(plan)}
    rows = {r.name: r for r in state.steps(conn)}
    steps = []
    for s in plan:
        r = rows.get(s.name)
        seconds = None
        if r and r.started_at and r.finished_at:
            seconds = round((r.finished_at - r.started_at).total_seconds(), 3)
        steps.append({"name": s.name, "title": s.title, "phase": s.phase, "status": r.status if r else "pending",
                      "attempts": r.attempts if r else 0, "seconds": seconds,
                      "error": r.last_error if r else None})
        if r and r.status == state.WITHDRAWN:
            steps[-1]["withdrawn"] = r.detail.get("withdrawn")
        if isinstance(s, RebuildTable):  # how the table is backfilled, and where the rebuild stands
            rebuild = state.get(conn, s.key) or {}
            steps[-1].update({"method": rebuild.get("method"), "stage": rebuild.get("stage")})
    with conn.cursor(row_factory=dict_row) as cur:
        # A table's backfill runs in parts (`step#k`, one key range each): report it as one.
        bf = cur.execute(
            "WITH parts AS (SELECT split_part(step, '#', 1) AS base, * FROM villager_migration.backfill),"
            " retry AS (SELECT split_part(step, '#', 1) AS base, count(*) AS n FROM villager_migration.backfill_retry"
            "           GROUP BY 1)"
            " SELECT p.base AS step, p.table_name, sum(rows_done)::bigint AS rows_done, sum(rows_total)::bigint AS rows_total,"
            " sum(batches)::bigint AS batches, max(batch_size) AS batch_size, max(elapsed_s) AS elapsed_s,"
            " max(max_batch_ms) AS max_batch_ms, min(started_at) AS started_at, max(updated_at) AS updated_at,"
            " CASE WHEN bool_and(finished_at IS NOT NULL) THEN max(finished_at) END AS finished_at,"
            " count(*) AS parts, coalesce(max(r.n), 0) AS pending_retry, min(p.walk) AS walk"
            " FROM parts p LEFT JOIN retry r ON r.base = p.base GROUP BY p.base, p.table_name"
            " ORDER BY min(started_at)").fetchall()
    backfill = []
    for b in bf:
        # rows_total is counted when the walk starts; rows deleted since are never walked, so a
        # finished walk's total is what it did.
        total = int(b["rows_done"]) if b["finished_at"] else max(int(b["rows_total"] or 0), int(b["rows_done"]))
        rate = float(b["rows_done"]) / b["elapsed_s"] if b["elapsed_s"] else 0.0
        remaining = max(0, total - int(b["rows_done"]))
        backfill.append({
            "step": b["step"], "table": b["table_name"], "rows_done": int(b["rows_done"]), "rows_total": total,
            "percent": round(100.0 * b["rows_done"] / total, 1) if total else 100.0,
            "rows_per_s": round(rate), "eta_s": None if b["finished_at"] else (round(remaining / rate, 1)
                                                                                if rate else None),
            "batches": b["batches"], "batch_size": b["batch_size"], "max_batch_ms": round(b["max_batch_ms"], 1),
            "finished": b["finished_at"] is not None, "pending_retry": int(b["pending_retry"]),
            "parts": int(b["parts"]), "walk": b["walk"],
        })
    quarantine: dict[str, dict[str, int]] = {}
    for table, reason, n in conn.execute(
            "SELECT table_name, reason, count(*) FROM villager_migration.quarantine GROUP BY 1, 2"
            + (" UNION ALL SELECT table_name, reason, count(*) FROM villager_migration.plan_quarantine GROUP BY 1, 2"
               if relation_exists(conn, "villager_migration.plan_quarantine") else "") + " ORDER BY 1, 2"):
        quarantine.setdefault(table, {})[reason] = int(n)
    running = bool(conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND classid = %s AND objid = %s"
        " AND granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database()))",
        ADVISORY_KEY).fetchone()[0])  # type: ignore[index]
    if not running:  # its run was killed or lost its connection: the next `migrate run` resumes it
        for step in steps:
            if step["status"] == "running":
                step["status"] = "interrupted"
    live = runtime(conn)
    throttle = live["throttle"]
    if not running and throttle.get("throttled"):  # written by a run that is gone
        throttle = {**throttle, "throttled": False, "signal": None}
    legacy_writes = conn.execute("SELECT last_value, is_called FROM villager_migration.legacy_writes").fetchone()
    return {
        "phase": state.phase(conn),
        "plan": name,
        "running": running,
        "steps_done": sum(1 for s in steps if s["status"] == "done"),
        "steps_total": len(steps),
        "steps": steps,
        "backfill": backfill,
        "quarantine": quarantine,
        "paused": live["control"]["paused"],
        "control": live["control"],
        "throttle": throttle,
        "legacy_writes_seen": int(legacy_writes[0]) if legacy_writes and legacy_writes[1] else 0,
    }
