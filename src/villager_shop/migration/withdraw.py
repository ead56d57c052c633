"""The guide's gradual rollback: take back one step that hurts production - an index (dropped
CONCURRENTLY, never in a transaction) or a new constraint - and leave the rest of the migration
in place. The step is recorded as withdrawn by the operator: `status` and `verify` show it as
such (not as a failure), `migrate run` leaves it out until `migrate run --reinstate NAME`, and
`complete` waits until it is back (the contracted schema would lack it for good)."""

from __future__ import annotations

import time
from typing import Any

import psycopg

from villager_shop.core.errors import RefusedError
from villager_shop.migration import state
from villager_shop.migration.context import Context
from villager_shop.migration.planfile import record
from villager_shop.migration.runner import exclusive
from villager_shop.migration.steps.base import Step
from villager_shop.migration.steps.constraints import AddConstraint, ValidateConstraint
from villager_shop.migration.steps.indexes import CreateIndex
from villager_shop.migration.throttle import who

WITHDRAWN = state.WITHDRAWN


def _partners(plan: list[Step], step: Step) -> list[Step]:
    """A constraint is added by one step and validated by another: both go (and come back) together."""
    if isinstance(step, AddConstraint | ValidateConstraint):
        return [s for s in plan if isinstance(s, AddConstraint | ValidateConstraint)
                and s.constraint == step.constraint]
    return [step]


def withdrawable(plan: list[Step]) -> list[str]:
    """Steps whose absence slows or loosens production but never breaks a write of either
    application: the indexes built for queries, and the new constraints."""
    return [s.name for s in plan if (isinstance(s, CreateIndex) and s.phase == "index")
            or isinstance(s, AddConstraint | ValidateConstraint)]


def withdraw(ctx: Context, name: str, reason: str = "") -> dict[str, Any]:
    plan = record.steps_of(ctx.conn)
    by_name = {s.name: s for s in plan}
    if name not in by_name:
        raise RefusedError(f"no step named {name!r}; `villager-shop migrate status` lists them")
    if name not in withdrawable(plan):
        raise RefusedError(f"{name} cannot be withdrawn alone (only these can: {', '.join(withdrawable(plan))});"
                           " `migrate rollback --yes` takes back the whole migration")
    if not state.schema_exists(ctx.conn):
        raise RefusedError("nothing to withdraw: no migration has run on this database")
    with exclusive(ctx, "withdraw a step"):
        phase = state.settled_phase(ctx.conn)
        if phase in ("completed", "completing", "rolled_back", "rolling_back", "not_started"):
            raise RefusedError(f"nothing to withdraw in phase {phase!r}")
        steps = _partners(plan, by_name[name])
        mark = {"by": who(), "at": time.time(), "reason": reason}
        t0 = time.perf_counter()
        for step in steps:
            for d in step.undo_ddl():
                ctx.run(d, f"withdraw {step.name}")
        still = [s.name for s in steps if s.check(ctx)]
        if still:
            raise RefusedError(f"withdrawing {name}: {', '.join(still)} still in place after its undo")
        with ctx.conn.transaction():
            for step in steps:
                state.mark(ctx.conn, step.name, WITHDRAWN, detail={"withdrawn": mark})
            state.event(ctx.conn, name, WITHDRAWN, f"withdrawn by {mark['by']}" + (f": {reason}" if reason else ""),
                        {"steps": [s.name for s in steps]})
        return {"withdrawn": [s.name for s in steps], "seconds": round(time.perf_counter() - t0, 3), **mark}


def reinstate(conn: psycopg.Connection[Any], names: list[str]) -> list[str]:
    """Put withdrawn steps back in the plan: the next `migrate run` applies them again."""
    plan = record.steps_of(conn)
    by_name = {s.name: s for s in plan}
    out: list[str] = []
    current = state.withdrawn(conn)
    for name in names:
        if name not in by_name:
            raise RefusedError(f"no step named {name!r}; `villager-shop migrate status` lists them")
        if name not in current:
            raise RefusedError(f"{name} is not withdrawn")
        for step in _partners(plan, by_name[name]):
            if step.name in current and step.name not in out:
                out.append(step.name)
    with conn.transaction():
        for step_name in out:
            state.mark(conn, step_name, "pending")
        state.event(conn, None, "reinstate", f"reinstated by {who()}: {', '.join(out)}")
    return out
