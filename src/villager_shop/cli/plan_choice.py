"""The plan a command's `--plan` option names: a file, `built-in`, or, when none is named and no
migration is under way, the villager plan file. A file is checked against the database before
anything is done; the default one is refused as the migration of this database always was (forced
row-level security: exit 4; a database without its tables: one line, exit 2)."""

from __future__ import annotations

from typing import Any

from villager_shop.cli import render
from villager_shop.migration.planfile import bundled, record
from villager_shop.migration.planfile.check import load_and_check
from villager_shop.migration.planfile.spec import PlanSpec, load
from villager_shop.migration.preflight import refuse_row_security


def path_to_check(conn: Any, option: str | None) -> str | None:
    """The file to check and run: the one named, else the villager plan where nothing is in
    progress (a migration under way keeps its plan: the database recorded it); None for `built-in`."""
    if bundled.is_built_in(option):
        return None
    if option:
        return option
    return bundled.default_path() if record.takes_default(conn) else None


def checked_spec(conn: Any, path: str, *, named: bool) -> PlanSpec:
    """The plan file at `path`, fit for this database; otherwise every problem is printed with its
    place in the file, then one line and exit 2, nothing touched."""
    if not named:
        refuse_row_security(conn, tuple(load(path).tables()))
    spec, problems = load_and_check(conn, path)
    if problems or spec is None:
        render.refuse_plan(path, problems, named=named)
    assert spec is not None
    return spec
