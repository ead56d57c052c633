"""Helpers shared by tests: run the real CLI, build settings for a test database."""

from __future__ import annotations

import os
import subprocess
import sys
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


def stop_process(proc: subprocess.Popen[Any]) -> None:
    """Terminate a server started by a test; kill it if it does not stop in time."""
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
