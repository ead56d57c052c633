"""The Redis cache of the shop service: the only module that talks to Redis.

Rules (SPEC defect 9, the guide's Phase 4 without its bugs):

* Keys carry **generations**: `{prefix}:{scope}:{g}.{g2}:{name}:{hash(params)}`, `g` the scope's
  (`{prefix}:gen:{scope}`), `g2`... those of the finer parts the value depends on
  (`{prefix}:gen:{scope}:{part}`, e.g. a category, a product; see services.catalog). Every write
  calls `invalidate(scope, parts)` AFTER its transaction commits, which INCRs the generations of
  the parts it touched (or the scope's, without parts); readers look all the generations up in the
  same round trip as the value (one Lua script), so the first read after the INCR misses and
  rebuilds from committed data. A missing generation starts from the server clock (µs), so it is
  never reused; finer generations expire (2 x TTL). Old entries are never deleted: they expire
  (TTL), no SCAN/DEL. An INCR that fails (Redis down) is kept and retried until it succeeds, and
  cached reads go to PostgreSQL until then.
* **Stampede protection**: one rebuild per key. In a worker, concurrent requests for a missing key
  share one task (single-flight); across workers, the rebuilder holds `SET key:lock NX PX`, the
  others poll the key while the rebuild lock is held, then fall back to PostgreSQL.
* **Fail open, fast**: connect/read timeouts of tens of milliseconds, no retries, and a circuit
  breaker that skips Redis for a few seconds after a refused/lost connection, or after a timeout
  that a probe PING (own connection, generous deadline) confirms — a lone timeout is mostly the
  worker's own event-loop lag; the caller's loader (PostgreSQL) then answers. Hits, misses,
  errors and bypasses are counted (monitoring.metrics).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MaxConnectionsError, RedisError

from villager_shop.monitoring.metrics import (
    CACHE_BYPASSES,
    CACHE_ERRORS,
    CACHE_HITS,
    CACHE_INVALIDATIONS,
    CACHE_MISSES,
)

log = logging.getLogger("villager_shop.cache")

CATALOG = "catalog"
REDIS_ERRORS: tuple[type[BaseException], ...] = (RedisError, OSError, asyncio.TimeoutError)
# Redis refused or dropped the connection (not a timeout): open the breaker at once.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (RedisConnectionError, ConnectionError, FileNotFoundError)

# KEYS: the generation keys of a value (the scope's, then its finer ones); ARGV: key prefix, key
# suffix, TTL of the finer generation keys. Returns {generation, value}, generation being the
# generations joined by '.'. A missing generation (never set, expired or evicted) starts from the
# server clock in microseconds, so it can never fall back onto a number that older entries still carry.
_READ = """
local gens = {}
for i, k in ipairs(KEYS) do
  local g = redis.call('GET', k)
  if not g then
    local t = redis.call('TIME')
    local v = string.format('%.0f', t[1] * 1000000 + t[2])
    if i == 1 then redis.call('SET', k, v, 'NX') else redis.call('SET', k, v, 'NX', 'EX', ARGV[3]) end
    g = redis.call('GET', k)
  end
  gens[i] = g
end
local gen = table.concat(gens, '.')
local vk = ARGV[1] .. gen .. ARGV[2]
local v = redis.call('GET', vk)
local ttl = -2
if v then ttl = redis.call('PTTL', vk) end
return {gen, v, ttl}
"""
# KEYS: generation keys to bump; ARGV[1]: their TTL in seconds ('0': none, the scope's own key).
_BUMP = """
for _, k in ipairs(KEYS) do
  if redis.call('EXISTS', k) == 1 then
    redis.call('INCR', k)
  else
    local t = redis.call('TIME')
    redis.call('SET', k, string.format('%.0f', t[1] * 1000000 + t[2] + 1))
  end
  if ARGV[1] ~= '0' then redis.call('EXPIRE', k, ARGV[1]) end
