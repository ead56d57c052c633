"""The embedded server's lifecycle, on a throwaway data folder (not the one other tests share)."""

from __future__ import annotations

import os
import shutil
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.helpers import TEST_DATA_ROOT
from villager_shop.embedded.postgres import EmbeddedPostgres
from villager_shop.embedded.redis import EmbeddedRedis

pytestmark = pytest.mark.skipif(bool(os.environ.get("DATABASE_URL")), reason="embedded-only test")


@pytest.fixture
def scratch_root() -> Iterator[Path]:
    """Not under pytest's tmp dir: pytest re-chmods that to 0700 whenever a session starts, and the
    server runs as another system user that must traverse the path."""
    root = TEST_DATA_ROOT.parent / "scratch" / uuid.uuid4().hex[:10]
    root.mkdir(parents=True)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def server(scratch_root: Path) -> Iterator[EmbeddedPostgres]:
    srv = EmbeddedPostgres(scratch_root)
    yield srv
    srv.destroy()


def _query(url: str, sql: str) -> object:
    with psycopg.connect(url, connect_timeout=5) as conn:
        row = conn.execute(sql).fetchone()
        return row[0] if row else None


def test_embedded_starts_twice_and_preloads_pg_stat_statements(server: EmbeddedPostgres) -> None:
    url = server.start()
    pid = server.pid()
    assert pid is not None
    assert server.start() == url  # second start reuses the running server
    assert server.pid() == pid
    assert "pg_stat_statements" in str(_query(url, "SHOW shared_preload_libraries"))
    assert int(str(_query(url, "SHOW server_version_num"))) >= 180000


def test_embedded_stop_then_restart_keeps_data(server: EmbeddedPostgres) -> None:
    url = server.start()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE kept (x int)")
        conn.execute("INSERT INTO kept VALUES (42)")
    assert server.stop() is True
    assert server.pid() is None
    assert server.stop() is False
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(url, connect_timeout=2)
    url = server.start()
    assert _query(url, "SELECT x FROM kept") == 42


def test_embedded_survives_killed_postmaster(server: EmbeddedPostgres) -> None:
    url = server.start()
    pid = server.pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while server.pid() is not None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert (server.pgdata / "postmaster.pid").exists(), "a killed postmaster leaves its pid file"
    assert server.pid() is None, "a stale pid file must not count as running"
    url = server.start()
    assert server.pid() not in (None, pid)
    assert _query(url, "SELECT 1") == 1


def test_embedded_redis_start_reuse_stop(scratch_root: Path) -> None:
    rd = EmbeddedRedis(scratch_root)
    url = rd.start()
    pid = rd.pid()
    assert rd.ping() and pid
    assert rd.start() == url and rd.pid() == pid
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.2)
    assert not rd.ping()
    rd.start()
    assert rd.ping() and rd.pid() != pid
    assert rd.stop() is True
    assert not rd.ping()
