"""Helpers shared by tests: run the real CLI, build settings for a test database."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

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