end
return #KEYS
"""
_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

Loader = Callable[[], Coroutine[Any, Any, bytes]]


def connection_failed(exc: BaseException) -> bool:
    """Redis refused or dropped the connection — not our own pool being busy (all its
    connections in use, or no free one within the timeout), which says nothing about Redis."""
    if isinstance(exc, MaxConnectionsError):
        return False
    if isinstance(exc, RedisConnectionError) and isinstance(exc.__cause__, asyncio.TimeoutError):
        return False  # BlockingConnectionPool: "No connection available."
    return isinstance(exc, CONNECTION_ERRORS)


def params_digest(*parts: object) -> str:
    """A short stable digest of request parameters (free text included) for a key."""
    raw = "\x1f".join("" if p is None else str(p) for p in parts)
    return hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()[:32]


class Cache:
    def __init__(
        self,
        url: str | None,
        *,
        prefix: str = "villager",
        ttl_s: int = 300,
        timeout_ms: int = 100,
        breaker_s: float = 3.0,
        lock_ms: int = 3000,
        wait_ms: int = 300,
        poll_ms: int = 10,
        probe_ms: int = 1000,
        max_connections: int = 64,
        local_bytes: int = 32 * 2**20,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.ttl_s = ttl_s
        # finer generation keys expire (a re-created one starts from the clock: never reused)
        self.part_ttl_s = max(60, ttl_s * 2)
        self.probe_s = max(probe_ms, timeout_ms) / 1000
        self.max_connections = max_connections
        self.timeout_s = timeout_ms / 1000
        self.breaker_s = breaker_s
        self.lock_ms = lock_ms
        self.wait_s = wait_ms / 1000
        self.poll_s = poll_ms / 1000
        self._redis: aioredis.Redis | None = None
        self._read: Any = None
        self._bump: Any = None
        self._unlock: Any = None
        self._open_until = 0.0
        self._flights: dict[str, asyncio.Task[bytes]] = {}
        self._local_generation: dict[str, int] = {}
        self._pending: set[tuple[str, int]] = set()
        self._probe_redis: aioredis.Redis | None = None
        self._probe_task: asyncio.Task[None] | None = None
        self._flushing: asyncio.Task[None] | None = None
        self._retry_task: asyncio.Task[None] | None = None
        # The worker's own copy of values it read or built: key (generations included) -> (monotonic
        # expiry = the Redis entry's, value); least recently used first; at most local_bytes of values.
        self.local_bytes = local_bytes
        self._local: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._local_size = 0
        # Generation reads shared by the requests that ask before one is sent (see _generations).
        self._gen_keys: set[str] = set()
        self._gen_batch: asyncio.Future[dict[str, Any]] | None = None
        self._gen_task: asyncio.Task[None] | None = None

    # -- life cycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        if self.url is None:
            return
        # A bounded pool that queues (at most the Redis timeout) for a free connection: hundreds of
        # requests in flight must not open hundreds of connections, nor fail with "Too many
        # connections" as redis-py's default pool (100, no waiting) does under load.
        self._redis = aioredis.Redis.from_pool(aioredis.BlockingConnectionPool.from_url(
            self.url,
            max_connections=self.max_connections,
            timeout=self.timeout_s,
            socket_connect_timeout=self.timeout_s,
            socket_timeout=self.timeout_s,
            retry=Retry(NoBackoff(), 0),
            retry_on_timeout=False,
            health_check_interval=0,
        ))
        self._probe_redis = aioredis.Redis.from_url(
            self.url, socket_connect_timeout=self.probe_s, socket_timeout=self.probe_s, retry=Retry(NoBackoff(), 0),
            retry_on_timeout=False, health_check_interval=0, max_connections=2)
        self._read = self._redis.register_script(_READ)
        self._bump = self._redis.register_script(_BUMP)
        self._unlock = self._redis.register_script(_UNLOCK)
        self._retry_task = asyncio.create_task(self._retry_pending_forever())

    async def close(self) -> None:
        if self._gen_task is not None:
            self._gen_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._gen_task
            self._gen_task = None
        if self._retry_task is not None:
            self._retry_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retry_task
            self._retry_task = None
        if self._probe_task is not None:
            self._probe_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe_task
            self._probe_task = None
        if self._pending:
            await self._flush_pending()
        for client in (self._redis, self._probe_redis):
            if client is not None:
                with contextlib.suppress(*REDIS_ERRORS):
                    await client.aclose()
        self._redis = self._probe_redis = None

    @property
    def enabled(self) -> bool:
        return self._redis is not None

    def available(self) -> bool:
        """Redis configured and the circuit breaker closed."""
        return self._redis is not None and time.monotonic() >= self._open_until

    def _trip(self, operation: str, exc: BaseException) -> None:
        """Count the error. A refused or lost connection opens the breaker at once. A timeout (or
        another error) alone does not: under load it is mostly the worker's own event-loop lag,
        Redis having answered in time; it starts one probe (a PING with a generous deadline, on a
        connection of its own) and only a failed probe opens the breaker."""
        CACHE_ERRORS.labels(operation).inc()
        if connection_failed(exc):
            self._open(operation, exc)
        elif self._probe_task is None or self._probe_task.done():
            self._probe_task = asyncio.create_task(self._probe(operation, exc))

    def _open(self, operation: str, exc: BaseException) -> None:
        if time.monotonic() >= self._open_until:
            log.warning("redis %s failed (%s: %s); serving from PostgreSQL for %.1fs",
                        operation, type(exc).__name__, exc, self.breaker_s)
        self._open_until = time.monotonic() + self.breaker_s

    async def _probe(self, operation: str, exc: BaseException) -> None:
        if self._probe_redis is None:
            return
        try:
            async with asyncio.timeout(self.probe_s * 2):
                await self._probe_redis.ping()
        except REDIS_ERRORS as probe_exc:
            CACHE_ERRORS.labels("ping").inc()
            self._open(operation, probe_exc if connection_failed(probe_exc) else exc)

    async def _call(self, operation: str, coro: Awaitable[Any]) -> Any:
        """Run one Redis command; errors trip the breaker and re-raise. The socket timeouts bound
        each network wait; this deadline is only a safety net (it also counts event-loop lag)."""
        try:
            async with asyncio.timeout(max(0.25, self.timeout_s * 3)):
                return await coro
        except REDIS_ERRORS as exc:
            self._trip(operation, exc)
            raise

    # -- reads --------------------------------------------------------------------------------

    def key(self, scope: str, generation: str, name: str) -> str:
        return f"{self.prefix}:{scope}:{generation}:{name}"

    def generation_key(self, scope: str, part: str | None = None) -> str:
        """`{prefix}:gen:{scope}` (every value of the scope), or `{prefix}:gen:{scope}:{part}`."""
        return f"{self.prefix}:gen:{scope}" if part is None else f"{self.prefix}:gen:{scope}:{part}"

    def _local_key(self, scope: str, keys: Sequence[str], name: str) -> str:
        gens = ".".join(str(self._local_generation.get(k, 0)) for k in keys)
        return f"local:{scope}:{gens}:{name}"

    async def get_or_load(self, scope: str, name: str, loader: Loader, parts: Sequence[str] = ()) -> bytes:
        """The cached value of `name` in `scope`, or `loader()`'s (stored for the TTL). The value
        depends on the scope's generation and on those of `parts` (see `invalidate`); all of them
        are read from Redis for every call (see `_lookup`)."""
        keys = [self.generation_key(scope), *(self.generation_key(scope, p) for p in parts)]
        if not self.available():
            CACHE_BYPASSES.labels(scope).inc()
            return await self._single_flight(self._local_key(scope, keys, name), loader)
        assert self._redis is not None
        if self._pending:
            await self._flush_pending()
            if self._pending:  # a missed invalidation is not in Redis yet: its entries may be stale
                CACHE_BYPASSES.labels(scope).inc()
                return await self._single_flight(self._local_key(scope, keys, name), loader)
        try:
            generation, value = await self._lookup(scope, name, keys)
        except REDIS_ERRORS:
            return await self._single_flight(self._local_key(scope, keys, name), loader)
        if value is not None:
            CACHE_HITS.labels(scope).inc()
            return value
        CACHE_MISSES.labels(scope).inc()
        key = self.key(scope, generation, name)
        return await self._single_flight(key, lambda: self._rebuild(key, loader))

    async def get_cached(self, scope: str, name: str, parts: Sequence[str] = ()) -> bytes | None:
        """The cached value if Redis holds it now (a hit is counted), else None — also when Redis
        is skipped or fails; the caller then goes through `get_or_load`, which counts the rest."""
        if not self.available() or self._pending:
            return None
        keys = [self.generation_key(scope), *(self.generation_key(scope, p) for p in parts)]
        try:
            _, value = await self._lookup(scope, name, keys)
        except REDIS_ERRORS:
            return None
        if value is None:
            return None
        CACHE_HITS.labels(scope).inc()
        return value

    async def _lookup(self, scope: str, name: str, keys: list[str]) -> tuple[str, bytes | None]:
        """(generation, value or None) of `name` as Redis has them now. The generations are always
        read from Redis, by a read sent after this call began (so after any invalidation that
        completed before it: no stale read); the value comes from the worker's own copy when it
        holds the key of those generations, else from Redis (one Lua call, which also starts
        missing generations), and is then kept in the copy for the rest of its Redis TTL."""
        if self.local_bytes > 0 and self._local:
            gens = await self._generations(keys)
            if all(g is not None for g in gens):
                generation = ".".join(g.decode() if isinstance(g, bytes) else str(g) for g in gens)
                key = self.key(scope, generation, name)
                value = self._local_get(key)
                if value is not None:
                    return generation, value
        raw_generation, raw, ttl_ms = await self._call(
            "get", self._read(keys=keys, args=[f"{self.prefix}:{scope}:", f":{name}", self.part_ttl_s]))
        generation = raw_generation.decode()
        if raw is None:
            return generation, None
        value = bytes(raw)
        self._local_put(self.key(scope, generation, name), value, int(ttl_ms))
        return generation, value

    async def _generations(self, keys: Sequence[str]) -> list[Any]:
        """The current values of generation keys (None when missing). Requests of a worker share
        reads: one MGET at a time is in flight, and it serves every request that asked before it
        was sent; a request that asks while one is in flight waits for the next one."""
        batch = self._gen_batch
        if batch is None:
            batch = self._gen_batch = asyncio.get_running_loop().create_future()
            self._gen_keys = set()
            if self._gen_task is None or self._gen_task.done():
                self._gen_task = asyncio.create_task(self._read_generations())
        self._gen_keys.update(keys)
        values = await asyncio.shield(batch)
        return [values[k] for k in keys]

    async def _read_generations(self) -> None:
        while self._gen_batch is not None:
            batch, keys = self._gen_batch, sorted(self._gen_keys)
            self._gen_batch, self._gen_keys = None, set()  # later callers: the next read
            try:
                assert self._redis is not None
                values = await self._call("get", self._redis.mget(keys))
            except Exception as exc:  # every caller of this read sees it (REDIS_ERRORS: no cache)
                batch.set_exception(exc)
                batch.exception()  # marked as retrieved: its callers may all have gone
                continue
            except BaseException:  # cancelled (shutdown): so are its callers
                batch.cancel()
                raise
            batch.set_result(dict(zip(keys, values, strict=True)))

    def _local_get(self, key: str) -> bytes | None:
        entry = self._local.get(key)
        if entry is None:
            return None
        if time.monotonic() >= entry[0]:  # the Redis entry has expired too
            del self._local[key]
            self._local_size -= len(entry[1])
            return None
        self._local.move_to_end(key)
        return entry[1]

    def _local_put(self, key: str, value: bytes, ttl_ms: int) -> None:
        if ttl_ms <= 0 or len(value) > self.local_bytes // 4:
            return
        old = self._local.pop(key, None)
        if old is not None:
            self._local_size -= len(old[1])
        self._local[key] = (time.monotonic() + ttl_ms / 1000, value)
        self._local_size += len(value)
        while self._local_size > self.local_bytes:
            _, (_, evicted) = self._local.popitem(last=False)
            self._local_size -= len(evicted)

    async def _single_flight(self, key: str, load: Loader) -> bytes:
        task = self._flights.get(key)
        if task is None:
            task = asyncio.create_task(load())
            self._flights[key] = task
            task.add_done_callback(lambda t, k=key: self._flight_done(k, t))  # type: ignore[misc]
        # shield: a client that goes away does not cancel the rebuild the others wait for
        return await asyncio.shield(task)

    def _flight_done(self, key: str, task: asyncio.Task[bytes]) -> None:
        if self._flights.get(key) is task:
            del self._flights[key]
        if not task.cancelled():
            task.exception()  # retrieved here so that an unawaited failure is not logged as lost

    async def _rebuild(self, key: str, loader: Loader) -> bytes:
        """Rebuild one key in this worker; other workers wait on the Redis lock."""
        assert self._redis is not None
        token = secrets.token_hex(8)
        lock = key + ":lock"
        try:
            locked = await self._call("lock", self._redis.set(lock, token, nx=True, px=self.lock_ms))
            if not locked:
                value = await self._wait_for(key)
                if value is not None:
                    return value
                return await loader()  # the holder is slow or gone: answer from PostgreSQL
            # a rebuild that finished between our read and our lock
            value = await self._call("get", self._redis.get(key))
            if value is not None:
                await self._release(lock, token)
                return bytes(value)
        except REDIS_ERRORS:
            return await loader()
        try:
            value = await loader()
        except BaseException:
            await self._release(lock, token)
            raise
        try:
            await self._call("set", self._redis.set(key, value, ex=self.ttl_s))
        except REDIS_ERRORS:
            pass
        else:
            self._local_put(key, value, self.ttl_s * 1000)
        await self._release(lock, token)
        return value

    async def _wait_for(self, key: str) -> bytes | None:
        """Wait for another worker's rebuild: as long as its lock is held (the lock's TTL bounds it),
        not a fixed time; None when the holder went away without a value (then ask PostgreSQL)."""
        assert self._redis is not None
        lock = key + ":lock"
        deadline = time.monotonic() + max(self.wait_s, self.lock_ms / 1000)
        while time.monotonic() < deadline:
            await asyncio.sleep(self.poll_s)
            value, holder = await self._call("get", self._redis.mget(key, lock))
            if value is not None:
                return bytes(value)
            if holder is None:
                return None
        return None

    async def _release(self, lock: str, token: str) -> None:
        if self._unlock is None:
            return
        with contextlib.suppress(*REDIS_ERRORS):
            await self._call("unlock", self._unlock(keys=[lock], args=[token]))

    # -- writes -------------------------------------------------------------------------------

    async def invalidate(self, scope: str = CATALOG, parts: Iterable[str] | None = None) -> None:
        """Call AFTER the write committed: later reads miss and rebuild from the new data.
        Without `parts`, every value of the scope; with them, only the values that depend on one
        of those parts."""
        if parts is None:
            keys, ttl = [self.generation_key(scope)], 0
        else:
            keys, ttl = sorted({self.generation_key(scope, p) for p in parts}), self.part_ttl_s
            if not keys:
                return
        for k in keys:
            self._local_generation[k] = self._local_generation.get(k, 0) + 1
        CACHE_INVALIDATIONS.labels(scope).inc()
        if self._redis is None:
            return
        try:
            await self._call("invalidate", self._bump(keys=keys, args=[ttl]))
        except REDIS_ERRORS:
            self._pending.update((k, ttl) for k in keys)

    async def _flush_pending(self) -> None:
        """Replay the missed invalidations; concurrent callers share one replay."""
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.create_task(self._flush_pending_once())
        await asyncio.shield(self._flushing)

    async def _flush_pending_once(self) -> None:
        for key, ttl in sorted(self._pending):
            try:
                await self._call("invalidate", self._bump(keys=[key], args=[ttl]))
            except REDIS_ERRORS:
                return
            self._pending.discard((key, ttl))

    async def _retry_pending_forever(self, every_s: float = 0.5) -> None:
        while True:
            await asyncio.sleep(every_s)
            if self._pending:
                await self._flush_pending()

    # -- health -------------------------------------------------------------------------------

    async def ping(self) -> str:
        """'connected', 'degraded' (configured but failing or breaker open) or 'disabled'."""
        if self._redis is None:
            return "disabled"
        if not self.available():
            return "degraded"
        try:
            await self._call("ping", self._redis.ping())
        except REDIS_ERRORS:
            return "degraded"
        return "connected"
