"""The README's demo, as a user runs it (small scale, without the blocking service at the end)."""

from __future__ import annotations

import pytest

from tests.helpers import run_cli
from villager_shop.cli.demo import DEMO_DB
from villager_shop.core.db import drop_database

pytestmark = pytest.mark.slow


def test_demo_runs_backup_rehearsal_migration_verify_status(pg_admin_url: str, tmp_path: object) -> None:
    try:
        res = run_cli("demo", "--scale", "0.05", "--writers", "2", "--no-serve", database_url=pg_admin_url,
                      VILLAGER_BACKUP_DIR=str(tmp_path), timeout=900)
    finally:
        drop_database(pg_admin_url, DEMO_DB)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    out = res.stdout
    for marker in ("1. the legacy database", "2. a verified backup", "3. a rehearsal", "4. the online migration",
                   "verify: OK", "phase migrated", "every write present in both representations: yes"):
        assert marker in out, marker
    assert "0 errors" in out
