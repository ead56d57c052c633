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
* **Standbys**: every invalidation also records the primary's WAL position after its write
  (`{prefix}:wal:{scope}`, the highest kept), read with the generations; a rebuild reads from a
  standby only if it has replayed past it, else from the primary (`_rebuild`, core.wal).
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
import functools
import hashlib
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MaxConnectionsError, RedisError, ResponseError

from villager_shop.api.cache.lease import BROADCAST, Lease
from villager_shop.core.wal import UNREACHABLE, current_floor, floor_at_least
from villager_shop.monitoring.metrics import (
    CACHE_BYPASSES,
    CACHE_ERRORS,
    CACHE_HITS,
    CACHE_INVALIDATIONS,
    CACHE_MISSES,
)

log = logging.getLogger("villager_shop.api.cache.store")

CATALOG = "catalog"
REDIS_ERRORS: tuple[type[BaseException], ...] = (RedisError, OSError, asyncio.TimeoutError)
# Redis refused or dropped the connection (not a timeout): open the breaker at once.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (RedisConnectionError, ConnectionError, FileNotFoundError)

# Values that list products (see `get_or_load(shows=...)`) also depend on what they show: the
# scope's "shown" hash `{prefix}:shown:{scope}` holds `_epoch` (when the hash was created: a lost
# hash is a new epoch), `_seq` (a counter) and, per product, the `_seq` of the last change to what
# is shown of it. Such a value is stored as "\0" .. epoch .. " p1=g1 p2=g2 ...\n" .. body, g being
# the product's field when the value was stored ('0': none); it is valid while all are unchanged.
_SHOWN_OK = r"""
local function shown_ok(v, h)
  if string.byte(v, 1) ~= 0 then return true end
  local e = string.find(v, '\n', 1, true)
  if not e then return false end
  local epoch = nil
  for word in string.gmatch(string.sub(v, 2, e - 1), '%S+') do
    if epoch == nil then
      epoch = word
      if redis.call('HGET', h, '_epoch') ~= epoch then return false end
    else
      local p, g = string.match(word, '^(.-)=(.*)$')
      if (redis.call('HGET', h, p) or '0') ~= g then return false end
    end
  end
  return epoch ~= nil
end
local function shown_init(h)
  if redis.call('HEXISTS', h, '_epoch') == 0 then
    local t = redis.call('TIME')
    local now = string.format('%.0f', t[1] * 1000000 + t[2])
    redis.call('HSET', h, '_epoch', now, '_seq', now)
  end
end
"""
# KEYS: the generation keys of a value (the scope's, then its finer ones), then the shown hash, then
# the scope's invalidation WAL position; ARGV: key prefix, key suffix, TTL of the finer generation
# keys. Returns {generation, value, its PTTL, shown epoch, shown seq, WAL position (false: none
# recorded)}, generation being the generations joined by '.', value false when missing or no
# longer valid. A missing generation (never set, expired or evicted) starts from the
# server clock in microseconds, so it can never fall back onto a number that older entries still carry.
_READ = _SHOWN_OK + r"""
local n = #KEYS - 2
local gens = {}
for i = 1, n do
  local k = KEYS[i]
  local g = redis.call('GET', k)
  if not g then
    local t = redis.call('TIME')
    local v = string.format('%.0f', t[1] * 1000000 + t[2])
    if i == 1 then redis.call('SET', k, v, 'NX') else redis.call('SET', k, v, 'NX', 'EX', ARGV[3]) end
    g = redis.call('GET', k)
  end
  gens[i] = g
end
local h = KEYS[n + 1]
shown_init(h)
local gen = table.concat(gens, '.')
local vk = ARGV[1] .. gen .. ARGV[2]
local v = redis.call('GET', vk)
local ttl = -2
if v then
  if shown_ok(v, h) then ttl = redis.call('PTTL', vk) else v = false end
end
return {gen, v, ttl, redis.call('HGET', h, '_epoch'), redis.call('HGET', h, '_seq'), redis.call('GET', KEYS[n + 2])}
"""
# KEYS: generation keys, then the shown hash; ARGV: fields of that hash. The per-request check of a
# worker's own copies: {generation values..., shown epoch, field values...} (false: missing).
_CHECK = r"""
local out = {}
local n = #KEYS - 1
for i = 1, n do out[i] = redis.call('GET', KEYS[i]) end
local h = KEYS[n + 1]
out[n + 1] = redis.call('HGET', h, '_epoch')
for j = 1, #ARGV do out[n + 1 + j] = redis.call('HGET', h, ARGV[j]) end
return out
"""
# KEYS: value key, its rebuild lock, shown hash. A waiter's poll: {valid value or false, lock held, shown seq}.
_POLL = _SHOWN_OK + r"""
local v = redis.call('GET', KEYS[1])
if v and not shown_ok(v, KEYS[3]) then v = false end
return {v, redis.call('EXISTS', KEYS[2]), redis.call('HGET', KEYS[3], '_seq') or '0'}
"""
# KEYS: value key, shown hash; ARGV: TTL, epoch and seq read before the value was loaded, body,
# the products it shows. Stores the value unless one of those products changed since that read (its
# field above that seq) or the hash was lost: {1, seq, header} or {0, seq}.
_STORE = r"""
local h = KEYS[2]
local seq = redis.call('HGET', h, '_seq') or '0'
if redis.call('HGET', h, '_epoch') ~= ARGV[2] then return {0, seq} end
local parts = {ARGV[2]}
for j = 5, #ARGV do
  local g = redis.call('HGET', h, ARGV[j])
  if g and tonumber(g) > tonumber(ARGV[3]) then return {0, seq} end
  parts[#parts + 1] = ARGV[j] .. '=' .. (g or '0')
end
local header = table.concat(parts, ' ')
redis.call('SET', KEYS[1], '\0' .. header .. '\n' .. ARGV[4], 'EX', ARGV[1])
return {1, seq, header}
"""
# KEYS: generation keys to bump, then (with products) the shown hash, then the scope's invalidation
# WAL position, the lease registry and the invalidation channel (lease.py); ARGV[1]: TTL of
# those keys in seconds ('0': none, the scope's own key); ARGV[2]: how many generation keys;
# ARGV[3]: the message to broadcast ('': none); ARGV[4]: the primary's WAL position after the
# write (16 hex digits, so that text order is number order; '': unknown); ARGV[5...]: products
# whose shown data changed (each gets a new number from `_seq`). The position kept is the highest
# given. Returns lease.BROADCAST's reply (the Redis clock, then the running leases).
_BUMP = _SHOWN_OK + BROADCAST + r"""
local n = tonumber(ARGV[2])
for i = 1, n do
  local k = KEYS[i]
  if redis.call('EXISTS', k) == 1 then
    redis.call('INCR', k)
  else
    local t = redis.call('TIME')
    redis.call('SET', k, string.format('%.0f', t[1] * 1000000 + t[2] + 1))
  end
  if ARGV[1] ~= '0' then redis.call('EXPIRE', k, ARGV[1]) end
end
if ARGV[4] ~= '' then
  local w = KEYS[#KEYS - 2]
  local was = redis.call('GET', w)
  if not was or was < ARGV[4] then redis.call('SET', w, ARGV[4]) end
end
if #ARGV > 4 then
  local h = KEYS[n + 1]
  shown_init(h)
  for j = 5, #ARGV do
    redis.call('HSET', h, ARGV[j], redis.call('HINCRBY', h, '_seq', 1))
  end
end
return broadcast(KEYS[#KEYS - 1], KEYS[#KEYS], ARGV[3])
"""
_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

