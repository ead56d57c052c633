"""The async connection pool of the service: timeouts on connect and on every statement, on the
server itself or through a transaction pooler (PgBouncer in transaction mode and the like)."""

from __future__ import annotations

import select
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from villager_shop.api.config import ServiceConfig
from villager_shop.core.channels import SELF_INVALIDATING_SESSION
from villager_shop.core.errors import ConfigError
from villager_shop.core.pooler import shares_server_connections
from villager_shop.core.wal import wrote

APP_NAME = "villager-shop serve"


async def check_connection(conn: AsyncConnection[Any]) -> None:
    """The pool's check at checkout, without a round trip when nothing arrived: a server that ends
    a connection sends its error and closes the socket, which then reads as ready. Only then is
    the connection asked (psycopg_pool's own check, one round trip: 19 % fewer requests per
    second on a 0.3 ms query when done on every checkout)."""
    if conn.closed or conn.broken:
        raise psycopg.OperationalError("connection is closed")
    poller = select.poll()  # not select.select: it fails on descriptors above 1024
    poller.register(conn.pgconn.socket, select.POLLIN)
    if poller.poll(0):
        await AsyncConnectionPool.check_connection(conn)


def session_settings(config: ServiceConfig) -> dict[str, str]:
    """What every statement of the service runs under. Its product and variant writes invalidate
    the cache themselves, so the catalog triggers send no NOTIFY for them (SELF_INVALIDATING_SESSION)."""
    ms = config.statement_timeout_ms
    return {"statement_timeout": str(ms), "idle_in_transaction_session_timeout": str(max(ms * 2, 10_000)),
            "lock_timeout": str(ms), SELF_INVALIDATING_SESSION: "on"}


def begin_with_settings(settings: dict[str, str]) -> bytes:
    """One simple-protocol query that opens a transaction and sets `settings` for it alone: through
    a transaction pooler it costs no round trip more than the BEGIN it replaces."""
    calls = ", ".join(f"set_config('{name}', '{value}', true)" for name, value in settings.items())
    return f"BEGIN; SELECT {calls}".encode()


class ShopPool(AsyncConnectionPool[AsyncConnection[Any]]):
    """The service's pool. Through a transaction pooler a connection's consecutive transactions run
    on different server connections, shared with other clients: a session setting would be lost,
    or worse, reach them; a session pooler refuses the `options` startup parameter. So each
    transaction opens with its own settings, local to it (autocommit connections,
    `begin_with_settings`, committed or rolled back when `connection()` ends), wherever the pool
    connects; through a transaction pooler psycopg also prepares no named statement."""

    def __init__(self, conninfo: str, *, begin: bytes | None, **kwargs: Any) -> None:
        super().__init__(conninfo, **kwargs)
        self.begin = begin

    @asynccontextmanager
    async def connection(self, timeout: float | None = None) -> AsyncIterator[AsyncConnection[Any]]:
        """A connection whose statements until the end of the block run under the service's
        settings: committed at the end, rolled back on an exception."""
        async with super().connection(timeout) as conn:
            if self.begin is not None:
                await conn.execute(self.begin)
            yield conn

    @asynccontextmanager
    async def transaction(self, timeout: float | None = None) -> AsyncIterator[AsyncConnection[Any]]:
        """`connection()` whose block is one transaction. Through a pooler it already is one
        (`conn.transaction()` there would only add a savepoint and two round trips)."""
        async with self.connection(timeout) as conn:
            if self.begin is not None:
                yield conn
            else:
                async with conn.transaction():
                    yield conn


