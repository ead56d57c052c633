"""`villager-shop serve` as a user runs it: uvicorn in a subprocess (always stopped by the test)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.api.conftest import forget_keys, make_config
from tests.helpers import ROOT, cli_env, run_cli, stop_process, wait_ready
from villager_shop.core.db import create_database, drop_database


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def small_shop_db(pg_admin_url: str) -> Iterator[str]:
    """The legacy schema with one product, migrated."""
    from tests.api.dbs import build_migrated

    name = f"vt_serve_{time.monotonic_ns() % 10**9}"
    url = create_database(pg_admin_url, name)
    try:
        build_migrated(url)
        yield url
    finally:
        drop_database(pg_admin_url, name)


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_answers_and_stops(small_shop_db: str, redis_url: str, workers: int, tmp_path: Path) -> None:
    port = free_port()
    env = cli_env(small_shop_db, redis_url, VILLAGER_DATA_DIR=str(tmp_path), VILLAGER_CACHE_PREFIX=f"vtest:{port}")
    proc = subprocess.Popen([sys.executable, "-m", "villager_shop", "serve", "--port", str(port),
                             "--workers", str(workers), "--db-connections", "4"],
                            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc)
        r = httpx.get(f"http://127.0.0.1:{port}/api/products?limit=3", timeout=5)
        assert r.status_code == 200 and len(r.json()["items"]) == 3
        assert httpx.get(f"http://127.0.0.1:{port}/openapi.json", timeout=5).json()["paths"]["/api/products"]
        assert (tmp_path / "jwt-secret").stat().st_mode & 0o777 == 0o600
        with psycopg.connect(small_shop_db) as conn:
            apps = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'villager-shop serve'"
                                " AND datname = current_database()").fetchone()
            assert apps and 1 <= apps[0] <= 4
    finally:
        stop_process(proc)
        forget_keys(make_config(small_shop_db, redis_url, cache_prefix=f"vtest:{port}"))


def test_serve_without_postgres_fails_with_one_line(tmp_path: Path) -> None:
    done = run_cli("serve", "--port", str(free_port()), database_url="postgresql://nobody@127.0.0.1:1/none",
                   redis="redis://127.0.0.1:1/0", VILLAGER_DATA_DIR=str(tmp_path), timeout=60)
    assert done.returncode == 3
    assert len(done.stderr.strip().splitlines()) == 1 and done.stderr.startswith("error: cannot connect")


def _children(pid: int) -> list[int]:
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
        except OSError:
            continue
        if fields.get("PPid", "").strip() == str(pid):
            found.append(int(status.parent.name))
    return found


def test_a_frozen_worker_holds_up_no_one_and_serves_the_change_once_thawed(
        small_shop_db: str, redis_url: str, tmp_path: Path) -> None:
    """Two real workers answer the product page from their own copies (leases). One is frozen
    (SIGSTOP) and can acknowledge nothing: a change by the old application (SQL; the workers
    invalidate on its notification) is still served by the live worker within seconds. Thawed, the
    frozen worker answers the new price too. (That its lease ran out meanwhile is asserted in
    tests/api/cache/test_lease.py, where the order of events can be controlled.)"""
    import os
    import signal

    from tests.api.conftest import RADIO

    port = free_port()
    env = cli_env(small_shop_db, redis_url, VILLAGER_DATA_DIR=str(tmp_path), VILLAGER_CACHE_PREFIX=f"vtest:{port}")
    proc = subprocess.Popen([sys.executable, "-m", "villager_shop", "serve", "--port", str(port),
                             "--workers", "2", "--db-connections", "4"],
                            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    page = f"http://127.0.0.1:{port}/api/products/{RADIO}"
    frozen: int | None = None
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc)
        workers = [p for p in _children(proc.pid)
                   if "spawn" in Path(f"/proc/{p}/cmdline").read_bytes().decode(errors="replace")]
        assert len(workers) == 2, workers
        old = httpx.get(page, timeout=5).json()["variants"][0]["price"]
        for _ in range(40):  # new connections each time: both workers hold a copy
            assert httpx.get(page, timeout=5).json()["variants"][0]["price"] == old
        frozen = workers[0]
        os.kill(frozen, signal.SIGSTOP)
        time.sleep(0.3)
        new = old + 7
        with psycopg.connect(small_shop_db, autocommit=True) as conn:
            conn.execute("UPDATE products SET price = %s WHERE id = %s", (new, RADIO))
        changed = time.monotonic()
        while httpx.get(page, timeout=5).json()["variants"][0]["price"] != new:
            assert time.monotonic() - changed < 3.0, "the live worker kept the old price"
            time.sleep(0.02)
        os.kill(frozen, signal.SIGCONT)
        frozen = None
        prices = {httpx.get(page, timeout=5).json()["variants"][0]["price"] for _ in range(40)}
        assert prices == {new}
    finally:
        if frozen is not None:
            os.kill(frozen, signal.SIGCONT)
        stop_process(proc)
        forget_keys(make_config(small_shop_db, redis_url, cache_prefix=f"vtest:{port}"))
