"""A role without CREATEDB (a managed server's application owner): the commands that need a scratch
database say so in one line, and VILLAGER_SCRATCH_URL gives them one."""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from tests.helpers import run_cli
from tests.safety.conftest import SEED_SQL, databases_like
from villager_shop.legacy.schema import schema_sql


@dataclass
class Owner:
    """A LOGIN NOCREATEDB NOSUPERUSER role owning a legacy shop and an empty scratch database."""

    role: str
    password: str
    shop: str
    scratch: str
    admin_url: str

    def url(self, dbname: str) -> str:
        return make_conninfo(self.admin_url, user=self.role, password=self.password, dbname=dbname)


@pytest.fixture
def owner(pg_admin_url: str) -> Iterator[Owner]:
    tag = uuid.uuid4().hex[:10]
    o = Owner(f"vt_owner_{tag}", secrets.token_hex(12), f"vt_shop_{tag}", f"vt_scratch_{tag}", pg_admin_url)
    ident = sql.Identifier
    with psycopg.connect(pg_admin_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN NOCREATEDB NOSUPERUSER PASSWORD {}").format(
            ident(o.role), sql.Literal(o.password)))
        try:
            for db in (o.shop, o.scratch):
                admin.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(ident(db), ident(o.role)))
            with psycopg.connect(o.url(o.shop), autocommit=True) as conn:
                conn.execute(schema_sql().encode())
                conn.execute(SEED_SQL.encode())
            yield o
        finally:
            for db in [*databases_like(pg_admin_url, o.shop), o.scratch]:
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident(db)))
            admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(ident(o.role)))


def _tables(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        return [str(r[0]) for r in conn.execute(
            "SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE c.relkind IN ('r', 'v', 'S') AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
            " AND n.nspname NOT LIKE 'pg\\_toast%%'").fetchall()]


def test_backup_verify_without_createdb_names_the_privilege_and_uses_the_scratch_url(
        owner: Owner, tmp_path: Path) -> None:
    env = {"VILLAGER_BACKUP_DIR": str(tmp_path / "backups")}
    shop, scratch = owner.url(owner.shop), owner.url(owner.scratch)
    made = run_cli("backup", "create", "--json", database_url=shop, **env)
    assert made.returncode == 0, made.stderr
    backup_id = json.loads(made.stdout)["id"]

    refused = run_cli("backup", "verify", backup_id, database_url=shop, **env)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and refused.stderr.startswith("error: backup verify needs")
    assert f"role {owner.role}" in refused.stderr and "lacks CREATEDB" in refused.stderr
    assert "VILLAGER_SCRATCH_URL" in refused.stderr and owner.password not in refused.stderr

    with psycopg.connect(scratch, autocommit=True) as conn:
        conn.execute("CREATE TABLE keep_me (id int)")
    not_empty = run_cli("backup", "verify", backup_id, database_url=shop, VILLAGER_SCRATCH_URL=scratch, **env)
    assert not_empty.returncode == 4, not_empty.stdout + not_empty.stderr
    assert "not empty (table public.keep_me)" in not_empty.stderr and owner.password not in not_empty.stderr
    assert _tables(scratch) == ["public.keep_me"]  # refused before anything was restored or dropped

    with psycopg.connect(scratch, autocommit=True) as conn:
        conn.execute("DROP TABLE keep_me")
    verified = run_cli("backup", "verify", backup_id, database_url=shop, VILLAGER_SCRATCH_URL=scratch, **env)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert f"backup {backup_id} OK" in verified.stdout and f"scratch database {owner.scratch} emptied" in verified.stdout
    assert _tables(scratch) == []  # emptied again


def test_a_scratch_url_whose_role_may_create_databases_gets_a_new_database_there(
        owner: Owner, tmp_path: Path) -> None:
    env = {"VILLAGER_BACKUP_DIR": str(tmp_path / "backups")}
    shop = owner.url(owner.shop)
    made = run_cli("backup", "create", "--json", database_url=shop, **env)
    backup_id = json.loads(made.stdout)["id"]
    verified = run_cli("backup", "verify", backup_id, database_url=shop, VILLAGER_SCRATCH_URL=owner.admin_url, **env)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert f"scratch database {owner.shop}_verify_" in verified.stdout and " dropped)" in verified.stdout
    assert databases_like(owner.admin_url, owner.shop) == [owner.shop]


def test_restore_without_createdb_says_which_privileges_it_needs(owner: Owner, tmp_path: Path) -> None:
    env = {"VILLAGER_BACKUP_DIR": str(tmp_path / "backups")}
    shop = owner.url(owner.shop)
    backup_id = json.loads(run_cli("backup", "create", "--json", database_url=shop, **env).stdout)["id"]
    refused = run_cli("restore", backup_id, "--yes", database_url=shop, VILLAGER_SCRATCH_URL=owner.url(owner.scratch),
                      **env)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert f"error: restore needs role {owner.role} to have CREATEDB" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1


def test_rehearse_without_createdb_runs_in_the_scratch_database_and_empties_it(owner: Owner, tmp_path: Path) -> None:
    shop, scratch = owner.url(owner.shop), owner.url(owner.scratch)
    env = {"VILLAGER_BACKUP_DIR": str(tmp_path / "backups")}
    args = ("rehearse", "--json", "--report-dir", str(tmp_path / "report"), "--max-latency-ms", "2000")
    refused = run_cli(*args, database_url=shop, **env)
    assert refused.returncode == 2 and "lacks CREATEDB" in refused.stderr, refused.stderr
    assert not (tmp_path / "backups").exists()  # refused before taking the backup it would have restored

    res = run_cli(*args, database_url=shop, VILLAGER_SCRATCH_URL=scratch, timeout=300, **env)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    report = json.loads(res.stdout)
    assert report["verdict"] == "GO" and report["staging_database"] == owner.scratch
    assert _tables(scratch) == []
    with psycopg.connect(scratch) as conn:  # the migration's schemas went too
        assert conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'villager%'").fetchone() == (0,)
    with psycopg.connect(shop) as conn:  # production was only read
        assert conn.execute("SELECT to_regnamespace('villager_migration')").fetchone() == (None,)
