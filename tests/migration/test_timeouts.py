"""A database or role may carry its own statement_timeout, lock_timeout or
idle_in_transaction_session_timeout (a managed server's owner role often does). Every migrate
command sets what its own transactions need; a cancelled statement is reported as one, never as
an unavailable database."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from tests.helpers import run_cli
from tests.migration.conftest import migrate
from villager_shop.core.errors import describe
from villager_shop.core.urls import dbname_of

SCALE = 0.1
# check_data_integrity() takes ~75 ms at this scale: a statement_timeout of 40 ms cancels it, while
# the catalog reads around it take a few ms.


def _set(url: str, target: str, **settings: str) -> None:
    with psycopg.connect(url, autocommit=True) as c:
        for name, value in settings.items():
            c.execute(f"ALTER {target} SET {name} = '{value}'")


def _commands_succeed(url: str, rollback_url: str) -> None:
    for args in (("migrate", "verify"), ("migrate", "status"), ("migrate", "complete", "--yes", "--quiet-seconds", "1", "--no-reader-check")):
        res = run_cli(*args, database_url=url)
        assert res.returncode == 0, (args, res.stdout[-1000:], res.stderr[-1500:])
    res = run_cli("migrate", "rollback", "--yes", database_url=rollback_url)
    assert res.returncode == 0, res.stderr[-1500:]


def test_migrate_commands_work_under_a_short_database_or_role_statement_timeout(make_legacy_db: Any) -> None:
    url, other = make_legacy_db(SCALE), make_legacy_db(SCALE)
    migrate(url)
    migrate(other)
    _set(url, f'DATABASE "{dbname_of(url)}"', statement_timeout="40ms")
    _set(other, f'ROLE CURRENT_USER IN DATABASE "{dbname_of(other)}"', statement_timeout="40ms")
    with psycopg.connect(url) as c:  # the setting is in force for a new session
        assert c.execute("SHOW statement_timeout").fetchone() == ("40ms",)
    _commands_succeed(url, other)


def test_migrate_commands_work_under_short_lock_and_idle_in_transaction_timeouts(make_legacy_db: Any) -> None:
    url, other = make_legacy_db(0.05), make_legacy_db(0.05)
    migrate(url)
    migrate(other)
    for u in (url, other):
        _set(u, f'DATABASE "{dbname_of(u)}"', lock_timeout="20ms", idle_in_transaction_session_timeout="100ms")
    _commands_succeed(url, other)


def test_a_cancelled_statement_is_not_reported_as_an_unavailable_database(legacy_db: str) -> None:
    with psycopg.connect(legacy_db, autocommit=True) as c:
        c.execute("SET statement_timeout = '20ms'")
        with pytest.raises(psycopg.errors.QueryCanceled) as info:
            c.execute("SELECT pg_sleep(1)")
        c.execute("SET statement_timeout = 0")
        with psycopg.connect(legacy_db) as holder:
            holder.execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
            c.execute("SET lock_timeout = '20ms'")
            with pytest.raises(psycopg.errors.LockNotAvailable) as locked:
                c.execute("SELECT count(*) FROM users")
    message, code = describe(info.value)
    assert code == 1 and "unavailable" not in message and "cancel" in message and "statement_timeout" in message, message
    message, code = describe(locked.value)
    assert code == 1 and "unavailable" not in message and "lock_timeout" in message, message
