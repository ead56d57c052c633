"""The async connection pool of the service: timeouts on connect and on every statement."""

from __future__ import annotations

from typing import Any

from psycopg_pool import AsyncConnectionPool

from villager_shop.api.config import ServiceConfig
from villager_shop.migration.steps.catalog_notify import SELF_INVALIDATING_SESSION

APP_NAME = "villager-shop serve"


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
        reconnect_timeout=60,
        # One round trip per checkout: a connection the server ended (a `restore` swapping the
        # database in, a restart, an idle timeout) is replaced instead of failing a request with 503.
        check=AsyncConnectionPool.check_connection,
        kwargs={"connect_timeout": config.db_connect_timeout_s, "application_name": APP_NAME, "options": options},
    )
