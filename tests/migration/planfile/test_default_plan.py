"""`migrate` without --plan runs plans/villager.toml; `--plan built-in` the Python-coded plan; a
migration under way keeps the plan it began with, whatever the command line names."""

from __future__ import annotations

import json

import psycopg

from tests.helpers import run_cli
from tests.migration.messy import load_messy
from villager_shop.migration.planfile import bundled
from villager_shop.migration.planfile.spec import load


def _status(url: str) -> dict[str, object]:
    res = run_cli("migrate", "status", "--json", "--readers-window", "0", database_url=url)
    assert res.returncode == 0, res.stderr
    return dict(json.loads(res.stdout))


def _recorded(url: str) -> str | None:
    with psycopg.connect(url) as c:
        row = c.execute("SELECT value ->> 'name' FROM villager_migration.state WHERE key = 'plan'").fetchone()
    return None if row is None else str(row[0])


def test_without_plan_the_villager_file_is_planned_run_and_recorded(legacy_db: str) -> None:
    load_messy(legacy_db)
    file_steps = len(load(bundled.path()).operations)
    before = _status(legacy_db)
    assert before["phase"] == "not_started" and before["plan"] == "villager"
    planned = run_cli("migrate", "plan", "--json", database_url=legacy_db)
    assert planned.returncode == 0, planned.stderr
    out = json.loads(planned.stdout)
    assert out["plan"] == "villager" and [s["name"] for s in out["steps"]] == [s["name"] for s in before["steps"]]  # type: ignore[attr-defined]
    assert len(out["steps"]) > file_steps  # the operations' steps, with the engine's own around them
    res = run_cli("migrate", "run", "--json", database_url=legacy_db)
    assert res.returncode == 0, res.stderr
    assert _recorded(legacy_db) == "villager"
    after = _status(legacy_db)
    assert after["phase"] == "migrated" and after["plan"] == "villager"
    assert after["steps_done"] == after["steps_total"] == len(out["steps"])
    with psycopg.connect(legacy_db) as c:  # what the file adds beyond the built-in plan's objects
        assert c.execute("SELECT reloptions FROM pg_class WHERE oid = 'product_variants'::regclass").fetchone() == (
            ["autovacuum_vacuum_scale_factor=0.1", "autovacuum_analyze_scale_factor=0.05"],)
        assert c.execute("SELECT to_regclass('public.idx_products_category_id') IS NOT NULL").fetchone() == (True,)
    # Asking for the built-in plan now is asking for a second migration: refused, nothing changed.
    res = run_cli("migrate", "run", "--plan", "built-in", database_url=legacy_db)
    assert res.returncode == 4 and "'villager'" in res.stderr and "Traceback" not in res.stderr, res.stderr
    assert _recorded(legacy_db) == "villager"
    # Rolled back, the database takes the default again.
    assert run_cli("migrate", "rollback", "--yes", database_url=legacy_db).returncode == 0
    assert _status(legacy_db)["plan"] == "villager"


def test_built_in_is_run_on_request_and_kept_by_later_commands(legacy_db: str) -> None:
    load_messy(legacy_db)
    res = run_cli("migrate", "run", "--plan", "built-in", database_url=legacy_db)
    assert res.returncode == 0, res.stderr
    assert _recorded(legacy_db) is None
    st = _status(legacy_db)
    assert st["phase"] == "migrated" and st["plan"] == "villager_shop"
    # A run without --plan goes on with the plan under way, not the default file.
    res = run_cli("migrate", "run", "--json", database_url=legacy_db)
    assert res.returncode == 0, res.stderr
    assert _recorded(legacy_db) is None and _status(legacy_db)["plan"] == "villager_shop"
    planned = run_cli("migrate", "plan", "--json", database_url=legacy_db)
    assert planned.returncode == 0 and json.loads(planned.stdout)["plan"] == "villager_shop", planned.stderr
    res = run_cli("migrate", "verify", database_url=legacy_db)
    assert res.returncode == 0, res.stdout + res.stderr


def test_the_default_plan_on_a_database_without_its_tables_says_so_in_one_line(fresh_db: str) -> None:
    for args in (("migrate", "plan"), ("migrate", "run"), ("rehearse",)):
        res = run_cli(*args, database_url=fresh_db)
        assert res.returncode == 2 and res.stderr.count("\n") == 1, (args, res.stderr)
        assert "not a villager_shop database" in res.stderr and "legacy init" in res.stderr, res.stderr
    with psycopg.connect(fresh_db) as c:
        assert c.execute("SELECT to_regnamespace('villager_migration')").fetchone() == (None,)
