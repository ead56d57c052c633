"""Whether Redis is worth asking: fail open, fast.

A cache that waits for a Redis that is gone makes every request slower than no cache at all. So
the clients have connect/read timeouts of tens of milliseconds and no retries, and a circuit
breaker skips Redis for a few seconds after a refused/lost connection, or after a timeout that a
probe PING (own connection, generous deadline) confirms — a lone timeout is mostly the worker's
own event-loop lag. While it is open the caller's loader (PostgreSQL) answers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MaxConnectionsError, RedisError

from villager_shop.monitoring.metrics import CACHE_ERRORS

log = logging.getLogger("villager_shop.api.cache")

REDIS_ERRORS: tuple[type[BaseException], ...] = (RedisError, OSError, asyncio.TimeoutError)
# Redis refused or dropped the connection (not a timeout): open the breaker at once.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (RedisConnectionError, ConnectionError, FileNotFoundError)


def connection_failed(exc: BaseException) -> bool:
    """Redis refused or dropped the connection — not our own pool being busy (all its
    connections in use, or no free one within the timeout), which says nothing about Redis."""
    if isinstance(exc, MaxConnectionsError):
        return False
    if isinstance(exc, RedisConnectionError) and isinstance(exc.__cause__, asyncio.TimeoutError):
        return False  # BlockingConnectionPool: "No connection available."
    return isinstance(exc, CONNECTION_ERRORS)


class Breaker:
    """The clients to Redis and the breaker in front of them. `on_open`: Redis is being skipped
    (the lease ends); `on_reached`: a call came back (the lease may go on)."""

    def __init__(self, *, timeout_ms: int, breaker_s: float, probe_ms: int, max_connections: int,
                 on_open: Callable[[], None], on_reached: Callable[[], None]) -> None:
        self.timeout_s = timeout_ms / 1000
        self.breaker_s = breaker_s
        self.probe_s = max(probe_ms, timeout_ms) / 1000
        self.max_connections = max_connections
        self._on_open = on_open
        self._on_reached = on_reached
        self._open_until = 0.0
        self._probe_redis: aioredis.Redis | None = None
        self.probe_task: asyncio.Task[None] | None = None

    def connect(self, url: str) -> aioredis.Redis:
        """The client the cache calls through, and the probe's own."""
        # A bounded pool that queues (at most the Redis timeout) for a free connection: hundreds of
        # requests in flight must not open hundreds of connections, nor fail with "Too many
        # connections" as redis-py's default pool (100, no waiting) does under load.
        redis = aioredis.Redis.from_pool(aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=self.max_connections,
            timeout=self.timeout_s,
            socket_connect_timeout=self.timeout_s,
            socket_timeout=self.timeout_s,
            retry=Retry(NoBackoff(), 0),
            retry_on_timeout=False,
            health_check_interval=0,
        ))
        self._probe_redis = aioredis.Redis.from_url(
            url, socket_connect_timeout=self.probe_s, socket_timeout=self.probe_s, retry=Retry(NoBackoff(), 0),
            retry_on_timeout=False, health_check_interval=0, max_connections=2)
        return redis

    async def stop_probe(self) -> None:
        if self.probe_task is not None:
            self.probe_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.probe_task
            self.probe_task = None

    async def close(self) -> None:
        if self._probe_redis is not None:
            with contextlib.suppress(*REDIS_ERRORS):
                await self._probe_redis.aclose()
        self._probe_redis = None

    def closed(self) -> bool:
        """The breaker is closed: Redis may be asked."""
        return time.monotonic() >= self._open_until

    def trip(self, operation: str, exc: BaseException) -> None:
        """Count the error. A refused or lost connection opens the breaker at once. A timeout (or
        another error) alone does not: under load it is mostly the worker's own event-loop lag,
        Redis having answered in time; it starts one probe (a PING with a generous deadline, on a
        connection of its own) and only a failed probe opens the breaker."""
        CACHE_ERRORS.labels(operation).inc()
        if connection_failed(exc):
            self._open(operation, exc)
        elif self.probe_task is None or self.probe_task.done():
            self.probe_task = asyncio.create_task(self._probe(operation, exc))

    def _open(self, operation: str, exc: BaseException) -> None:
        self._on_open()
        if time.monotonic() >= self._open_until:
            log.warning("redis %s failed (%s: %s); serving from PostgreSQL for %.1fs",
                        operation, type(exc).__name__, exc, self.breaker_s)
        self._open_until = time.monotonic() + self.breaker_s

    def lease_error(self, operation: str, exc: BaseException) -> None:
        """The lease ended (lease.py): count it; a failed heartbeat is a failed Redis call."""
        if operation == "subscribe":
            CACHE_ERRORS.labels(operation).inc()
            log.warning("redis invalidation channel lost (%s: %s); checking copies in Redis until it is back",
                        type(exc).__name__, exc)
        else:
            self.trip(operation, exc)

    async def _probe(self, operation: str, exc: BaseException) -> None:
        if self._probe_redis is None:
            return
        try:
            async with asyncio.timeout(self.probe_s * 2):
                await self._probe_redis.ping()
        except REDIS_ERRORS as probe_exc:
            CACHE_ERRORS.labels("ping").inc()
            self._open(operation, probe_exc if connection_failed(probe_exc) else exc)

    async def call(self, operation: str, coro: Awaitable[Any]) -> Any:
        """Run one Redis command; errors trip the breaker and re-raise. The socket timeouts bound
        each network wait; this deadline is only a safety net (it also counts event-loop lag)."""
        try:
            async with asyncio.timeout(max(0.25, self.timeout_s * 3)):
                result = await coro
        except REDIS_ERRORS as exc:
            self.trip(operation, exc)
            raise
        self._on_reached()
        return result
