"""Backups and the emergency restore, through the real CLI on a real server."""

from __future__ import annotations

import json
import stat
import subprocess
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from tests.helpers import run_cli
from tests.safety.conftest import databases_like, name_of, read_manifest, table_checksums, write_manifest


def _cli(url: str, backup_dir: Path, *args: str, input_text: str | None = "") -> subprocess.CompletedProcess[str]:
    return run_cli(*args, database_url=url, input_text=input_text, VILLAGER_BACKUP_DIR=str(backup_dir))


def _one_line_error(res: subprocess.CompletedProcess[str]) -> str:
    assert res.returncode != 0
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in res.stderr + res.stdout
    return str(lines[0])


def _create(url: str, backup_dir: Path) -> dict[str, Any]:
    res = _cli(url, backup_dir, "backup", "create", "--json")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def test_backup_verify_restore_round_trip_keeps_old_db(shop_db: str, pg_admin_url: str, backup_dir: Path) -> None:
    original = table_checksums(shop_db)
    entry = _create(shop_db, backup_dir)
    dump = backup_dir / entry["file"]
    assert dump.is_file() and stat.S_IMODE(dump.stat().st_mode) == 0o600
    assert entry["row_counts"]["public.users"] == 200 and entry["row_counts"]["public.order_items"] == 200
    assert entry["lsn"] and "/" in entry["lsn"]

    listed = json.loads(_cli(shop_db, backup_dir, "backup", "list", "--json").stdout)
    assert [e["id"] for e in listed] == [entry["id"]]
    assert {"id", "file", "sha256", "lsn", "created_at"} <= set(listed[0])

    res = _cli(shop_db, backup_dir, "backup", "verify", entry["id"])
    assert res.returncode == 0, res.stderr
    name = name_of(shop_db)
    assert databases_like(pg_admin_url, name) == [name]  # the scratch database is gone

    with psycopg.connect(shop_db, autocommit=True) as conn:
        conn.execute("INSERT INTO users (name) VALUES ('written after the backup')")
        conn.execute("UPDATE products SET price = price + 1, updated_at = now()"
                     " WHERE id = (SELECT id FROM products ORDER BY id LIMIT 1)")
        conn.execute("DELETE FROM order_items WHERE id = (SELECT id FROM order_items ORDER BY id LIMIT 1)")
    modified = table_checksums(shop_db)
    assert modified != original

    idle = psycopg.connect(shop_db, autocommit=True)  # an application session on the live database
    try:
        res = _cli(shop_db, backup_dir, "restore", entry["id"], "--yes")
        assert res.returncode == 0, res.stderr
        with pytest.raises(psycopg.OperationalError):
            idle.execute("SELECT 1")
    finally:
        idle.close()
    out = res.stdout + res.stderr
    assert "migrate rollback" in out and "pg_terminate_backend" in out

    assert table_checksums(shop_db) == original
    others = [d for d in databases_like(pg_admin_url, name) if d != name]
    assert len(others) == 1 and "_before_restore_" in others[0], others
    kept = make_conninfo(shop_db, dbname=others[0])
    assert table_checksums(kept) == modified  # nothing lost: the pre-restore database is intact