Loader = Callable[[], Coroutine[Any, Any, bytes]]
# The products a value shows (ids), from the value itself: see `get_or_load(shows=...)`.
Shows = Callable[[bytes], Iterable[str]]
Fields = tuple[tuple[str, bytes], ...]


@dataclass(frozen=True)
class _Copy:
    """A worker's own copy of a value: valid while its generations (and, for a value that shows
    products, the shown epoch and those products' fields) are what Redis holds now."""
    gens: tuple[bytes, ...]
    epoch: bytes | None
    fields: Fields
    expires: float  # monotonic; the Redis entry's expiry
    body: bytes
    # what the per-request check compares: (shown hash, product) keys and their recorded values
    field_keys: tuple[tuple[str, str], ...] = ()
    field_values: tuple[bytes, ...] = ()
    keys: tuple[str, ...] = ()  # the generation keys of `gens`


@dataclass(frozen=True)
class _Built:
    """A rebuild's result: valid for the requests that read the shown seq at most `until`
    (None: for every request that joined it)."""
    body: bytes
    until: int | None


Dependency = str | tuple[str, str]  # a generation key, or (shown hash, product)


@dataclass
class _Fresh:
    """A PostgreSQL read shared while Redis is skipped (Cache._fresh_flight)."""
    previous: asyncio.Task[bytes] | None  # the read of the same key it waits for
    task: asyncio.Task[bytes] | None = None
    started: bool = False  # from then on, a request arriving does not join it
    floor: int = 0  # the highest WAL floor of the requests that joined it (core.wal)


