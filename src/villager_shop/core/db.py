"""Connections with timeouts: every tool connects through here."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql

from villager_shop.core.errors import ServerUnavailable
from villager_shop.core.urls import dbname_of, mask_url, with_dbname

APP_NAME = "villager-shop"


def connect(
    url: str,
    *,
    autocommit: bool = False,
    application_name: str = APP_NAME,
    connect_timeout: int = 5,
    **kwargs: Any,
) -> psycopg.Connection[Any]:
    """Open a connection, turning 'cannot connect' into a one-line ServerUnavailable. psycopg
    never prepares a named statement on it: the URL may be a transaction pooler's, which would hand
    the statement on to the next client while this client's next transaction runs where it does
    not exist. (Our statements are few and large: planning each again costs nothing measurable.)"""
    kwargs.setdefault("prepare_threshold", None)
    try:
        return psycopg.connect(
            url,
            autocommit=autocommit,
            application_name=application_name,
            connect_timeout=connect_timeout,
            **kwargs,
        )
    except psycopg.OperationalError as exc:
        raise ServerUnavailable(f"cannot connect to {mask_url(url)}: {_reason(exc)}") from exc


def _reason(exc: Exception) -> str:
    """libpq's cause ('Connection refused') and its hint, without the address it repeats."""
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    if not lines:
        return type(exc).__name__
    cause = lines[0].rsplit(" failed: ", 1)[-1]
    return f"{cause} ({' '.join(lines[1:])})" if len(lines) > 1 else cause


@contextmanager
def connection(url: str, **kwargs: Any) -> Iterator[psycopg.Connection[Any]]:
    conn = connect(url, **kwargs)
    try:
        with conn:
            yield conn
    finally:
        conn.close()


# Through pg_settings, so that a setting this server does not have (transaction_timeout before 17) is skipped.
OWN_TIMEOUTS = """
SELECT set_config(name, CASE name WHEN 'statement_timeout' THEN %s WHEN 'lock_timeout' THEN %s ELSE '0' END, true)
  FROM pg_settings
 WHERE name IN ('statement_timeout', 'lock_timeout', 'idle_in_transaction_session_timeout', 'transaction_timeout')
"""


@contextmanager
def own_timeouts(conn: psycopg.Connection[Any], *, statement_ms: int = 0, lock_ms: int = 0) -> Iterator[None]:
    """A transaction (a savepoint inside one) whose statements run under the caller's timeouts, not
    under a statement_timeout, lock_timeout, idle_in_transaction_session_timeout or (PostgreSQL 17+)
    transaction_timeout that the database or role sets for applications. Transaction-local (set_config(..., true)): nothing outlives it,
    so it is safe on a pooler's shared connection too."""
    with conn.transaction():
        conn.execute(OWN_TIMEOUTS, (f"{int(statement_ms)}ms", f"{int(lock_ms)}ms"))
        yield


def server_version_num(conn: psycopg.Connection[Any]) -> int:
    return int(conn.info.server_version)


def stop_work_when_client_dies(conn: psycopg.Connection[Any], interval_ms: int = 1000) -> None:
    """On PostgreSQL 14+, make the server abandon a running statement soon after this client dies
    (kill -9), instead of finishing e.g. an index build nobody waits for."""
    if conn.info.server_version < 140000:
        return
    # A restricted role or server: only an optimisation, go on without it.
    with contextlib.suppress(psycopg.Error):
        conn.execute(f"SET client_connection_check_interval = {int(interval_ms)}")
    if not conn.autocommit:
        conn.commit()


def database_exists(admin_url: str, dbname: str) -> bool:
    with connection(admin_url, autocommit=True) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone() is not None


def create_database(admin_url: str, dbname: str, *, template: str | None = None) -> str:
    """Create a database on the same server; return its URL."""
    with connection(admin_url, autocommit=True) as conn:
        stmt = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname))
        if template:
            stmt = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(dbname), sql.Identifier(template)
            )
        conn.execute(stmt)
    return with_dbname(admin_url, dbname)


def drop_database(admin_url: str, dbname: str) -> None:
    if dbname == dbname_of(admin_url):
        raise ValueError("refusing to drop the database we are connected to")
    with connection(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))
