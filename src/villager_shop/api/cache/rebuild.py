"""The rebuild of a missing value, one per key across workers: the rebuilder holds `SET key:lock NX
PX`, the others poll the key while the lock is held, then fall back to PostgreSQL. Without it a
popular key that expires or is invalidated sends every worker's requests to the database at once."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from villager_shop.api.cache.breaker import REDIS_ERRORS
from villager_shop.api.cache.flight import Loader
from villager_shop.api.cache.keys import Keys
from villager_shop.api.cache.local import Copy
from villager_shop.api.cache.scripts import Scripts, parse_header, split_value
from villager_shop.core.wal import floor_at_least

# The products a value shows (ids), from the value itself: see `Cache.get_or_load(shows=...)`.
Shows = Callable[[bytes], Iterable[str]]


@dataclass(frozen=True)
class Built:
    """A rebuild's result: valid for the requests that read the shown seq at most `until`
    (None: for every request that joined it)."""
    body: bytes
    until: int | None


class Rebuilder:
    """`call`: how a Redis command is run (breaker.Breaker.call); `keep(name, copy, ttl_ms, stamp)`:
    keep the worker's copy of a value it stored."""

    def __init__(self, keys: Keys, scripts: Scripts, call: Callable[[str, Awaitable[Any]], Awaitable[Any]],
                 keep: Callable[[str, Copy, int, int], None], *, ttl_s: int, lock_ms: int, wait_ms: int,
                 poll_ms: int) -> None:
        self._keys = keys
        self._scripts = scripts
        self._call = call
        self._keep = keep
        self.ttl_s = ttl_s
        self.lock_ms = lock_ms
        self.wait_s = wait_ms / 1000
        self.poll_s = poll_ms / 1000

    async def rebuild(self, scope: str, name: str, key: str, keys: Sequence[str], generation: str, loader: Loader,
                      shows: Shows | None, state: tuple[bytes, int, int], stamp: int) -> Built:
        """Rebuild one key in this worker; other workers wait on the Redis lock. `state`: the shown
        epoch and seq and the WAL floor read before (by the lookup that missed); `stamp`: the
        lease's, before that.

        The loader's reads include the WAL floor (core.wal): a standby serves them only once it has
        replayed that far, else the primary does. This is what keeps a standby's old data out of
        the cache. Every invalidation records the primary's WAL position after its write committed
        (`Cache.invalidate(lsn=...)`), in the same Lua call that bumps the generations, and the
        lookup reads the highest position recorded in the same Lua call that reads the generations.
        So for an invalidation I and this rebuild, in Redis's order of calls:

        * I's bump came before our lookup: the floor we read is at least I's position, which
          follows I's commit; a standby that replayed past it (or the primary) shows I's write.
        * I's bump came after our lookup: our value may predate I's write (wherever it was read,
          the primary included), but it is stored under the generations we read, which I has
          since changed if the value depends on what I touched, so no later lookup finds it; a
          value that shows a product I changed is refused by scripts.STORE (its seq moved); and
          our own copy is not trusted (the lease's stamp moved when I's message arrived), so it is
          checked against Redis before it is answered. This is the same argument as for a rebuild
          from the primary racing a write.

        Requests that join this rebuild (same key, so same generations) looked up a floor at least
        ours; what it adds comes from invalidations that did not touch this value, or from one
        that changed a product it shows, for which `get_or_load` reads again itself."""
        with floor_at_least(state[2]):
            return await self._rebuild_at_floor(scope, name, key, keys, generation, loader, shows, state, stamp)

    async def _rebuild_at_floor(self, scope: str, name: str, key: str, keys: Sequence[str], generation: str,
                                loader: Loader, shows: Shows | None, state: tuple[bytes, int, int],
                                stamp: int) -> Built:
        redis = self._scripts.redis
        assert redis is not None
        token = secrets.token_hex(8)
        lock = key + ":lock"
        shown = self._keys.shown(scope)
        mine = Built(b"", state[1]) if shows is not None else Built(b"", None)
        try:
            locked = await self._call("lock", redis.set(lock, token, nx=True, px=self.lock_ms))
            if not locked:
                found = await self._wait_for(key, shown)
                if found is not None:
                    return found if shows is not None else Built(found.body, None)
                return Built(await loader(), mine.until)  # the holder is slow or gone: answer from PostgreSQL
            # a rebuild that finished between our read and our lock
            raw, _, seq = await self._call("get", self._scripts.poll(keys=[key, lock, shown]))
            if raw is not None:
                await self._release(lock, token)
                return Built(split_value(bytes(raw))[0], int(seq) if shows is not None else None)
        except REDIS_ERRORS:
            return Built(await loader(), mine.until)
        try:
            value = await loader()
        except BaseException:
            await self._release(lock, token)
            raise
        built = Built(value, mine.until)
        try:
            if shows is None:
                await self._call("set", redis.set(key, value, ex=self.ttl_s))
                copy = Copy.of(shown, keys, generation.encode(), None, (), self.ttl_s * 1000, value)
            else:
                products = sorted(set(shows(value)))
                stored, seq, *header = await self._call("set", self._scripts.store(
                    keys=[key, shown], args=[self.ttl_s, state[0], state[1], value, *products]))
                copy = None
                if stored:  # valid up to that seq: no shown product changed since the read
                    built = Built(value, int(seq))
                    epoch, fields = parse_header(bytes(header[0]))
                    copy = Copy.of(shown, keys, generation.encode(), epoch, fields, self.ttl_s * 1000, value)
        except REDIS_ERRORS:
            pass
        else:
            if copy is not None:
                self._keep(f"{scope}:{name}", copy, self.ttl_s * 1000, stamp)
        await self._release(lock, token)
        return built

    async def _wait_for(self, key: str, shown: str) -> Built | None:
        """Wait for another worker's rebuild: as long as its lock is held (the lock's TTL bounds it),
        not a fixed time; None when the holder went away without a value (then ask PostgreSQL)."""
        lock = key + ":lock"
        deadline = time.monotonic() + max(self.wait_s, self.lock_ms / 1000)
        while time.monotonic() < deadline:
            await asyncio.sleep(self.poll_s)
            raw, held, seq = await self._call("get", self._scripts.poll(keys=[key, lock, shown]))
            if raw is not None:
                return Built(split_value(bytes(raw))[0], int(seq))
            if not held:
                return None
        return None

    async def _release(self, lock: str, token: str) -> None:
        if self._scripts.unlock is None:
            return
        with contextlib.suppress(*REDIS_ERRORS):
            await self._call("unlock", self._scripts.unlock(keys=[lock], args=[token]))
