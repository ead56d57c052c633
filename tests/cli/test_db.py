"""`villager-shop db status` on a throwaway data folder: stopped after `db stop` is fine (exit 0),
a crashed server is not (exit 3)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import ROOT, TEST_DATA_ROOT
from villager_shop.embedded.postgres import EmbeddedPostgres
from villager_shop.embedded.redis import EmbeddedRedis


@pytest.fixture
def data_root() -> Iterator[Path]:
    """Embedded servers of this test's own (not under pytest's tmp dir: the server runs as another
    system user that must traverse the path)."""
    root = TEST_DATA_ROOT.parent / "scratch" / uuid.uuid4().hex[:10]
    root.mkdir(parents=True)
    try:
        yield root
    finally:
        EmbeddedRedis(root).stop()
        EmbeddedPostgres(root).destroy()
        shutil.rmtree(root, ignore_errors=True)


def _db(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PG") and k not in ("DATABASE_URL", "DATABASE_DIRECT_URL", "REDIS_URL")}
    env["VILLAGER_DATA_DIR"] = str(root)
    return subprocess.run([sys.executable, "-m", "villager_shop", "db", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=180)


def test_db_status_after_db_stop_says_stopped_and_exits_0_but_a_crash_exits_3(data_root: Path) -> None:
    never = _db(data_root, "status")
    assert never.returncode == 0, never.stdout + never.stderr
    assert "postgres: embedded, stopped" in never.stdout and "redis: embedded, stopped" in never.stdout

    assert _db(data_root, "start").returncode == 0
    running = _db(data_root, "status")
    assert running.returncode == 0 and "postgres: embedded, running" in running.stdout, running.stdout

    stop = _db(data_root, "stop")
    assert stop.returncode == 0 and "postgres: stopped" in stop.stdout, stop.stdout + stop.stderr
    after = _db(data_root, "status")
    assert after.returncode == 0, after.stdout + after.stderr
    assert "postgres: embedded, stopped" in after.stdout and "redis: embedded, stopped" in after.stdout
    as_json = _db(data_root, "status", "--json")
    assert as_json.returncode == 0, as_json.stderr
    states = {name: d["state"] for name, d in json.loads(as_json.stdout).items()}
    assert states == {"postgres": "stopped", "redis": "stopped"}

    redis = EmbeddedRedis(data_root)
    redis.start()
    pid = redis.pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    crashed = _db(data_root, "status", "--json")
    assert crashed.returncode == 3, crashed.stdout
    assert json.loads(crashed.stdout)["redis"]["state"] == "crashed"
