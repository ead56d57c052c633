"""Bad input and unreachable servers give one line on stderr and a non-zero exit, never a traceback."""

from __future__ import annotations

import re
import socket

from tests.helpers import ROOT, run_cli


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


def test_an_invalid_setting_names_its_variable_and_what_it_accepts() -> None:
    """Checked where the settings are read, so every command says the same (no internal error)."""
    cases = [
        (("migrate", "plan"), "VILLAGER_LOCK_TIMEOUT_MS", "abc", "an integer from 10 to 60000 (got 'abc')"),
        (("migrate", "plan"), "VILLAGER_LOCK_TIMEOUT_MS", "5", "an integer from 10 to 60000 (got '5')"),
        (("backup", "list"), "VILLAGER_BATCH_SIZE", "0", "an integer from 10 to 1000000 (got '0')"),
        (("config",), "VILLAGER_BACKFILL_WORKERS", "99", "an integer from 1 to 16 (got '99')"),
        (("migrate", "status"), "VILLAGER_BACKFILL_ORDER", "sideways", "one of auto, physical, key (got 'sideways')"),
        (("serve",), "VILLAGER_CACHE_TTL_S", "-1", "an integer from 1 to 86400 (got '-1')"),
        (("serve",), "VILLAGER_DELIVERY_FEE", "1.234", "a decimal number from 0 to 10000 with at most 2 decimal places (got '1.234')"),
        (("serve",), "VILLAGER_MONITORING_ACCESS", "all", "one of admin_or_local, admin, local, public (got 'all')"),
    ]
    for cmd, variable, value, accepted in cases:
        res = run_cli(*cmd, database_url="postgresql://nobody@127.0.0.1:1/none", **{variable: value})
        _assert_one_line_error(res, 2)
        assert f"error: {variable} must be {accepted}" in res.stderr, (cmd, res.stderr)


def test_a_blank_or_bare_postgres_url_is_refused_instead_of_reaching_the_local_defaults() -> None:
    for variable in ("DATABASE_URL", "DATABASE_DIRECT_URL"):
        for url, said in ((" ", "is set but empty"), ("", "is set but empty"),
                          ("postgresql://", "names no server, database or user"),
                          ("postgresql:///", "names no server, database or user")):
            env = {"DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none", variable: url}
            res = run_cli("migrate", "run", **env)
            _assert_one_line_error(res, 2)
            assert f"error: {variable} {said}" in res.stderr and "postgresql://USER@HOST:PORT/DBNAME" in res.stderr, \
                res.stderr


def test_a_url_naming_only_a_database_is_accepted() -> None:
    """libpq's local socket with a database name is a real setup: it is tried, not refused (exit 3 here:
    no server listens on that socket directory)."""
    res = run_cli("migrate", "status", database_url="postgresql:///villager?host=/nonexistent")
    _assert_one_line_error(res, 3)


def test_serve_checks_its_settings_address_and_servers_before_starting(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Each failure is one line with its exit code, never uvicorn's traceback."""
    down = "postgresql://nobody:s3cretpw@127.0.0.1:1/none"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = str(taken.getsockname()[1])
        cases = [
            ({"REDIS_URL": "notredis"}, [], 2, "REDIS_URL is not a Redis URL: expected redis://HOST:PORT/DB"),
            ({"REDIS_URL": "redis://:r3dispw@cache:port/0"}, [], 2, "REDIS_URL is not a Redis URL"),
            ({"VILLAGER_REDIS_TIMEOUT_MS": "1"}, [], 2, "VILLAGER_REDIS_TIMEOUT_MS must be an integer from 5 to 5000"),
            ({"VILLAGER_JWT_SECRET": "short-s3cret"}, [], 2, "VILLAGER_JWT_SECRET must be at least 32 characters"),
            ({}, ["--port", busy], 2, f"cannot listen on 127.0.0.1:{busy}"),
            ({}, ["--port", "70000"], 2, "Invalid value for '--port'"),
            ({}, ["--port", str(_free_port())], 3, "cannot connect to postgresql://nobody:***@127.0.0.1:1/none"),
        ]
        for env, args, code, said in cases:
            res = run_cli("serve", *args, database_url=down, VILLAGER_DATA_DIR=str(tmp_path), timeout=60, **env)
            _assert_one_line_error(res, code)
            assert said in res.stderr, (env, args, res.stderr)
            assert "s3cret" not in res.stderr and "r3dispw" not in res.stderr


def test_the_readme_documents_each_exit_code_the_tool_uses_and_no_other() -> None:
    from villager_shop.core import errors

    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("| exit | meaning |"):].split("\n\n", 1)[0]
    documented = {int(m) for m in re.findall(r"^\| (\d+) \|", table, re.MULTILINE)}
    used = {0, 1, 2}  # success, a plain VillagerError, a usage error
    used |= {cls.exit_code for cls in vars(errors).values()
             if isinstance(cls, type) and issubclass(cls, errors.VillagerError)}
    used |= {errors.describe(exc)[1] for exc in (RuntimeError("x"), KeyboardInterrupt(), OSError("x"))}
    assert documented == used, (documented, used)


def test_a_serialization_failure_is_a_conflict_to_run_again_not_an_unavailable_server(fresh_db: str) -> None:
    """psycopg files a serialization failure under OperationalError, like a server that is down: the
    line must say what happened (exit 1, run again), not send the operator to check the server."""
    import psycopg

    from villager_shop.core import errors

    with psycopg.connect(fresh_db, autocommit=True) as setup:
        setup.execute("CREATE TABLE t (id int PRIMARY KEY, v int)")
        setup.execute("INSERT INTO t VALUES (1, 0)")
    with psycopg.connect(fresh_db) as a, psycopg.connect(fresh_db, autocommit=True) as b:
        a.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        a.execute("SELECT v FROM t")  # the snapshot
        b.execute("UPDATE t SET v = 1 WHERE id = 1")
        try:
            a.execute("UPDATE t SET v = 2 WHERE id = 1")
        except psycopg.errors.SerializationFailure as exc:
            line, code = errors.describe(exc)
        else:
            raise AssertionError("no serialization failure")
    assert code == 1 and "run the command again" in line and "unavailable" not in line, line
