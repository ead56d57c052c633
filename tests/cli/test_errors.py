"""Bad input and unreachable servers give one line on stderr and a non-zero exit, never a traceback."""

from __future__ import annotations

import socket

from tests.helpers import run_cli


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _assert_one_line_error(res, code: int | None = None) -> None:  # type: ignore[no-untyped-def]
    assert res.returncode != 0
    if code is not None:
        assert res.returncode == code
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in res.stderr + res.stdout


def test_server_down_is_one_line_and_exit_3() -> None:
    url = f"postgresql://shopper:s3cretpw@127.0.0.1:{_free_port()}/villager"
    res = run_cli("legacy", "init", database_url=url)
    _assert_one_line_error(res, 3)
    assert "s3cretpw" not in res.stderr + res.stdout
    assert "127.0.0.1" in res.stderr


def test_malformed_url_is_one_line() -> None:
    res = run_cli("legacy", "init", database_url="postgresql://[not a url")
    _assert_one_line_error(res)


def test_a_url_that_is_not_postgresql_is_a_configuration_error() -> None:
    for url in ("not-a-url", "mysql://shop:s3cretpw@db/shop"):
        res = run_cli("migrate", "status", database_url=url)
        _assert_one_line_error(res, 2)
        assert "not a PostgreSQL connection URL" in res.stderr and "s3cretpw" not in res.stderr, res.stderr


def test_unknown_option_is_one_line_usage_error() -> None:
    res = run_cli("legacy", "init", "--no-such-flag")
    _assert_one_line_error(res, 2)


def test_config_masks_password() -> None:
    res = run_cli("config", database_url="postgresql://shopper:s3cretpw@db.example:5432/villager",
                  redis="redis://:r3dispw@cache.example:6379/0")
    assert res.returncode == 0, res.stderr
    assert "s3cretpw" not in res.stdout and "r3dispw" not in res.stdout
    assert "db.example" in res.stdout and "***" in res.stdout


def test_a_password_the_driver_cannot_parse_is_not_quoted() -> None:
    """psycopg quotes the pieces of a URL it cannot parse (here, a space in the password) in its
    error; no URL pattern matches there, so the password itself must be removed."""
    for cmd in (("migrate", "run"), ("migrate", "status"), ("legacy", "init")):
        res = run_cli(*cmd, database_url=f"postgresql://shopper:my s3cret@127.0.0.1:{_free_port()}/villager")
        _assert_one_line_error(res)
        assert "s3cret" not in res.stderr + res.stdout, res.stderr
