"""The async connection pool of the service: timeouts on connect and on every statement."""

from __future__ import annotations

import select
from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from villager_shop.api.config import ServiceConfig
from villager_shop.migration.steps.catalog_notify import SELF_INVALIDATING_SESSION

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


def make_pool(config: ServiceConfig) -> AsyncConnectionPool[Any]:
    options = (f"-c statement_timeout={config.statement_timeout_ms}"
               f" -c idle_in_transaction_session_timeout={max(config.statement_timeout_ms * 2, 10_000)}"
               f" -c lock_timeout={config.statement_timeout_ms}"
               # its product and variant writes invalidate the cache themselves: no catalog NOTIFY
               f" -c {SELF_INVALIDATING_SESSION}=on")
    return AsyncConnectionPool(
        config.database_url,
        min_size=min(config.db_pool_min, config.db_pool_max),
        max_size=config.db_pool_max,
        timeout=config.db_pool_timeout_s,
        open=False,
        name="villager-shop",
        # A connection attempt that keeps failing is retried with a doubling delay (1, 2, 4 s ...) and
        # given up after this long; demand then starts a fresh one at once. At 60 s, a slot lost in a
        # 35 s outage was still sleeping up to 16 s after the server came back: requests that waited
        # for it got 503 for 22 s (4 of 158-160, one client every 0.2 s, 2 workers, two runs); at
        # 10 s, none (0 of 249-250).
        reconnect_timeout=10,
        # A connection the server ended (a `restore` swapping the database in, a restart, an idle
        # timeout) is replaced instead of failing a request with 503.
        check=check_connection,
        kwargs={"connect_timeout": config.db_connect_timeout_s, "application_name": APP_NAME, "options": options},
    )
