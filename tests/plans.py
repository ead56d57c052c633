"""Reading a migrated database the same way whichever plan migrated it: the built-in villager_shop
plan or a plan file (plans/villager.toml). Each keeps its own quarantine: the built-in plan one row
per legacy row (villager_migration.quarantine, uuid row_id), a plan file one row per rule that holds
(villager_migration.plan_quarantine, text row_key). Tests that check what was quarantined, and why,
read it here rather than from one plan's table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg

from tests.helpers import run_cli
from villager_shop.core.db import relation_exists
from villager_shop.migration.plan import build_plan
from villager_shop.migration.planfile import bundled, catalog, record
from villager_shop.migration.planfile.assemble import assemble
from villager_shop.migration.planfile.spec import load

BUILT_IN = "villager_migration.quarantine"
PLAN_FILE = "villager_migration.plan_quarantine"
QUARANTINES = {BUILT_IN: "row_id", PLAN_FILE: "row_key"}
# The kind of the verify check a user whose legacy house number disagrees with the address linked
# fails: the built-in plan's name, plans/villager.toml's (its extract_lookup operation).
ADDRESS_MISMATCH = ("address_mismatch", "lookup_mismatch")


def normalizers(conn: psycopg.Connection[Any]) -> dict[str, str]:
    """The SQL functions by which the plan the database is migrated with compares a legacy house
    number with its address, and a legacy category with its category's name."""
    if migrated_by_file(conn):  # plans/villager.toml: its own function, and its lookup's casefold key
        return {"house_number": "villager_migration.house_number", "category": "villager_migration.norm_casefold"}
    return {"house_number": "villager_migration.canonical_house_number", "category": "villager_migration.category_key"}


def failing_checks(report: dict[str, Any]) -> list[str]:
    """The names of the checks that did not hold, in a `migrate verify --json` report."""
    return [c["name"] for c in report["checks"] if not c["ok"]]


def migrated_by_file(conn: psycopg.Connection[Any]) -> bool:
    """Whether the database is (being) migrated with a plan file rather than the built-in plan."""
    return record.recorded(conn) is not None


def quarantine(conn: psycopg.Connection[Any], table: str | None = None) -> dict[tuple[str, str], set[str]]:
    """{(table, row key as text): reasons} of every quarantine table the database holds (of `table` alone
    if given)."""
    out: dict[tuple[str, str], set[str]] = {}
    for name, key in QUARANTINES.items():
        if not relation_exists(conn, name):
            continue
        for t, k, reason in conn.execute(f"SELECT table_name, {key}::text, reason FROM {name}"
                                         " WHERE %s::text IS NULL OR table_name = %s", (table, table)):
            out.setdefault((t, k), set()).add(reason)
    return out


def quarantined(conn: psycopg.Connection[Any], table: str, key: Any) -> set[str]:
    """The reasons the row of `table` with this key is quarantined for (empty: it is not)."""
    return quarantine(conn, table).get((table, str(key)), set())


def quarantined_keys(conn: psycopg.Connection[Any], table: str) -> set[str]:
    return {k for _, k in quarantine(conn, table)}


def quarantine_detail(conn: psycopg.Connection[Any], table: str, key: Any) -> Any:
    """The legacy values kept with a quarantined row (the `detail` of one of its entries)."""
    for name, column in QUARANTINES.items():
        if relation_exists(conn, name):
            row = conn.execute(f"SELECT detail FROM {name} WHERE table_name = %s AND {column}::text = %s::text"
                               " AND detail IS NOT NULL LIMIT 1", (table, str(key))).fetchone()
            if row is not None:
                return row[0]
    return None


def plant_quarantine(conn: psycopg.Connection[Any], table: str, key: Any, reason: str) -> None:
    """An entry in the quarantine of the plan the database is migrated with (as a bug or a hand could
    leave one; `key` None: a row that does not exist): `migrate verify` must report those that name
    no bad row."""
    name = PLAN_FILE if migrated_by_file(conn) else BUILT_IN
    cast = "text" if name == PLAN_FILE else "uuid"
    conn.execute(f"INSERT INTO {name} (table_name, {QUARANTINES[name]}, reason)"
                 f" VALUES (%s, coalesce(%s::text, gen_random_uuid()::text)::{cast}, %s)",
                 (table, None if key is None else str(key), reason))


def step_names(conn: psycopg.Connection[Any], plan_file: Path | None = None) -> list[str]:
    """The names of the steps, in order, of the built-in plan (`plan_file` None) or of `plan_file`
    assembled for the database `conn` is connected to."""
    if plan_file is None:
        return [s.name for s in build_plan()]
    spec = load(plan_file)
    return [s.name for s in assemble(spec, catalog.read(conn, spec.tables())).steps]


def plans_step_names(url: str) -> list[list[str]]:
    """The step names of each plan `migrate run` may run by default on the database at `url`: the
    built-in plan's and plans/villager.toml's."""
    with psycopg.connect(url, autocommit=True) as conn:
        return [step_names(conn), step_names(conn, bundled.path())]


def migrate_by_plan(url: str, tmp_path: Path, schema: str, plan_text: str) -> None:
    """`schema` created in the database at `url`, then `migrate run --plan` of `plan_text`."""
    with psycopg.connect(url, autocommit=True) as c:
        c.execute(schema.encode())
    plan = tmp_path / "plan.toml"
    plan.write_text(plan_text)
    res = run_cli("migrate", "run", "--plan", str(plan), database_url=url)
    assert res.returncode == 0, res.stderr[-3000:]
