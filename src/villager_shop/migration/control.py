"""Runtime control of a running migration, from any machine: the operator's word is a row in the
database (`villager_migration.state`, key `control`) that the running walkers read between
batches. Pausing holds the backfill only: the sync triggers keep both representations in step."""

from __future__ import annotations

import time
from typing import Any

import psycopg

from villager_shop.core.errors import RefusedError
from villager_shop.migration import state
from villager_shop.migration.throttle import CONTROL_KEY, STATUS_KEY, Control, who


def _control(conn: psycopg.Connection[Any]) -> Control:
    if not state.schema_exists(conn):
        raise RefusedError("no migration has started on this database: nothing to control")
    return Control.from_json(state.get(conn, CONTROL_KEY))


def pause(conn: psycopg.Connection[Any], reason: str = "") -> dict[str, Any]:
    with conn.transaction():
        control = _control(conn)
        if control.paused is None:
            control.paused = {"by": who(), "at": time.time(), "reason": reason}
            state.put(conn, CONTROL_KEY, control.to_json())
            state.event(conn, None, "pause", f"paused by {control.paused['by']}" + (f": {reason}" if reason else ""))
    return control.to_json()


def resume(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    with conn.transaction():
        control = _control(conn)
        if control.paused is not None:
            control.paused = None
            state.put(conn, CONTROL_KEY, control.to_json())
            state.event(conn, None, "resume", f"resumed by {who()}")
    return control.to_json()


def throttle(conn: psycopg.Connection[Any], *, batch_ms: int | None = None, max_replica_lag_ms: int | None = None,
             pause_ms: int | None = None, reset: bool = False) -> dict[str, Any]:
    """Set what is given (0 for a value clears it back to the configured one); `reset` clears all."""
    with conn.transaction():
        control = _control(conn)
        if reset:
            control.batch_ms = control.max_replica_lag_ms = control.pause_ms = None
        if batch_ms is not None:
            control.batch_ms = batch_ms or None
        if max_replica_lag_ms is not None:
            control.max_replica_lag_ms = max_replica_lag_ms or None
        if pause_ms is not None:
            control.pause_ms = pause_ms or None
        state.put(conn, CONTROL_KEY, control.to_json())
        state.event(conn, None, "throttle", f"set by {who()}", control.to_json())
    return control.to_json()


def runtime(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    """What `status` shows: the operator's settings and what the throttle is doing."""
    control = Control.from_json(state.get(conn, CONTROL_KEY))
    return {"control": control.to_json(), "throttle": state.get(conn, STATUS_KEY) or {}}
