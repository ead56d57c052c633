"""The Redis cache of the shop service: the `Cache` that the services call, composed of the parts
in this package (keys, scripts, breaker, local, checks, flight, rebuild, lease).

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
  standby only if it has replayed past it, else from the primary (rebuild.py, core.wal).
* **Stampede protection**: one rebuild per key. In a worker, concurrent requests for a missing key
  share one task (flight.py); across workers, the rebuilder holds a Redis lock (rebuild.py).
* **Fail open, fast** (breaker.py): short timeouts, no retries, a circuit breaker; the caller's
  loader (PostgreSQL) then answers. Hits, misses, errors and bypasses are counted
  (monitoring.metrics).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence

from redis.exceptions import ResponseError

from villager_shop.api.cache.breaker import REDIS_ERRORS, Breaker, connection_failed
from villager_shop.api.cache.checks import Checks
from villager_shop.api.cache.flight import FreshReads, Loader, SingleFlight
from villager_shop.api.cache.keys import CATALOG, Keys
from villager_shop.api.cache.lease import Lease
from villager_shop.api.cache.local import Copies, Copy, LocalGenerations
from villager_shop.api.cache.rebuild import Built, Rebuilder, Shows
from villager_shop.api.cache.scripts import Scripts, split_value, wal_arg
from villager_shop.core.wal import UNREACHABLE, floor_at_least
from villager_shop.monitoring.metrics import CACHE_BYPASSES, CACHE_HITS, CACHE_INVALIDATIONS, CACHE_MISSES

log = logging.getLogger("villager_shop.api.cache")


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
        self.keys = Keys(prefix)
        self.ttl_s = ttl_s
        # finer generation keys expire (a re-created one starts from the clock: never reused)
        self.part_ttl_s = max(60, ttl_s * 2)
        # How an invalidation Redis did not take reaches the other instances (the service sets it).
        self.on_missed: Callable[[], Awaitable[None]] | None = None
        self._scripts = Scripts()
        self._breaker = Breaker(timeout_ms=timeout_ms, breaker_s=breaker_s, probe_ms=probe_ms,
                                max_connections=max_connections, on_open=self._breaker_opened,
                                on_reached=self._redis_reached)
        self._pending: set[tuple[str, int, str]] = set()  # (key, TTL, '') or (shown hash, 0, product)
        # The highest WAL position of this worker's own invalidations (see `invalidate`).
        self._invalidated_lsn = 0
        self._flushing: asyncio.Task[None] | None = None
        self._retry_task: asyncio.Task[None] | None = None
        # The worker's own copies of values it read or built, by scope and name.
        self._local = Copies(local_bytes)
        self._local_generations = LocalGenerations()
        self._lease = Lease(url or "", prefix, secrets.token_hex(6), lease_ms=lease_ms if url else 0,
                            heartbeat_ms=max(10, min(heartbeat_ms, lease_ms // 2)),
                            timeout_s=self._breaker.timeout_s, drop=self._drop, untrust=self._local.untrust_all,
                            on_error=self._breaker.lease_error)
        self._checks = Checks(self.keys, self._scripts, self._breaker.call)
        self._flights = SingleFlight()
        self._fresh = FreshReads()
        self._rebuilder = Rebuilder(self.keys, self._scripts, self._breaker.call, self._keep, ttl_s=ttl_s,
                                    lock_ms=lock_ms, wait_ms=wait_ms, poll_ms=poll_ms)

    # -- life cycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        if self.url is None:
            return
        redis = self._breaker.connect(self.url)
        self._scripts.bind(redis)
        self._retry_task = asyncio.create_task(self._retry_pending_forever())
        self._lease.start(redis)

    async def close(self) -> None:
        await self._lease.close()
        await self._checks.close()
        if self._retry_task is not None:
            self._retry_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retry_task
            self._retry_task = None
        await self._breaker.stop_probe()
        if self._pending:
            await self._flush_pending()
        if self._scripts.redis is not None:
            with contextlib.suppress(*REDIS_ERRORS):
                await self._scripts.redis.aclose()
        await self._breaker.close()
        self._scripts.unbind()

    @property
    def enabled(self) -> bool:
        return self._scripts.redis is not None

    def available(self) -> bool:
        """Redis configured and the circuit breaker closed."""
        return self._scripts.redis is not None and self._breaker.closed()

    def _breaker_opened(self) -> None:
        self._lease.lose()

    def _redis_reached(self) -> None:
        self._lease.reached()

    # -- reads --------------------------------------------------------------------------------

    def _fresh_read(self, scope: str, keys: Sequence[str], name: str, loader: Loader) -> Awaitable[bytes]:
        """A PostgreSQL read while Redis is skipped (flight.FreshReads), at least as recent as this
        worker's own invalidations."""
        key = self._local_generations.name(scope, keys, self.keys.shown(scope), name)
        return self._fresh.read(key, loader, self._invalidated_lsn)

    async def get_or_load(self, scope: str, name: str, loader: Loader, parts: Sequence[str] = (),
                          shows: Shows | None = None) -> bytes:
        """The cached value of `name` in `scope`, or `loader()`'s (stored for the TTL). The value
        depends on the scope's generation and on those of `parts` (see `invalidate`) and, with
        `shows` (the ids of the products a value lists), on what is shown of those products
        (`invalidate(shown=...)`); all of them are checked in Redis on every call, or covered by
        the worker's lease (see `_lookup`)."""
        stamp = self._lease.stamp
        keys = [self.keys.generation(scope), *(self.keys.generation(scope, p) for p in parts)]
        if not self.available():
            CACHE_BYPASSES.labels(scope).inc()
            return await self._fresh_read(scope, keys, name, loader)
        if self._pending:
            await self._flush_pending()
            if self._pending:  # a missed invalidation is not in Redis yet: its entries may be stale
                CACHE_BYPASSES.labels(scope).inc()
                return await self._fresh_read(scope, keys, name, loader)
        try:
            generation, value, state = await self._lookup(scope, name, keys, stamp)
        except REDIS_ERRORS:
            return await self._fresh_read(scope, keys, name, loader)
        if value is not None:
            CACHE_HITS.labels(scope).inc()
            return value
        CACHE_MISSES.labels(scope).inc()
        key = self.keys.value(scope, generation, name)
        built = await self._flights.run(
            key, lambda: self._rebuilder.rebuild(scope, name, key, keys, generation, loader, shows, state, stamp))
        if isinstance(built, Built):
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
        keys = [self.keys.generation(scope), *(self.keys.generation(scope, p) for p in parts)]
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
        shown = self.keys.shown(scope)
        copy = self._local.get(local)
        if copy is not None:
            if (self._local.is_trusted(local) and self._lease.valid() and not self._pending
                    and copy.keys == tuple(keys)):
                return b".".join(copy.gens).decode(), copy.body, (b"", 0, UNREACHABLE)
            now = await self._checks.check(keys, shown, copy.field_keys)
            if tuple(map(now.__getitem__, keys)) == copy.gens \
                    and (copy.epoch is None or (now[shown] == copy.epoch
                                                and tuple(map(now.__getitem__, copy.field_keys)) == copy.field_values)):
                if stamp == self._lease.stamp and self._local.current(local) is copy:
                    self._local.trust(local)  # read after the call began, nothing invalidated since
                return b".".join(copy.gens).decode(), copy.body, (b"", 0, UNREACHABLE)
        raw_generation, raw, ttl_ms, epoch, seq, wal = await self._breaker.call(
            "get", self._scripts.read(keys=[*keys, shown, self.keys.wal(scope)],
                                      args=[self.keys.value_prefix(scope), f":{name}", self.part_ttl_s]))
        generation = raw_generation.decode()
        # No position recorded (a Redis that lost its keys): nothing tells which standby is recent
        # enough, so a rebuild reads the primary until the next invalidation records one.
        state = (bytes(epoch), int(seq), UNREACHABLE if wal is None else int(wal, 16))
        if raw is None:
            return generation, None, state
        body, value_epoch, value_fields = split_value(bytes(raw))
        self._keep(local, Copy.of(shown, keys, raw_generation, value_epoch, value_fields, int(ttl_ms), body),
                   int(ttl_ms), stamp)
        return generation, body, state

    def _keep(self, local: str, copy: Copy, ttl_ms: int, stamp: int) -> None:
        """Keep `copy`; trusted (see `_lookup`) when no invalidation was handled since `stamp`."""
        self._local.put(local, copy, ttl_ms, trusted=stamp == self._lease.stamp)

    def _drop(self, keys: set[str], fields: set[tuple[str, str]]) -> None:
        """An invalidation (ours, or a message: lease.py): forget the copies that depend on what
        it bumped, and trust no value read before now. Empty sets: forget every copy."""
        self._lease.stamp += 1
        self._local.drop(keys, fields)

    # -- writes -------------------------------------------------------------------------------

    async def invalidate(self, scope: str = CATALOG, parts: Iterable[str] | None = None,
                         shown: Iterable[str] = (), *, tell_others: bool = True, lsn: int | None = None) -> None:
        """Call AFTER the write committed: later reads miss and rebuild from the new data.
        Without `parts`, every value of the scope; with them, only the values that depend on one
        of those parts. `shown`: products whose shown data changed (values that list them —
        `get_or_load(shows=...)` — are rebuilt, whatever their parts). `lsn`: the primary's WAL
        position taken after the write committed; rebuilds read only from standbys that have
        replayed past it (see rebuild.Rebuilder.rebuild). When Redis does not take it, `on_missed`
        (if set, and `tell_others`) tells the other instances another way: one whose Redis is down
        or unreachable must not leave the others serving its change stale."""
        if parts is None:
            keys, ttl = [self.keys.generation(scope)], 0
        else:
            keys, ttl = sorted({self.keys.generation(scope, p) for p in parts}), self.part_ttl_s
        products = sorted(set(shown))
        if not keys and not products:
            return
        hash_key = self.keys.shown(scope)
        self._local_generations.bump([*keys, hash_key] if products else keys)
        if lsn is not None:
            self._invalidated_lsn = max(self._invalidated_lsn, lsn)
        CACHE_INVALIDATIONS.labels(scope).inc()
        if self._scripts.redis is None:
            return
        fields = {(hash_key, p) for p in products}
        seq, message = self._lease.message(keys, fields)
        try:
            reply = await self._breaker.call("invalidate", self._scripts.bump(
                keys=[*keys, *([hash_key] if products else []), self.keys.wal(scope), self._lease.registry,
                      self._lease.channel],
                args=[ttl, len(keys), message, wal_arg(lsn), *products]))
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
            scope = self.keys.scope_of(key)
            lease = [self.keys.wal(scope), self._lease.registry, self._lease.channel]
            wal = wal_arg(self._invalidated_lsn or None)
            try:
                if product:
                    await self._breaker.call("invalidate", self._scripts.bump(keys=[key, *lease], args=[0, 0, message, wal, product]))
                else:
                    await self._breaker.call("invalidate", self._scripts.bump(keys=[key, *lease], args=[ttl, 1, message, wal]))
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
        if self._scripts.redis is None:
            return "disabled"
        if not self.available():
            return "degraded"
        try:
            await self._breaker.call("ping", self._scripts.redis.ping())
        except REDIS_ERRORS:
            return "degraded"
        return "connected"
