"""The plan a database is being migrated with, recorded in its state by `migrate run --plan`: the
file's text and the catalog facts read when the run began. Every later command (status, verify,
rollback, complete, another run) takes the plan from here, not from a file that may have changed."""

from __future__ import annotations

from typing import Any

import psycopg

from villager_shop.core.db import relation_exists
from villager_shop.core.errors import RefusedError
from villager_shop.migration import state
from villager_shop.migration.plan import build_plan, legacy_columns
from villager_shop.migration.planfile import bundled
from villager_shop.migration.planfile import catalog as catalog_mod
from villager_shop.migration.planfile.assemble import FilePlan, assemble
from villager_shop.migration.planfile.spec import PlanSpec, load, parse
from villager_shop.migration.steps.base import Step

KEY = "plan"


def recorded(conn: psycopg.Connection[Any]) -> dict[str, Any] | None:
    if not state.schema_exists(conn):
        return None
    value = state.get(conn, KEY)
    return value if isinstance(value, dict) else None


def current(conn: psycopg.Connection[Any]) -> FilePlan | None:
    """The recorded plan file, or None for the built-in villager_shop plan."""
    rec = recorded(conn)
    if rec is None:
        return None
    spec = parse(str(rec["text"]), str(rec.get("path") or rec.get("name") or "recorded plan"))
    return assemble(spec, catalog_mod.Catalog.from_json(rec.get("catalog") or {}))


FRESH = ("not_started", "rolled_back")  # phases in which no migration is under way


def _phase(conn: psycopg.Connection[Any]) -> str:
    return state.settled_phase(conn) if state.schema_exists(conn) else "not_started"


def takes_default(conn: psycopg.Connection[Any]) -> bool:
    """Whether a run that names no plan starts the default one (the villager plan file): nothing is
    in progress. A migration under way goes on with the plan it began with."""
    return _phase(conn) in FRESH


def for_run(conn: psycopg.Connection[Any], spec: PlanSpec | None, *, built_in: bool = False) -> FilePlan | None:
    """The plan `migrate run` executes: the one recorded (a resumed run), else `spec`, else the
    villager plan file (the built-in Python plan only when asked for: `built_in`). A different plan
    than the one in progress is refused: one migration at a time."""
    rec = recorded(conn)
    phase = _phase(conn)
    if phase not in FRESH:
        other = (built_in or (spec is not None and spec.text != rec.get("text"))) if rec is not None \
            else spec is not None
        if other:
            plan = f"plan {rec.get('name')!r}" if rec is not None else "the built-in villager_shop plan"
            if phase == "completed":
                raise RefusedError(f"the database was migrated with {plan} and completed (legacy columns dropped);"
                                   " there is nothing left to run")
            raise RefusedError(f"the database is being migrated with {plan} (phase {phase}); finish it (`migrate"
                               " complete`) or roll it back before running another plan")
        return current(conn)  # None: the built-in plan
    if built_in:
        return None
    if spec is None:
        spec = load(bundled.default_path())
    return assemble(spec, catalog_mod.read(conn, spec.tables()))


def record(conn: psycopg.Connection[Any], plan: FilePlan | None) -> None:
    if plan is None:
        if state.get(conn, KEY) is not None:
            conn.execute(f"DELETE FROM villager_migration.state WHERE key = '{KEY}'")
        return
    state.put(conn, KEY, {"name": plan.spec.name, "path": plan.spec.path, "text": plan.spec.text,
                          "catalog": plan.catalog.to_json()})


def steps_of(conn: psycopg.Connection[Any]) -> list[Step]:
    """The steps of the plan the database is migrated with (the built-in one unless a file's)."""
    plan = current(conn)
    return plan.steps if plan is not None else build_plan()


def upcoming(conn: psycopg.Connection[Any]) -> tuple[str, list[Step]]:
    """The name and steps of the plan the database is migrated with, or, where none is under way,
    of the one `migrate run` would start (the villager plan file, on a database that has its
    tables; read only)."""
    if takes_default(conn):
        spec = load(bundled.default_path())
        if all(relation_exists(conn, f"public.{t}") for t in spec.tables()):
            return spec.name, assemble(spec, catalog_mod.read(conn, spec.tables())).steps
    plan = current(conn)
    return (plan.name, plan.steps) if plan is not None else ("villager_shop", build_plan())


def legacy_columns_of(conn: psycopg.Connection[Any]) -> tuple[tuple[str, str], ...]:
    plan = current(conn)
    return plan.legacy_columns if plan is not None else legacy_columns()
