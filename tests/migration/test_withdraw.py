"""The guide's gradual rollback: one index or one constraint taken back alone, recorded as the
operator's decision, left out by later runs until reinstated, and waited for by `complete`."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest

from tests.helpers import run_cli
from tests.migration.conftest import migrate

pytestmark = pytest.mark.slow


def _exists(url: str, sql: str, *args: Any) -> bool:
    with psycopg.connect(url) as c:
        return bool(c.execute(sql, args).fetchone()[0])  # type: ignore[index]


def index_exists(url: str, name: str) -> bool:
    return _exists(url, "SELECT to_regclass(%s) IS NOT NULL", f"public.{name}")


def constraint_state(url: str, name: str) -> bool | None:
    with psycopg.connect(url) as c:
        row = c.execute("SELECT convalidated FROM pg_constraint WHERE conname = %s", (name,)).fetchone()
    return None if row is None else bool(row[0])


def test_an_index_withdrawn_alone_stays_out_until_reinstated(make_legacy_db: Any) -> None:
    url = make_legacy_db(0.05)
    migrate(url)
    step, index = "index_idx_products_category_rating", "idx_products_category_rating"
    res = run_cli("migrate", "rollback", "--step", step, "--yes", "--reason", "hurts writes", database_url=url)
    assert res.returncode == 0, res.stderr
    assert not index_exists(url, index)
    assert index_exists(url, "idx_products_available_rating")  # the rest stays

    st = json.loads(run_cli("migrate", "status", "--json", database_url=url).stdout)
    row = next(s for s in st["steps"] if s["name"] == step)
    assert row["status"] == "withdrawn" and row["withdrawn"]["reason"] == "hurts writes", row
    assert st["phase"] == "migrated"

    res = run_cli("migrate", "verify", "--json", database_url=url)
    assert res.returncode == 0, res.stdout
    checks = {c["name"]: c for c in json.loads(res.stdout)["checks"]}
    assert checks[f"index:{index}"]["ok"] and "withdrawn by the operator" in checks[f"index:{index}"]["detail"]

    res = run_cli("migrate", "run", database_url=url)
    assert res.returncode == 0, res.stderr
    assert not index_exists(url, index), "a later run put a withdrawn step back"

    res = run_cli("migrate", "complete", "--yes", "--quiet-seconds", "0", database_url=url)
    assert res.returncode == 4 and "--reinstate" in res.stderr, res.stderr

    res = run_cli("migrate", "run", "--reinstate", step, database_url=url)
    assert res.returncode == 0, res.stderr
    assert index_exists(url, index)
    assert run_cli("migrate", "verify", database_url=url).returncode == 0


def test_a_constraint_withdrawn_takes_its_validation_along_and_comes_back_validated(make_legacy_db: Any) -> None:
    url = make_legacy_db(0.05)
    migrate(url)
    res = run_cli("migrate", "rollback", "--step", "validate_fk_products_category", "--yes", "--json", database_url=url)
    assert res.returncode == 0, res.stderr
    assert set(json.loads(res.stdout)["withdrawn"]) == {"constraint_fk_products_category",
                                                         "validate_fk_products_category"}
    assert constraint_state(url, "fk_products_category") is None
    assert run_cli("migrate", "verify", database_url=url).returncode == 0
    res = run_cli("migrate", "run", "--reinstate", "constraint_fk_products_category", database_url=url)
    assert res.returncode == 0, res.stderr
    assert constraint_state(url, "fk_products_category") is True


def test_a_step_that_cannot_stand_alone_is_refused(make_legacy_db: Any) -> None:
    url = make_legacy_db(0.02)
    migrate(url)
    res = run_cli("migrate", "rollback", "--step", "sync_triggers", "--yes", database_url=url)
    assert res.returncode == 4 and "cannot be withdrawn alone" in res.stderr, res.stderr
    res = run_cli("migrate", "rollback", "--step", "no_such_step", "--yes", database_url=url)
    assert res.returncode == 4 and "no step named" in res.stderr, res.stderr
