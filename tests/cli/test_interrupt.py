"""Ctrl-C (SIGINT) stops a command with exit 130 and one line saying where it stopped and how to go
on; the migration then resumes where the line says."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.helpers import ROOT, cli_env, run_cli


def _start(*args: str, **env: Any) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "villager_shop", *args], env=cli_env(**env), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(proc: subprocess.Popen[str], ready: Callable[[], bool], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not ready():
        assert proc.poll() is None, f"the command ended first: {proc.communicate()[1][-2000:]}"
        assert time.monotonic() < deadline, "the command never reached the point to interrupt"
        time.sleep(0.02)


def _interrupt(proc: subprocess.Popen[str]) -> tuple[int, list[str], float]:
    """SIGINT as a terminal's Ctrl-C sends it; (exit code, stderr lines, seconds until it ended)."""
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    return proc.returncode, [ln for ln in err.splitlines() if ln.strip()], time.monotonic() - t0


def _waiting_for_a_lock(url: str) -> Callable[[], bool]:
    def ready() -> bool:
        with psycopg.connect(url, autocommit=True) as c:
            return bool(c.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                                  " AND application_name LIKE 'villager-shop%%' AND wait_event_type = 'Lock'"
                                  ).fetchone()[0])  # type: ignore[index]
    return ready


def _backfill_under_way(url: str) -> bool:
    """A backfill step runs and has done some, but not half, of its table."""
    with psycopg.connect(url, autocommit=True) as c:
        if not c.execute("SELECT to_regclass('villager_migration.backfill') IS NOT NULL").fetchone()[0]:  # type: ignore[index]
            return False
        row = c.execute(
            "SELECT count(*) FROM villager_migration.steps s JOIN villager_migration.backfill b"
            " ON split_part(b.step, '#', 1) = s.name WHERE s.status = 'running' AND s.name LIKE 'backfill\\_%%'"
            " GROUP BY s.name HAVING sum(b.rows_done) > 0 AND sum(b.rows_done) * 2 < sum(b.rows_total)").fetchone()
        return row is not None


@pytest.mark.parametrize("plan", [["--plan", "built-in"], []], ids=["built-in", "file"])
def test_ctrl_c_during_the_backfill_names_the_step_and_the_run_resumes(make_legacy_db: Any, plan: list[str]) -> None:
    url = make_legacy_db(0.1)
    # Small batches with a pause: the products backfill takes seconds, so the interrupt lands inside it.
    slow = {"VILLAGER_BATCH_SIZE": "100", "VILLAGER_BATCH_PAUSE_MS": "30", "VILLAGER_BACKFILL_WORKERS": "2"}
    proc = _start("migrate", "run", *plan, database_url=url, **slow)
    try:
        _wait_for(proc, lambda: _backfill_under_way(url))
        code, lines, seconds = _interrupt(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 130, lines
    assert not any("Traceback" in ln for ln in lines), lines
    said = [ln for ln in lines if "interrupted" in ln]
    assert said == [lines[-1]], lines
    assert said[0].startswith("interrupted during step backfill_") and " % of " in said[0], said
    assert "run `villager-shop migrate run` to resume" in said[0] and "migrate rollback --yes" in said[0]
    assert seconds < 10, f"Ctrl-C took {seconds:.1f} s to stop the run"
    resumed = run_cli("migrate", "run", database_url=url)
    assert resumed.returncode == 0, resumed.stderr
    verified = run_cli("migrate", "verify", database_url=url)
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_ctrl_c_during_a_backup_says_nothing_was_recorded(legacy_db: str, tmp_path: Path) -> None:
    backups = tmp_path / "backups"
    with psycopg.connect(legacy_db) as holder:
        holder.execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")  # the backup waits for its share lock
        proc = _start("backup", "create", database_url=legacy_db, VILLAGER_BACKUP_DIR=str(backups))
        try:
            _wait_for(proc, _waiting_for_a_lock(legacy_db))
            code, lines, _ = _interrupt(proc)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert code == 130
    assert lines == ["interrupted: no backup was recorded (the partial dump is removed); run"
                     " `villager-shop backup create` again"], lines
    assert not any(backups.iterdir()) if backups.exists() else True


def test_ctrl_c_in_any_other_command_is_one_line_and_exit_130(legacy_db: str) -> None:
    with psycopg.connect(legacy_db) as holder:
        holder.execute("LOCK TABLE users IN ACCESS SHARE MODE")  # `legacy init --force` waits to drop it
        proc = _start("legacy", "init", "--force", database_url=legacy_db)
        try:
            _wait_for(proc, _waiting_for_a_lock(legacy_db))
            code, lines, _ = _interrupt(proc)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert code == 130
    assert lines == ["interrupted: `villager-shop legacy init` stopped before it finished; run it again"], lines
