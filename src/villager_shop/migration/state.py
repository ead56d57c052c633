"""Reading and writing the migration's state (schema `villager_migration`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from villager_shop.core.db import relation_exists

SCHEMA = "villager_migration"

# Phases, in order. `completed` and `rolled_back` are final until a new `run`.
# The validated state of every constraint on the legacy tables when the run started (rollback
# gives it back): [[table, constraint, validated], ...].
CONSTRAINTS_FOUND = "legacy_constraints"

PHASES = ("not_started", "expanding", "backfilling", "validating", "migrated", "completing", "completed",
          "rolling_back", "rolled_back")


def schema_exists(conn: psycopg.Connection[Any]) -> bool:
    return relation_exists(conn, "villager_migration.state")


def get(conn: psycopg.Connection[Any], key: str, default: Any = None) -> Any:
    if not schema_exists(conn):
        return default
    row = conn.execute("SELECT value FROM villager_migration.state WHERE key = %s", (key,)).fetchone()
    return default if row is None else row[0]


def put(conn: psycopg.Connection[Any], key: str, value: Any) -> None:
    conn.execute(
        """INSERT INTO villager_migration.state (key, value, updated_at) VALUES (%s, %s, now())
           ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = now()""",
        (key, Jsonb(value)),
    )


def phase(conn: psycopg.Connection[Any]) -> str:
    return str(get(conn, "phase", "not_started"))


def settled_phase(conn: psycopg.Connection[Any]) -> str:
    """The phase, with an unfinished `complete` settled. `completing` is written just before the
    one-transaction cut that drops the legacy columns: if they are still there, the cut never
    happened (it failed, or the process died waiting for its locks) and the migration is still
    `migrated`; rollback, run and complete all go on from there."""
    current = phase(conn)
    if current == "completing" and conn.execute(
            "SELECT count(*) FROM pg_attribute WHERE attrelid = to_regclass('public.products')"
            " AND attname = 'price' AND NOT attisdropped").fetchone()[0]:  # type: ignore[index]
        set_phase(conn, "migrated")
        return "migrated"
    return current


def set_phase(conn: psycopg.Connection[Any], value: str) -> None:
    assert value in PHASES, value
    put(conn, "phase", value)
    event(conn, None, "phase", f"phase: {value}")


def event(conn: psycopg.Connection[Any], step: str | None, kind: str, message: str, data: Any = None) -> None:
    conn.execute(
        "INSERT INTO villager_migration.events (step, kind, message, data) VALUES (%s, %s, %s, %s)",
        (step, kind, message, Jsonb(data) if data is not None else None),
    )


@dataclass
class StepRow:
    name: str
    position: int
    status: str
    attempts: int
    started_at: datetime | None
    finished_at: datetime | None
    last_error: str | None
    detail: dict[str, Any]


def register_steps(conn: psycopg.Connection[Any], names: list[str]) -> None:
    for pos, name in enumerate(names):
        conn.execute(
            """INSERT INTO villager_migration.steps (name, position) VALUES (%s, %s)
               ON CONFLICT (name) DO UPDATE SET position = EXCLUDED.position""",
            (name, pos),
        )


def steps(conn: psycopg.Connection[Any]) -> list[StepRow]:
    if not schema_exists(conn):
        return []
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            "SELECT name, position, status, attempts, started_at, finished_at, last_error, detail"
            " FROM villager_migration.steps ORDER BY position"
        ).fetchall()
    return [StepRow(**r) for r in rows]


def mark(conn: psycopg.Connection[Any], name: str, status: str, *, error: str | None = None,
         detail: dict[str, Any] | None = None) -> None:
    sets = ["status = %(status)s"]
    if status == "running":
        sets += ["attempts = attempts + 1", "started_at = coalesce(started_at, now())", "last_error = NULL"]
    if status in ("done", "undone"):
        sets += ["finished_at = now()"]
    if status == "pending":
        sets += ["started_at = NULL", "finished_at = NULL", "attempts = 0", "last_error = NULL",
                 "detail = '{}'"]
    if error is not None:
        sets += ["last_error = %(error)s"]
    if detail is not None:
        sets += ["detail = detail || %(detail)s"]
    conn.execute(
        f"UPDATE villager_migration.steps SET {', '.join(sets)} WHERE name = %(name)s",
        {"status": status, "error": error, "detail": Jsonb(detail or {}), "name": name},
    )


WITHDRAWN = "withdrawn"  # a step the operator took back alone (`migrate rollback --step`)


def withdrawn(conn: psycopg.Connection[Any]) -> dict[str, dict[str, Any]]:
    """Withdrawn steps, with who withdrew them, when and why."""
    if not schema_exists(conn):
        return {}
    return {r.name: dict(r.detail.get("withdrawn") or {}) for r in steps(conn) if r.status == WITHDRAWN}


def record_constraints(conn: psycopg.Connection[Any], tables: tuple[str, ...]) -> None:
    rows = conn.execute(
        "SELECT c.relname, k.conname, k.convalidated FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid"
        " WHERE c.relnamespace = 'public'::regnamespace AND c.relname = ANY(%s) AND k.contype IN ('c', 'f')"
        " ORDER BY 1, 2", (list(tables),)).fetchall()
    put(conn, CONSTRAINTS_FOUND, [[t, n, bool(v)] for t, n, v in rows])


def recorded_constraints(conn: psycopg.Connection[Any]) -> list[tuple[str, str, bool]]:
    return [(str(t), str(n), bool(v)) for t, n, v in get(conn, CONSTRAINTS_FOUND) or []]
