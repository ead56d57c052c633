"""Helpers shared by tests: run the real CLI, build settings for a test database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from villager_shop.core.config import Settings

ROOT = Path(__file__).resolve().parents[1]
TEST_DATA_ROOT = ROOT / ".villager" / "test-servers"


def cli_env(database_url: str | None = None, redis: str | None = None, **extra: str) -> dict[str, str]:
    """Environment for running the CLI as a user would, against the test servers."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["VILLAGER_DATA_DIR"] = str(TEST_DATA_ROOT)
    if database_url:
        env["DATABASE_URL"] = database_url
    if redis:
        env["REDIS_URL"] = redis
    env.update(extra)
    return env


def run_cli(
    *args: str, database_url: str | None = None, redis: str | None = None, timeout: float = 600,
    input_text: str | None = None, **extra_env: str,
) -> subprocess.CompletedProcess[str]:
    """Run `villager-shop ARGS` in a subprocess (the real entry point, not an in-process shortcut)."""
    return subprocess.run(
        [sys.executable, "-m", "villager_shop", *args],
        env=cli_env(database_url, redis, **extra_env),
        capture_output=True, text=True, timeout=timeout, input=input_text, cwd=ROOT,
    )


def settings_for(database_url: str, redis: str | None = None) -> Settings:
    return Settings(database_url=database_url, redis_url=redis, villager_data_dir=TEST_DATA_ROOT)  # type: ignore[arg-type]


def wait_ready(base: str, proc: subprocess.Popen[Any], timeout_s: float = 60) -> None:
    """Until `villager-shop serve` at `base` answers /health/ready with 200 (fails if it exits)."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(f"{base}/health/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, "serve did not become ready"
        time.sleep(0.2)


def stop_process(proc: subprocess.Popen[Any]) -> None:
    """Terminate a server started by a test; kill it if it does not stop in time."""
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def scalar(url: str, query: str) -> Any:
    """The first column of the first row of `query`, on a connection of its own (None: no row)."""
    with psycopg.connect(url) as c:
        row = c.execute(query.encode()).fetchone()
        return row[0] if row else None


def rows(url: str, query: str) -> list[tuple[Any, ...]]:
    """Every row of `query`, on a connection of its own."""
    with psycopg.connect(url) as c:
        return c.execute(query.encode()).fetchall()


def run_killed_once(url: str, args: list[str], ready: Callable[[], bool], **env: str) -> subprocess.CompletedProcess[str]:
    """`villager-shop ARGS` killed with SIGKILL as soon as `ready()` holds (polled), then resumed by
    `migrate run` with the same environment: the resumed run's result."""
    proc = subprocess.Popen([sys.executable, "-m", "villager_shop", *args], env=cli_env(url, **env), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None and not ready():
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return run_cli("migrate", "run", database_url=url, **env)


def untriggered(url: str, sql: str) -> None:
    """`sql` run with the sync triggers off (session_replication_role, for this transaction only):
    a disagreement between the two forms that only verify can find."""
    with psycopg.connect(url) as c:
        c.execute("SET LOCAL session_replication_role = replica")
        c.execute(sql.encode())