def make_pool(config: ServiceConfig, *, through_pooler: bool, url: str | None = None, name: str = "villager-shop",
              max_size: int | None = None, min_size: int | None = None, timeout_s: float | None = None) -> ShopPool:
    """The pool of DATABASE_URL, or (`url`...) of a standby: the same settings and timeouts."""
    # Every transaction opens with its own settings, on the server itself too: a session pooler
    # (PgBouncer in session mode) refuses the `options` startup parameter, and the settings in the
    # BEGIN's message cost no round trip (measured: no difference in transactions per second).
    settings = session_settings(config)
    kwargs: dict[str, Any] = {"connect_timeout": config.db_connect_timeout_s, "application_name": APP_NAME,
                              "autocommit": True}
    if through_pooler:
        kwargs["prepare_threshold"] = None
    max_size = config.db_pool_max if max_size is None else max_size
    return ShopPool(
        config.database_url if url is None else url,
        begin=begin_with_settings(settings),
        min_size=min(config.db_pool_min if min_size is None else min_size, max_size),
        max_size=max_size,
        timeout=config.db_pool_timeout_s if timeout_s is None else timeout_s,
        open=False,
        name=name,
        # A connection attempt that keeps failing is retried with a doubling delay (1, 2, 4 s ...) and
        # given up after this long; demand then starts a fresh one at once. At 60 s, a slot lost in a
        # 35 s outage was still sleeping up to 16 s after the server came back: requests that waited
        # for it got 503 for 22 s (4 of 158-160, one client every 0.2 s, 2 workers, two runs); at
        # 10 s, none (0 of 249-250).
        reconnect_timeout=10,
        # A connection the server ended (a `restore` swapping the database in, a restart, an idle
        # timeout) is replaced instead of failing a request with 503.
        check=check_connection,
        kwargs=kwargs,
    )


# The insert position, not pg_current_wal_lsn() (what was written out): with synchronous_commit
# off a commit returns before its record is written, and only the insert position is then past it.
WAL_POSITION = "SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn"


async def wal_position(conn: AsyncConnection[Any]) -> int:
    """The primary's WAL position (as a number: core.wal): taken after a commit, every commit so
    far ends at or before it."""
    cur = await conn.execute(WAL_POSITION)
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def committed(pool: ShopPool) -> int:
    """After a write transaction committed: the WAL position that includes it, recorded as the
    request's read-your-writes token (core.wal.wrote) and handed to the cache's invalidation."""
    async with pool.connection() as conn:
        lsn = await wal_position(conn)
    wrote(lsn)
    return lsn


@dataclass(frozen=True)
class Connections:
    """How the service reaches PostgreSQL, found at start."""

    through_pooler: bool  # DATABASE_URL is a transaction pooler
    listen_url: str | None  # where the catalog listener LISTENs; None: no listener
    listener_off: str | None = None  # why there is none

    def invalidation_off_warning(self, cache_ttl_s: int) -> str | None:
        if self.listener_off is None:
            return None
        return (f"warning: catalog changes by other programs are not invalidated ({self.listener_off}): they are"
                f" served stale for up to the cache TTL ({cache_ttl_s} s); set DATABASE_DIRECT_URL to the server"
                " itself for the service to listen for them")


POOLER_ONLY = "DATABASE_URL is a transaction pooler and DATABASE_DIRECT_URL is unset"


def find_connections(config: ServiceConfig) -> Connections:
    """Probe the URLs (once per process each). LISTEN needs a session of its own, which a
    transaction pooler does not give: a notification would reach whichever client holds the
    server connection at that moment, or nobody. So the listener uses the direct URL; with only a
    pooler given the service runs without it (ready, changes by other programs stale up to the
    TTL). A DATABASE_DIRECT_URL that is itself a transaction pooler is refused."""
    timeout = config.db_connect_timeout_s
    pooled = shares_server_connections(config.database_url, connect_timeout=timeout)
    direct = config.database_direct_url
    if direct is not None:
        if shares_server_connections(direct, connect_timeout=timeout):
            raise ConfigError("DATABASE_DIRECT_URL is a transaction pooler (its server connections are shared"
                              " between clients): set it to the server itself, or a session-mode pool")
        return Connections(pooled, direct)
    if pooled:
        return Connections(True, None, POOLER_ONLY)
    return Connections(False, config.database_url)
