"""`backup prune`: the choice (a pure function of the manifest) and the real command on real backups."""

from __future__ import annotations

import json
import subprocess
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.helpers import run_cli
from tests.safety.conftest import read_manifest
from villager_shop.core.errors import ConfigError
from villager_shop.safety.manifest import BackupEntry
from villager_shop.safety.prune import plan_prune

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)


def _entry(database: str, days_ago: float, verified: bool = False) -> BackupEntry:
    when = (NOW - timedelta(days=days_ago)).isoformat().replace("+00:00", "Z")
    return BackupEntry(id=f"{database}-{days_ago:g}", file=f"{database}-{days_ago:g}.dump", sha256="0" * 64, size=100,
                       created_at=when, started_at=when, finished_at=when, snapshot_at=when, lsn="0/0",
                       database=database, server="postgresql://x/", server_version="18", server_version_num=180000,
                       pg_dump_version=18, database_size=1, verified_at=when if verified else None)


def _ids(entries: list[BackupEntry]) -> list[str]:
    return [e.id for e in entries]


def test_prune_keeps_the_newest_n_of_each_database_and_the_newest_verified_one() -> None:
    entries = [_entry("shop", 9, verified=True), _entry("shop", 8, verified=True), _entry("shop", 5),
               _entry("shop", 3), _entry("shop", 1), _entry("demo", 7), _entry("demo", 2)]
    plan = plan_prune(entries, keep=2, now=NOW)
    assert _ids(plan.remove) == ["shop-9", "shop-5"]
    kept = {e.id: why for e, why in plan.keep}
    assert kept["shop-8"] == "the newest verified backup of shop"
    assert set(kept) == {"shop-8", "shop-3", "shop-1", "demo-7", "demo-2"}  # demo's own newest 2
    assert plan.freed_bytes == 200


def test_prune_keep_0_still_keeps_the_newest_verified_backup() -> None:
    plan = plan_prune([_entry("shop", 4, verified=True), _entry("shop", 2), _entry("shop", 1)], keep=0, now=NOW)
    assert _ids(plan.remove) == ["shop-2", "shop-1"]
    assert [e.id for e, _ in plan.keep] == ["shop-4"]


def test_backups_of_one_second_are_ordered_as_the_manifest_recorded_them() -> None:
    # ids whose random parts sort against the order of creation
    first, second, third = (replace(_entry("shop", 1), id=i, file=f"{i}.dump") for i in ("s-ff", "s-aa", "s-55"))
    plan = plan_prune([first, second, third], keep=1, now=NOW)
    assert _ids(plan.remove) == ["s-ff", "s-aa"] and _ids([e for e, _ in plan.keep]) == ["s-55"]


def test_prune_older_than_removes_only_old_backups() -> None:
    entries = [_entry("shop", 40), _entry("shop", 20), _entry("shop", 10), _entry("shop", 1)]
    assert _ids(plan_prune(entries, keep=1, older_than_days=15, now=NOW).remove) == ["shop-40", "shop-20"]
    assert _ids(plan_prune(entries, keep=3, older_than_days=15, now=NOW).remove) == ["shop-40"]


def test_prune_refuses_a_negative_count() -> None:
    with pytest.raises(ConfigError):
        plan_prune([], keep=-1)


def _cli(url: str, backup_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, database_url=url, VILLAGER_BACKUP_DIR=str(backup_dir))


def _on_disk(backup_dir: Path) -> set[str]:
    return {p.name for p in backup_dir.glob("*.dump")}


def test_backup_prune_dry_run_removes_nothing_then_prune_keeps_the_verified_one(shop_db: str,
                                                                                 backup_dir: Path) -> None:
    ids = []
    for _ in range(4):
        res = _cli(shop_db, backup_dir, "backup", "create", "--json")
        assert res.returncode == 0, res.stderr
        ids.append(json.loads(res.stdout)["id"])
    verified = _cli(shop_db, backup_dir, "backup", "verify", ids[0])
    assert verified.returncode == 0, verified.stdout + verified.stderr
    entries = {e["id"]: e for e in read_manifest(backup_dir)["backups"]}
    assert entries[ids[0]]["verified_at"] and entries[ids[1]]["verified_at"] is None

    files_before, manifest_before = _on_disk(backup_dir), read_manifest(backup_dir)
    dry = _cli(shop_db, backup_dir, "backup", "prune", "--keep", "1", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    said = json.loads(dry.stdout)
    assert said["dry_run"] is True and [e["id"] for e in said["removed"]] == ids[1:3]
    assert _on_disk(backup_dir) == files_before and read_manifest(backup_dir) == manifest_before

    pruned = _cli(shop_db, backup_dir, "backup", "prune", "--keep", "1")
    assert pruned.returncode == 0, pruned.stderr
    assert "removed 2 backup(s)" in pruned.stdout, pruned.stdout
    left = read_manifest(backup_dir)["backups"]
    assert [e["id"] for e in left] == [ids[0], ids[3]]
    assert _on_disk(backup_dir) == {e["file"] for e in left}

    again = _cli(shop_db, backup_dir, "backup", "prune", "--keep", "1")
    assert again.returncode == 0 and "nothing to remove" in again.stdout, again.stdout
