from __future__ import annotations

import psycopg

from tests.helpers import ROOT, run_cli
from villager_shop.legacy.schema import LEGACY_TABLES, schema_sql

SHARED = ROOT.parent / "shared" / "legacy-schema.sql"


def test_packaged_schema_is_identical_to_shared_contract() -> None:
    packaged = ROOT / "src" / "villager_shop" / "legacy" / "schema.sql"
    assert SHARED.exists(), f"{SHARED} is the contract and must sit beside the repository"
    assert packaged.read_bytes() == SHARED.read_bytes()
    assert schema_sql() == SHARED.read_text(encoding="utf-8")


def test_legacy_init_creates_exactly_the_contract_tables(fresh_db: str) -> None:
    res = run_cli("legacy", "init", database_url=fresh_db)
    assert res.returncode == 0, res.stderr
    with psycopg.connect(fresh_db) as conn:
        tables = {r[0] for r in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")}
        cols = conn.execute(
            "SELECT count(*) FROM information_schema.columns WHERE table_schema = 'public'").fetchone()
    assert tables == set(LEGACY_TABLES)
    assert cols is not None and cols[0] == 8 + 8 + 12 + 9 + 6


def test_legacy_init_refuses_non_empty_database_unless_forced(legacy_db: str) -> None:
    with psycopg.connect(legacy_db, autocommit=True) as conn:
        conn.execute("INSERT INTO users (name) VALUES ('Asha')")
    res = run_cli("legacy", "init", database_url=legacy_db)
    assert res.returncode != 0
    assert "not empty" in res.stderr and "--force" in res.stderr
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1
    with psycopg.connect(legacy_db) as conn:
        assert conn.execute("SELECT count(*) FROM users").fetchone() == (1,)
    res = run_cli("legacy", "init", "--force", database_url=legacy_db)
    assert res.returncode == 0, res.stderr
    with psycopg.connect(legacy_db) as conn:
        assert conn.execute("SELECT count(*) FROM users").fetchone() == (0,)