def _dependencies(copy: _Copy) -> list[Dependency]:
    return [*copy.keys, *copy.field_keys]


def _split(raw: bytes) -> tuple[bytes, bytes | None, Fields]:
    """(body, shown epoch, fields) of a stored value (epoch None: it shows no products)."""
    if not raw.startswith(b"\0"):
        return raw, None, ()
    end = raw.index(b"\n")
    return raw[end + 1:], *_header(raw[1:end])


def _header(header: bytes) -> tuple[bytes, Fields]:
    epoch, *words = header.split(b" ")
    fields = []
    for word in words:
        product, _, g = word.partition(b"=")
        fields.append((product.decode(), g))
    return epoch, tuple(fields)


def connection_failed(exc: BaseException) -> bool:
    """Redis refused or dropped the connection — not our own pool being busy (all its
    connections in use, or no free one within the timeout), which says nothing about Redis."""
    if isinstance(exc, MaxConnectionsError):
        return False
    if isinstance(exc, RedisConnectionError) and isinstance(exc.__cause__, asyncio.TimeoutError):
        return False  # BlockingConnectionPool: "No connection available."
    return isinstance(exc, CONNECTION_ERRORS)


def _wal_arg(lsn: int | None) -> str:
    """A WAL position as the bump script takes it: 16 hex digits (text order is number order)."""
    return "" if lsn is None else f"{lsn:016X}"


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
        lease_ms: int = 1000,
        heartbeat_ms: int = 200,
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
        # How an invalidation Redis did not take reaches the other instances (the service sets it).
        self.on_missed: Callable[[], Awaitable[None]] | None = None
        self._read: Any = None
        self._check_script: Any = None
        self._poll: Any = None
        self._store: Any = None
        self._bump: Any = None
        self._unlock: Any = None
        self._open_until = 0.0
        self._flights: dict[str, asyncio.Task[bytes]] = {}
        self._fresh: dict[str, _Fresh] = {}
        self._local_generation: dict[str, int] = {}
        self._pending: set[tuple[str, int, str]] = set()  # (key, TTL, '') or (shown hash, 0, product)
        # The highest WAL position of this worker's own invalidations (see `invalidate`).
        self._invalidated_lsn = 0
        self._probe_redis: aioredis.Redis | None = None
        self._probe_task: asyncio.Task[None] | None = None
        self._flushing: asyncio.Task[None] | None = None
        self._retry_task: asyncio.Task[None] | None = None
        # The worker's own copies of values it read or built, by scope and name (the latest one);
        # least recently used first; at most local_bytes of values.
        self.local_bytes = local_bytes
        self._local: OrderedDict[str, _Copy] = OrderedDict()
        self._local_size = 0
        # Those of the copies that may be answered without asking Redis while the lease runs.
        self._trusted: set[str] = set()
        # generation key or (shown hash, product) -> the copies that depend on it
        self._dependents: dict[Dependency, set[str]] = {}
        self._lease = Lease(url or "", prefix, secrets.token_hex(6), lease_ms=lease_ms if url else 0,
                            heartbeat_ms=max(10, min(heartbeat_ms, lease_ms // 2)), timeout_s=self.timeout_s,
                            drop=self._drop, untrust=self._trusted.clear, on_error=self._lease_error)
        # Generation reads shared by the requests that ask before one is sent (see _generations).
        self._gen_keys: set[str] = set()
        self._gen_fields: set[tuple[str, str]] = set()
        self._gen_batch: asyncio.Future[dict[Any, Any]] | None = None
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
        self._check_script = self._redis.register_script(_CHECK)
        self._poll = self._redis.register_script(_POLL)
        self._store = self._redis.register_script(_STORE)
        self._bump = self._redis.register_script(_BUMP)
        self._unlock = self._redis.register_script(_UNLOCK)
        self._retry_task = asyncio.create_task(self._retry_pending_forever())
        self._lease.start(self._redis)

    async def close(self) -> None:
        await self._lease.close()
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
        self._lease.lose()
        if time.monotonic() >= self._open_until:
            log.warning("redis %s failed (%s: %s); serving from PostgreSQL for %.1fs",
                        operation, type(exc).__name__, exc, self.breaker_s)
        self._open_until = time.monotonic() + self.breaker_s

    def _lease_error(self, operation: str, exc: BaseException) -> None:
        """The lease ended (lease.py): count it; a failed heartbeat is a failed Redis call."""
        if operation == "subscribe":
            CACHE_ERRORS.labels(operation).inc()
            log.warning("redis invalidation channel lost (%s: %s); checking copies in Redis until it is back",
                        type(exc).__name__, exc)
        else:
            self._trip(operation, exc)

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
                result = await coro
        except REDIS_ERRORS as exc:
            self._trip(operation, exc)
            raise
        self._lease.reached()
        return result

    # -- reads --------------------------------------------------------------------------------

    def key(self, scope: str, generation: str, name: str) -> str:
        return f"{self.prefix}:{scope}:{generation}:{name}"

    def generation_key(self, scope: str, part: str | None = None) -> str:
        """`{prefix}:gen:{scope}` (every value of the scope), or `{prefix}:gen:{scope}:{part}`."""
        return f"{self.prefix}:gen:{scope}" if part is None else f"{self.prefix}:gen:{scope}:{part}"

    def shown_key(self, scope: str) -> str:
        """The hash of the products' shown-data numbers of `scope` (see _SHOWN_OK)."""
        return f"{self.prefix}:shown:{scope}"

    def wal_key(self, scope: str) -> str:
        """The primary's highest WAL position recorded by an invalidation of `scope` (see `invalidate`)."""
        return f"{self.prefix}:wal:{scope}"

    def _local_key(self, scope: str, keys: Sequence[str], name: str) -> str:
        gens = ".".join(str(self._local_generation.get(k, 0)) for k in [*keys, self.shown_key(scope)])
        return f"local:{scope}:{gens}:{name}"

    async def get_or_load(self, scope: str, name: str, loader: Loader, parts: Sequence[str] = (),
                          shows: Shows | None = None) -> bytes:
        """The cached value of `name` in `scope`, or `loader()`'s (stored for the TTL). The value
        depends on the scope's generation and on those of `parts` (see `invalidate`) and, with
        `shows` (the ids of the products a value lists), on what is shown of those products
        (`invalidate(shown=...)`); all of them are checked in Redis on every call, or covered by
        the worker's lease (see `_lookup`)."""
        stamp = self._lease.stamp
        keys = [self.generation_key(scope), *(self.generation_key(scope, p) for p in parts)]
        if not self.available():
            CACHE_BYPASSES.labels(scope).inc()
            return await self._fresh_flight(self._local_key(scope, keys, name), loader)
        assert self._redis is not None
        if self._pending:
            await self._flush_pending()
            if self._pending:  # a missed invalidation is not in Redis yet: its entries may be stale
                CACHE_BYPASSES.labels(scope).inc()
                return await self._fresh_flight(self._local_key(scope, keys, name), loader)
        try:
            generation, value, state = await self._lookup(scope, name, keys, stamp)
        except REDIS_ERRORS:
            return await self._fresh_flight(self._local_key(scope, keys, name), loader)
        if value is not None:
            CACHE_HITS.labels(scope).inc()
            return value
        CACHE_MISSES.labels(scope).inc()
        key = self.key(scope, generation, name)
        built = await self._single_flight(
            key, lambda: self._rebuild(scope, name, key, keys, generation, loader, shows, state, stamp))
        if isinstance(built, _Built):
            if built.until is not None and state[1] > built.until:
                # A shown product changed after that rebuild read the database: not for this request.
                with floor_at_least(state[2]):
                    return await loader()
            return built.body
        return built

    async def get_cached(self, scope: str, name: str, parts: Sequence[str] = ()) -> bytes | None:
        """The cached value if Redis holds it now (a hit is counted), else None — also when Redis
        is skipped or fails; the caller then goes through `get_or_load`, which counts the rest."""
        if not self.available() or self._pending:
            return None
        stamp = self._lease.stamp
        keys = [self.generation_key(scope), *(self.generation_key(scope, p) for p in parts)]
        try:
            _, value, _ = await self._lookup(scope, name, keys, stamp)
        except REDIS_ERRORS:
            return None
        if value is None:
            return None
        CACHE_HITS.labels(scope).inc()
        return value

    async def _lookup(self, scope: str, name: str, keys: list[str],
                      stamp: int) -> tuple[str, bytes | None, tuple[bytes, int, int]]:
        """(generation, value or None, (shown epoch, shown seq, WAL floor)) of `name` as Redis has
        them now; the floor is what a rebuild must read (see `invalidate`).
        A trusted copy of the worker's own is answered as it is while the lease runs: every
        invalidation that completed before this call reached the worker before (lease.py).
        Otherwise what a value depends on is read from Redis, by a read sent after this call began
        (so after any invalidation that completed before it: no stale read). The value itself
        comes from the worker's own copy when that copy is still valid, else from Redis (one Lua
        call, which also starts missing generations), and is then copied for the rest of its TTL.
        `stamp`: the lease's stamp before anything was read (a copy stored since is not trusted)."""
        local = f"{scope}:{name}"
        copy = self._local_get(local)
        if copy is not None:
            if local in self._trusted and self._lease.valid() and not self._pending and copy.keys == tuple(keys):
                return b".".join(copy.gens).decode(), copy.body, (b"", 0, UNREACHABLE)
            shown = self.shown_key(scope)
            now = await self._check(keys, shown, copy.field_keys)
            if tuple(map(now.__getitem__, keys)) == copy.gens \
                    and (copy.epoch is None or (now[shown] == copy.epoch
                                                and tuple(map(now.__getitem__, copy.field_keys)) == copy.field_values)):
                if stamp == self._lease.stamp and self._local.get(local) is copy:
                    self._trusted.add(local)  # read after the call began, nothing invalidated since
                return b".".join(copy.gens).decode(), copy.body, (b"", 0, UNREACHABLE)
        raw_generation, raw, ttl_ms, epoch, seq, wal = await self._call(
            "get", self._read(keys=[*keys, self.shown_key(scope), self.wal_key(scope)],
                              args=[f"{self.prefix}:{scope}:", f":{name}", self.part_ttl_s]))
        generation = raw_generation.decode()
        # No position recorded (a Redis that lost its keys): nothing tells which standby is recent
        # enough, so a rebuild reads the primary until the next invalidation records one.
        state = (bytes(epoch), int(seq), UNREACHABLE if wal is None else int(wal, 16))
        if raw is None:
            return generation, None, state
        body, value_epoch, value_fields = _split(bytes(raw))
        self._local_put(local, self._copy(scope, keys, raw_generation, value_epoch, value_fields, int(ttl_ms), body),
                        int(ttl_ms), stamp)
        return generation, body, state

    async def _check(self, keys: Sequence[str], shown: str, fields: Iterable[tuple[str, str]]) -> dict[Any, Any]:
        """The current generations (by key), shown epoch (by the hash's key) and products' shown
        numbers (by (hash, product); b"0": none), for the worker's copies. Requests of a worker
        share reads: one is in flight at a time, and it serves every request that asked before
        it was sent; a request that asks while one is in flight waits for the next one (so what
        it gets was read after it asked)."""
        batch = self._gen_batch
        if batch is None:
            batch = self._gen_batch = asyncio.get_running_loop().create_future()
            self._gen_keys, self._gen_fields = set(), set()
            if self._gen_task is None or self._gen_task.done():
                self._gen_task = asyncio.create_task(self._read_checks())
        self._gen_keys.update(keys)
        self._gen_keys.add(shown)
        self._gen_fields.update(fields)
        return await asyncio.shield(batch)

    async def _read_checks(self) -> None:
        while self._gen_batch is not None:
            await asyncio.sleep(0)  # let the requests already read from the sockets join this check
            batch, keys, fields = self._gen_batch, self._gen_keys, self._gen_fields
            self._gen_batch, self._gen_keys, self._gen_fields = None, set(), set()  # later callers: the next read
            try:
                values: dict[Any, Any] = {}
                hashes = sorted({k for k in keys if k.startswith(f"{self.prefix}:shown:")})
                plain = [k for k in keys if k not in hashes]
                for h in hashes:  # one per scope asked about (in practice one: the catalog)
                    wanted = [f for hh, f in fields if hh == h]
                    out = await self._call("get", self._check_script(keys=[*plain, h], args=wanted))
                    values.update(zip(plain, out[:len(plain)], strict=True))
                    values[h] = out[len(plain)]
                    values.update(((h, f), v or b"0") for f, v in zip(wanted, out[len(plain) + 1:], strict=True))
                    plain = []
            except Exception as exc:  # every caller of this read sees it (REDIS_ERRORS: no cache)
                batch.set_exception(exc)
                batch.exception()  # marked as retrieved: its callers may all have gone
                continue
            except BaseException:  # cancelled (shutdown): so are its callers
                batch.cancel()
                raise
            batch.set_result(values)

    def _copy(self, scope: str, keys: Sequence[str], generation: bytes, epoch: bytes | None, fields: Fields,
              ttl_ms: int, body: bytes) -> _Copy:
        shown = self.shown_key(scope)
        return _Copy(tuple(generation.split(b".")), epoch, fields, time.monotonic() + ttl_ms / 1000, body,
                     tuple((shown, f) for f, _ in fields), tuple(g for _, g in fields), tuple(keys))

    def _local_get(self, key: str) -> _Copy | None:
        copy = self._local.get(key)
        if copy is None:
            return None
        if time.monotonic() >= copy.expires:  # the Redis entry has expired too
            self._forget(key)
            return None
        self._local.move_to_end(key)
        return copy

    def _local_put(self, key: str, copy: _Copy, ttl_ms: int, stamp: int) -> None:
        """Keep `copy`; trusted (see `_lookup`) when no invalidation was handled since `stamp`."""
        if self.local_bytes <= 0 or ttl_ms <= 0 or len(copy.body) > self.local_bytes // 4:
            return
        self._forget(key)
        self._local[key] = copy
        self._local_size += len(copy.body)
        for dependency in _dependencies(copy):
            self._dependents.setdefault(dependency, set()).add(key)
        if stamp == self._lease.stamp:
            self._trusted.add(key)
        while self._local_size > self.local_bytes:
            self._forget(next(iter(self._local)))

    def _forget(self, key: str) -> None:
        copy = self._local.pop(key, None)
        if copy is None:
            return
        self._trusted.discard(key)
        self._local_size -= len(copy.body)
        for dependency in _dependencies(copy):
            dependents = self._dependents.get(dependency)
            if dependents is not None:
                dependents.discard(key)
                if not dependents:
                    del self._dependents[dependency]

    def _drop(self, keys: set[str], fields: set[tuple[str, str]]) -> None:
        """An invalidation (ours, or a message: cache_lease): forget the copies that depend on what
        it bumped, and trust no value read before now. Empty sets: forget every copy."""
        self._lease.stamp += 1
        if not keys and not fields:
            for key in list(self._local):
                self._forget(key)
            return
        dependencies: list[Dependency] = [*keys, *fields]
        for dependency in dependencies:
            for key in list(self._dependents.get(dependency, ())):
                self._forget(key)

    async def _single_flight(self, key: str, load: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
        task = self._flights.get(key)
        if task is None:
            task = asyncio.create_task(load())
            self._flights[key] = task
            task.add_done_callback(lambda t, k=key: self._flight_done(k, t))  # type: ignore[misc]
        # shield: a client that goes away does not cancel the rebuild the others wait for
        return await asyncio.shield(task)

    async def _fresh_flight(self, key: str, load: Loader) -> bytes:
        """A PostgreSQL read while Redis is skipped. Nothing then tells this worker about another
        worker's write, so a request shares only a read that has not begun (its answer is read
        after the request arrived: no stale read); requests arriving while a read runs share the
        next one, which begins when that one ends. At most one read of a key runs at a time.
        The read includes the WAL floor of every request that joined it (their own writes, this
        worker's invalidations: core.wal)."""
        flight = self._fresh.get(key)
        if flight is None or flight.started:
            flight = _Fresh(flight.task if flight is not None else None)
            flight.task = asyncio.create_task(self._fresh_read(flight, load))
            self._fresh[key] = flight
            flight.task.add_done_callback(functools.partial(self._fresh_done, key, flight))
        flight.floor = max(flight.floor, current_floor(), self._invalidated_lsn)
        assert flight.task is not None
        return await asyncio.shield(flight.task)  # a client going away does not cancel the others' read

    @staticmethod
    async def _fresh_read(flight: _Fresh, load: Loader) -> bytes:
        if flight.previous is not None:
            await asyncio.wait([flight.previous])  # its outcome is its own requests' business
        flight.started = True
        with floor_at_least(flight.floor):
            return await load()

    def _fresh_done(self, key: str, flight: _Fresh, task: asyncio.Task[bytes]) -> None:
        if self._fresh.get(key) is flight:
            del self._fresh[key]
        if not task.cancelled():
            task.exception()  # retrieved: an unawaited failure is not logged as lost

    def _flight_done(self, key: str, task: asyncio.Task[Any]) -> None:
        if self._flights.get(key) is task:
            del self._flights[key]
        if not task.cancelled():
            task.exception()  # retrieved here so that an unawaited failure is not logged as lost

    async def _rebuild(self, scope: str, name: str, key: str, keys: Sequence[str], generation: str, loader: Loader,
                       shows: Shows | None, state: tuple[bytes, int, int], stamp: int) -> _Built:
        """Rebuild one key in this worker; other workers wait on the Redis lock. `state`: the shown
        epoch and seq and the WAL floor read before (by the lookup that missed); `stamp`: the
        lease's, before that.

        The loader's reads include the WAL floor (core.wal): a standby serves them only once it has
        replayed that far, else the primary does. This is what keeps a standby's old data out of
        the cache. Every invalidation records the primary's WAL position after its write committed
        (`invalidate(lsn=...)`), in the same Lua call that bumps the generations, and the lookup
        reads the highest position recorded in the same Lua call that reads the generations. So
        for an invalidation I and this rebuild, in Redis's order of calls:

        * I's bump came before our lookup: the floor we read is at least I's position, which
          follows I's commit; a standby that replayed past it (or the primary) shows I's write.
        * I's bump came after our lookup: our value may predate I's write (wherever it was read,
          the primary included), but it is stored under the generations we read, which I has
          since changed if the value depends on what I touched, so no later lookup finds it; a
          value that shows a product I changed is refused by _STORE (its seq moved); and our own
          copy is not trusted (the lease's stamp moved when I's message arrived), so it is
          checked against Redis before it is answered. This is the same argument as for a rebuild
          from the primary racing a write.

        Requests that join this rebuild (same key, so same generations) looked up a floor at least
        ours; what it adds comes from invalidations that did not touch this value, or from one
        that changed a product it shows, for which `get_or_load` reads again itself."""
        with floor_at_least(state[2]):
            return await self._rebuild_at_floor(scope, name, key, keys, generation, loader, shows, state, stamp)

    async def _rebuild_at_floor(self, scope: str, name: str, key: str, keys: Sequence[str], generation: str,
                                loader: Loader, shows: Shows | None, state: tuple[bytes, int, int],
                                stamp: int) -> _Built:
        assert self._redis is not None
        token = secrets.token_hex(8)
        lock = key + ":lock"
        shown = self.shown_key(scope)
        mine = _Built(b"", state[1]) if shows is not None else _Built(b"", None)
        try:
            locked = await self._call("lock", self._redis.set(lock, token, nx=True, px=self.lock_ms))
            if not locked:
                found = await self._wait_for(key, shown)
                if found is not None:
                    return found if shows is not None else _Built(found.body, None)
                return _Built(await loader(), mine.until)  # the holder is slow or gone: answer from PostgreSQL
            # a rebuild that finished between our read and our lock
            raw, _, seq = await self._call("get", self._poll(keys=[key, lock, shown]))
            if raw is not None:
                await self._release(lock, token)
                return _Built(_split(bytes(raw))[0], int(seq) if shows is not None else None)
        except REDIS_ERRORS:
            return _Built(await loader(), mine.until)
        try:
            value = await loader()
        except BaseException:
            await self._release(lock, token)
            raise
        built = _Built(value, mine.until)
        try:
            if shows is None:
                await self._call("set", self._redis.set(key, value, ex=self.ttl_s))
                copy = self._copy(scope, keys, generation.encode(), None, (), self.ttl_s * 1000, value)
            else:
                products = sorted(set(shows(value)))
                stored, seq, *header = await self._call("set", self._store(
                    keys=[key, shown], args=[self.ttl_s, state[0], state[1], value, *products]))
                copy = None
                if stored:  # valid up to that seq: no shown product changed since the read
                    built = _Built(value, int(seq))
                    epoch, fields = _header(bytes(header[0]))
                    copy = self._copy(scope, keys, generation.encode(), epoch, fields, self.ttl_s * 1000, value)
        except REDIS_ERRORS:
            pass
        else:
            if copy is not None:
                self._local_put(f"{scope}:{name}", copy, self.ttl_s * 1000, stamp)
        await self._release(lock, token)
        return built

    async def _wait_for(self, key: str, shown: str) -> _Built | None:
        """Wait for another worker's rebuild: as long as its lock is held (the lock's TTL bounds it),
        not a fixed time; None when the holder went away without a value (then ask PostgreSQL)."""
        assert self._redis is not None
        lock = key + ":lock"
        deadline = time.monotonic() + max(self.wait_s, self.lock_ms / 1000)
        while time.monotonic() < deadline:
            await asyncio.sleep(self.poll_s)
            raw, held, seq = await self._call("get", self._poll(keys=[key, lock, shown]))
            if raw is not None:
                return _Built(_split(bytes(raw))[0], int(seq))
            if not held:
                return None
        return None

    async def _release(self, lock: str, token: str) -> None:
        if self._unlock is None:
            return
        with contextlib.suppress(*REDIS_ERRORS):
            await self._call("unlock", self._unlock(keys=[lock], args=[token]))

    # -- writes -------------------------------------------------------------------------------

    async def invalidate(self, scope: str = CATALOG, parts: Iterable[str] | None = None,
                         shown: Iterable[str] = (), *, tell_others: bool = True, lsn: int | None = None) -> None:
        """Call AFTER the write committed: later reads miss and rebuild from the new data.
        Without `parts`, every value of the scope; with them, only the values that depend on one
        of those parts. `shown`: products whose shown data changed (values that list them —
        `get_or_load(shows=...)` — are rebuilt, whatever their parts). `lsn`: the primary's WAL
        position taken after the write committed; rebuilds read only from standbys that have
        replayed past it (see `_rebuild`). When Redis does not take it, `on_missed` (if set, and
        `tell_others`) tells the other instances another way: one whose Redis is down or
        unreachable must not leave the others serving its change stale."""
        if parts is None:
            keys, ttl = [self.generation_key(scope)], 0
        else:
            keys, ttl = sorted({self.generation_key(scope, p) for p in parts}), self.part_ttl_s
        products = sorted(set(shown))
        if not keys and not products:
            return
        hash_key = self.shown_key(scope)
        for k in [*keys, hash_key] if products else keys:
            self._local_generation[k] = self._local_generation.get(k, 0) + 1
        if lsn is not None:
            self._invalidated_lsn = max(self._invalidated_lsn, lsn)
        CACHE_INVALIDATIONS.labels(scope).inc()
        if self._redis is None:
            return
        fields = {(hash_key, p) for p in products}
        seq, message = self._lease.message(keys, fields)
        try:
            reply = await self._call("invalidate", self._bump(
                keys=[*keys, *([hash_key] if products else []), self.wal_key(scope), self._lease.registry,
                      self._lease.channel],
                args=[ttl, len(keys), message, _wal_arg(lsn), *products]))
        except BaseException as exc:  # Redis failed, or we were cancelled: it may not have landed
            self._drop(set(keys), fields)
            self._lease.forget(seq)
            self._pending.update((k, ttl, "") for k in keys)  # replayed until it lands
            self._pending.update((hash_key, 0, p) for p in products)
            if not isinstance(exc, REDIS_ERRORS):
                raise
            if tell_others and self.on_missed is not None:
                await self._tell_others()
            if not isinstance(exc, ResponseError) and not connection_failed(exc):
                # Redis did not answer in time (hung, or a partition): others may still hold a lease
                # without hearing anything. (Refused or reset: Redis is gone, and with it every
                # worker's subscription, which ended its lease the moment it broke.)
                await self._lease.wait_out_outage()
            return
        self._drop(set(keys), fields)  # this worker's own copies (its message comes back later)
        await self._lease.wait_for_acks(seq, reply, time.monotonic())

    async def _tell_others(self) -> None:
        assert self.on_missed is not None
        try:
            await asyncio.wait_for(self.on_missed(), timeout=2.0)
        except Exception as exc:  # the write has committed: report, do not fail the request
            log.warning("could not tell other instances of a missed invalidation (%s)", type(exc).__name__)

    async def _flush_pending(self) -> None:
        """Replay the missed invalidations; concurrent callers share one replay."""
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.create_task(self._flush_pending_once())
        await asyncio.shield(self._flushing)

    async def _flush_pending_once(self) -> None:
        """Each replay is broadcast too (no one waits for it: its write has returned), with the
        highest WAL position of this worker's invalidations (at least that of the missed one)."""
        for key, ttl, product in sorted(self._pending):
            seq, message = self._lease.message([] if product else [key], [(key, product)] if product else [])
            self._lease.forget(seq)
            scope = key.removeprefix(f"{self.prefix}:").split(":")[1]
            lease = [self.wal_key(scope), self._lease.registry, self._lease.channel]
            wal = _wal_arg(self._invalidated_lsn or None)
            try:
                if product:
                    await self._call("invalidate", self._bump(keys=[key, *lease], args=[0, 0, message, wal, product]))
                else:
                    await self._call("invalidate", self._bump(keys=[key, *lease], args=[ttl, 1, message, wal]))
            except REDIS_ERRORS:
                return
            self._pending.discard((key, ttl, product))

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
