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


def own_session(conn: psycopg.Connection[Any], interval_ms: int = 1000) -> None:
    """For a session of our own on the server itself (the migration's lock holder, its walkers and
    DDL connections; never a pooler's, see core.pooler), set once for its lifetime:
    - `idle_session_timeout` 0 (14+): a database's or role's would end the session that holds the
      run lock while it waits between steps or through a pause, and let a second run start;
    - `transaction_timeout` 0 (17+): a concurrent index build runs outside any transaction block
      but is bounded by it;
    - `client_connection_check_interval` (14+): the server abandons a running statement soon after
      this client dies (kill -9), instead of finishing e.g. an index build nobody waits for.
    A restricted role or an older server: each is skipped, and the run goes on without it."""
    version = conn.info.server_version
    wanted = [("idle_session_timeout", "0", 140000), ("transaction_timeout", "0", 170000),
              ("client_connection_check_interval", str(int(interval_ms)), 140000)]
    for name, value, since in wanted:
        if version < since:
            continue
        with contextlib.suppress(psycopg.Error):
            conn.execute(f"SET {name} = {value}")
        if not conn.autocommit:
            conn.commit()


def relation_exists(conn: psycopg.Connection[Any], name: str) -> bool:
    """Whether `name` (schema-qualified, else looked up on the search path) is a table, view, index
    or sequence. to_regclass answers NULL for a missing relation or schema, where a cast to regclass
    raises and would abort the caller's transaction."""
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()
    return bool(row and row[0])


# Databases on a server, through an autocommit connection to it (CREATE and DROP DATABASE cannot run
# in a transaction block). The `_on` forms use the caller's connection, which may go on to do more
# there; the others open one to `admin_url` for the single operation.


def database_exists_on(admin: psycopg.Connection[Any], dbname: str) -> bool:
    return admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone() is not None


def create_database_on(admin: psycopg.Connection[Any], dbname: str, *, template: str | None = None,
                       locale_of: str | None = None) -> None:
    """`locale_of`: a database whose encoding, collation and locale provider the new one takes when
    that database exists (a copy of a shop must sort and compare text as the shop does). A template
    other than template0 accepts only its own."""
    parts: list[sql.Composable] = [sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname))]
    if template:
        parts.append(sql.SQL("TEMPLATE {}").format(sql.Identifier(template)))
    if locale_of is not None:
        row = admin.execute(
            "SELECT pg_encoding_to_char(encoding), datcollate, datctype FROM pg_database WHERE datname = %s",
            (locale_of,),
        ).fetchone()
        if row is not None:
            parts.append(sql.SQL("ENCODING {} LC_COLLATE {} LC_CTYPE {}").format(
                sql.Literal(row[0]), sql.Literal(row[1]), sql.Literal(row[2])))
            parts.extend(_locale_provider(admin, locale_of))
    admin.execute(sql.SQL(" ").join(parts))


def _locale_provider(admin: psycopg.Connection[Any], like: str) -> list[sql.Composable]:
    version = int(admin.info.server_version)
    if version < 150000:
        return []
    column = "datlocale" if version >= 170000 else "daticulocale"
    row = admin.execute(
        sql.SQL("SELECT datlocprovider::text, {} FROM pg_database WHERE datname = %s").format(sql.Identifier(column)),
        (like,),
    ).fetchone()
    if row is None:
        return []
    provider, locale = row
    if provider == "i" and locale:
        return [sql.SQL("LOCALE_PROVIDER icu ICU_LOCALE {}").format(sql.Literal(locale))]
    if provider == "b" and locale:
        return [sql.SQL("LOCALE_PROVIDER builtin BUILTIN_LOCALE {}").format(sql.Literal(locale))]
    return [sql.SQL("LOCALE_PROVIDER libc")]


def drop_database_on(admin: psycopg.Connection[Any], dbname: str) -> None:
    """Sessions still connected to it are terminated (WITH FORCE)."""
    admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))


def database_exists(admin_url: str, dbname: str) -> bool:
    with connection(admin_url, autocommit=True) as conn:
        return database_exists_on(conn, dbname)


def create_database(admin_url: str, dbname: str, *, template: str | None = None) -> str:
    """Create a database on the same server; return its URL."""
    with connection(admin_url, autocommit=True) as conn:
        create_database_on(conn, dbname, template=template)
    return with_dbname(admin_url, dbname)


def drop_database(admin_url: str, dbname: str) -> None:
    if dbname == dbname_of(admin_url):
        raise ValueError("refusing to drop the database we are connected to")
    with connection(admin_url, autocommit=True) as conn:
        drop_database_on(conn, dbname)
