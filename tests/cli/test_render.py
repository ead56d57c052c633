"""Output written to a pipe or a file keeps every path and URL whole on its line."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import run_cli


def test_piped_output_keeps_a_long_path_on_one_line(tmp_path: Path) -> None:
    long_dir = tmp_path / ("a-folder-with-a-long-name-" * 4) / ("and-another-one-" * 4) / "backups"
    assert len(str(long_dir)) > 160
    res = run_cli("config", VILLAGER_BACKUP_DIR=str(long_dir))  # stdout is a pipe here
    assert res.returncode == 0, res.stderr
    assert any(str(long_dir) in line for line in res.stdout.splitlines()), res.stdout
    assert "…" not in res.stdout, res.stdout
