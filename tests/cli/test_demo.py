"""The README's demo, as a user runs it (small scale): without the service, and with it, stopped by
Ctrl-C through `python3 run.py demo`. Either way it leaves nothing behind."""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import termios
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.api.conftest import forget_keys, make_config
from tests.cli.test_serve import free_port
from tests.helpers import ROOT, cli_env, run_cli, wait_ready
from villager_shop.cli.demo import DEMO_DB, servers_note
from villager_shop.core.config import Settings
from villager_shop.core.db import drop_database


def _demo_databases(admin_url: str) -> list[str]:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        return [r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'villager\\_demo%'")]


def _assert_nothing_left(admin_url: str, data_dir: Path) -> None:
    assert _demo_databases(admin_url) == []
    backups = data_dir / "backups"
    assert json.loads((backups / "manifest.json").read_text())["backups"] == []
    assert list(backups.glob("*.dump")) == []
    assert list((data_dir / "reports").glob("*")) == [] if (data_dir / "reports").exists() else True


@pytest.mark.slow
def test_demo_runs_backup_rehearsal_migration_verify_status_and_removes_what_it_made(
        pg_admin_url: str, redis_url: str, tmp_path: Path) -> None:
    try:
        res = run_cli("demo", "--scale", "0.05", "--writers", "2", "--no-serve", database_url=pg_admin_url,
                      redis=redis_url, VILLAGER_DATA_DIR=str(tmp_path), VILLAGER_BACKUP_DIR=str(tmp_path / "backups"),
                      timeout=900)
    finally:
        drop_database(pg_admin_url, DEMO_DB)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    out = res.stdout
    for marker in ("1. the legacy database", "2. a verified backup", "3. a rehearsal", "4. the online migration",
                   "verify: OK", "phase migrated", "every write present in both representations: yes"):
        assert marker in out, marker
    assert "0 errors" in out
    assert re.search(r"removed what the demo made: the rehearsal report, backup \S+, database villager_demo", out), out
    _assert_nothing_left(pg_admin_url, tmp_path)


def _take_the_terminal() -> None:
    """In the child, a session leader already: make its standard input its controlling terminal."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


@pytest.mark.slow
def test_ctrl_c_on_run_py_demo_shuts_the_service_down_says_one_line_and_cleans_up(
        pg_admin_url: str, redis_url: str, tmp_path: Path) -> None:
    """Ctrl-C typed in the terminal of `python3 run.py demo` while it serves (tests/test_run_py.py has
    the other ways a SIGINT comes)."""
    port = free_port()
    prefix = f"vtest:demo{port}"
    env = cli_env(pg_admin_url, redis_url, VILLAGER_DATA_DIR=str(tmp_path), VILLAGER_BACKUP_DIR=str(tmp_path / "backups"),
                  VILLAGER_CACHE_PREFIX=prefix)
    out_file = tmp_path / "stdout.txt"
    terminal, tty = os.openpty()
    with out_file.open("w") as out:
        proc = subprocess.Popen([sys.executable, "run.py", "demo", "--scale", "0.02", "--writers", "1",
                                 "--port", str(port)], env=env, cwd=ROOT, stdin=tty, stdout=out,
                                stderr=subprocess.PIPE, text=True, start_new_session=True,
                                preexec_fn=_take_the_terminal)
        os.close(tty)
        try:
            base = f"http://127.0.0.1:{port}"
            wait_ready(base, proc, timeout_s=600)
            screen = out_file.read_text()
            for path in ("/api/products", "/docs", "/dashboard", "/health/ready", "/metrics"):
                assert f"{base}{path} " in screen, (path, screen[-2000:])
                assert httpx.get(f"{base}{path}", timeout=10).status_code == 200, path
            accounts = dict(re.findall(r"^  (customer|shopkeeper|admin) +(\S+@\S+)", screen, re.MULTILINE))
            assert set(accounts) == {"customer", "shopkeeper", "admin"}, screen[-2000:]
            password = re.search(r"demo accounts, password (\S+):", screen)
            assert password, screen[-2000:]
            for role, email in accounts.items():
                token = httpx.post(f"{base}/api/auth/token", data={"username": email, "password": password[1]},
                                   timeout=10)
                assert token.status_code == 200, (role, token.text)
                me = httpx.get(f"{base}/api/auth/me", timeout=10,
                               headers={"Authorization": f"Bearer {token.json()['access_token']}"})
                assert me.status_code == 200 and me.json()["role"] == role, me.text
            login = next(ln.strip() for ln in screen.splitlines() if ln.strip().startswith("TOKEN=$(curl"))
            if shutil.which("curl"):
                orders = subprocess.run(["bash", "-c", login], capture_output=True, text=True, timeout=30)
                assert "items" in json.loads(orders.stdout), orders.stdout + orders.stderr
        finally:
            os.write(terminal, b"\x03")  # Ctrl-C: the terminal signals its whole foreground group
            try:
                _, err = proc.communicate(timeout=120)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                os.close(terminal)
                drop_database(pg_admin_url, DEMO_DB)
                forget_keys(make_config(pg_admin_url, redis_url, cache_prefix=prefix))
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err, err[-3000:]
    assert [ln for ln in lines if "interrupted" in ln] == [lines[-1]], lines[-5:]
    assert lines[-1].startswith("interrupted: the service was shut down; removed what the demo made:"), lines[-1]
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{base}/health/live", timeout=2)
    _assert_nothing_left(pg_admin_url, tmp_path)


def test_the_demo_says_which_embedded_servers_keep_running_and_how_to_stop_them(tmp_path: Path) -> None:
    def settings(db: str | None, cache: str | None) -> Settings:
        return Settings(database_url=db, redis_url=cache, villager_data_dir=tmp_path)  # type: ignore[arg-type]

    both = servers_note(settings(None, None))
    assert both is not None and "PostgreSQL and Redis keep running" in both and "`villager-shop db stop`" in both
    only_redis = servers_note(settings("postgresql://db.example/x", None))
    assert only_redis is not None and "Redis keeps running" in only_redis and "PostgreSQL" not in only_redis
    assert servers_note(settings("postgresql://db.example/x", "redis://cache.example/0")) is None
