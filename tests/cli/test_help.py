"""`--help` as a reader meets it: `-h` works everywhere, a flag shows no type, the texts flow to the
terminal's width, and the main commands end with examples."""

from __future__ import annotations

import pytest

from tests.helpers import run_cli


def _help(*args: str) -> str:
    res = run_cli(*args, COLUMNS="200")
    assert res.returncode == 0, res.stderr
    assert "Usage: villager-shop" in res.stdout, res.stdout
    return res.stdout


@pytest.mark.parametrize("command", [[], ["migrate", "run"], ["backup"], ["backup", "list"], ["db", "status"]])
def test_dash_h_shows_the_same_help_as_dash_dash_help(command: list[str]) -> None:
    assert _help(*command, "-h") == _help(*command, "--help")


def test_db_psql_leaves_dash_h_to_psql() -> None:
    text = _help("db", "psql", "--help")
    assert "-h" not in text.replace("--help", ""), text


def test_flags_show_no_bool_type() -> None:
    for command in ([], ["demo"], ["backup", "list"], ["migrate", "run"], ["rehearse"]):
        text = _help(*command, "-h")
        assert "<bool>" not in text, (command, text)
    assert "--json" in _help("backup", "list", "-h")


def test_help_texts_flow_instead_of_keeping_the_docstrings_line_breaks() -> None:
    listing = _help("-h")
    demo_line = next(ln for ln in listing.splitlines() if " demo " in ln)
    assert "live writer → verify → status" in demo_line, listing
    rehearse = _help("rehearse", "-h")
    assert "restore a backup into <db>_staging_<ts>, run the whole online migration" in rehearse, rehearse


def test_main_commands_end_with_examples() -> None:
    for command in ([], ["demo"], ["db"], ["backup"], ["rehearse"], ["restore"], ["generate"], ["serve"], ["users"]):
        text = _help(*command, "-h")
        assert "Examples:" in text, (command, text)
        assert "villager-shop " in text.split("Examples:", 1)[1], (command, text)