def test_corrupted_backup_is_detected_and_refused(shop_db: str, pg_admin_url: str, backup_dir: Path) -> None:
    entry = _create(shop_db, backup_dir)
    before = table_checksums(shop_db)
    dump = backup_dir / entry["file"]
    data = bytearray(dump.read_bytes())
    for i in range(len(data) // 2, len(data) // 2 + 8):
        data[i] ^= 0xFF
    dump.write_bytes(bytes(data))

    res = _cli(shop_db, backup_dir, "backup", "verify", entry["id"])
    assert res.returncode == 5 and "checksum mismatch" in _one_line_error(res)

    res = _cli(shop_db, backup_dir, "restore", entry["id"], "--yes")
    assert res.returncode == 5 and "refusing to restore" in _one_line_error(res)
    name = name_of(shop_db)
    assert databases_like(pg_admin_url, name) == [name]
    assert table_checksums(shop_db) == before


def test_truncated_backup_with_matching_manifest_fails_verify(shop_db: str, pg_admin_url: str,
                                                              backup_dir: Path) -> None:
    """A file that matches its (edited) manifest but cannot be restored still fails verification."""
    import hashlib

    entry = _create(shop_db, backup_dir)
    dump = backup_dir / entry["file"]
    dump.write_bytes(dump.read_bytes()[: dump.stat().st_size * 2 // 3])
    manifest = read_manifest(backup_dir)
    manifest["backups"][0]["size"] = dump.stat().st_size
    manifest["backups"][0]["sha256"] = hashlib.sha256(dump.read_bytes()).hexdigest()
    write_manifest(backup_dir, manifest)

    res = _cli(shop_db, backup_dir, "backup", "verify", entry["id"])
    assert res.returncode == 5 and "pg_restore" in _one_line_error(res)
    name = name_of(shop_db)
    assert databases_like(pg_admin_url, name) == [name]


def test_restore_without_yes_refuses_and_changes_nothing(shop_db: str, pg_admin_url: str, backup_dir: Path) -> None:
    entry = _create(shop_db, backup_dir)
    with psycopg.connect(shop_db, autocommit=True) as conn:
        conn.execute("INSERT INTO users (name) VALUES ('late')")
    before = table_checksums(shop_db)
    res = _cli(shop_db, backup_dir, "restore", entry["id"])  # stdin is a pipe: no terminal to ask
    assert res.returncode == 4 and "--yes" in _one_line_error(res)
    assert "would be lost" in res.stdout
    name = name_of(shop_db)
    assert databases_like(pg_admin_url, name) == [name]
    assert table_checksums(shop_db) == before


def test_restore_never_touches_live_db_when_copy_fails_verification(shop_db: str, pg_admin_url: str,
                                                                    backup_dir: Path) -> None:
    entry = _create(shop_db, backup_dir)
    manifest = read_manifest(backup_dir)
    manifest["backups"][0]["row_counts"]["public.users"] += 1  # the restored copy will not match
    write_manifest(backup_dir, manifest)
    before = table_checksums(shop_db)

    res = _cli(shop_db, backup_dir, "restore", entry["id"], "--yes")
    message = _one_line_error(res)
    assert res.returncode == 5 and "public.users has 200 rows, the manifest says 201" in message
    name = name_of(shop_db)
    assert databases_like(pg_admin_url, name) == [name]  # no swap happened, the failed copy is dropped
    assert table_checksums(shop_db) == before
    with psycopg.connect(pg_admin_url) as conn:
        assert conn.execute("SELECT datallowconn FROM pg_database WHERE datname = %s", (name,)).fetchone() == (True,)


def test_unknown_backup_id_is_one_line_error(shop_db: str, backup_dir: Path) -> None:
    for args in (("backup", "verify", "20990101T000000Z-nope"), ("restore", "20990101T000000Z-nope", "--yes")):
        res = _cli(shop_db, backup_dir, *args)
        assert "unknown backup id" in _one_line_error(res)


def test_restore_refuses_the_maintenance_database(pg_admin_url: str, backup_dir: Path) -> None:
    maintenance = make_conninfo(pg_admin_url, dbname="postgres")
    res = _cli(maintenance, backup_dir, "restore", "whatever", "--yes")
    assert res.returncode == 4 and "maintenance database" in _one_line_error(res)


def test_password_never_reaches_output_or_manifest(shop_db: str, backup_dir: Path) -> None:
    """The URL's password goes to pg_dump through PGPASSWORD only (the test servers trust local users)."""
    url = make_conninfo(shop_db, password="s3cretpw")
    res = _cli(url, backup_dir, "backup", "create")
    assert res.returncode == 0, res.stderr
    assert "s3cretpw" not in res.stdout + res.stderr
    assert "s3cretpw" not in (backup_dir / "manifest.json").read_text()
