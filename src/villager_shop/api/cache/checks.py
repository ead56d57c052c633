"""The check of a worker's own copies against Redis, shared by the requests of the worker: without
a lease every hit is checked, and one Redis call per request would cost what the copies save."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from villager_shop.api.cache.keys import Keys
from villager_shop.api.cache.scripts import Scripts


class Checks:
    """`call`: how a Redis command is run (breaker.Breaker.call)."""

    def __init__(self, keys: Keys, scripts: Scripts, call: Callable[[str, Awaitable[Any]], Awaitable[Any]]) -> None:
        self._keys = keys
        self._scripts = scripts
        self._call = call
        self._gen_keys: set[str] = set()
        self._gen_fields: set[tuple[str, str]] = set()
        self._gen_batch: asyncio.Future[dict[Any, Any]] | None = None
        self._gen_task: asyncio.Task[None] | None = None

    async def close(self) -> None:
        if self._gen_task is not None:
            self._gen_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._gen_task
            self._gen_task = None

    async def check(self, keys: Sequence[str], shown: str, fields: Iterable[tuple[str, str]]) -> dict[Any, Any]:
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
                hashes = sorted({k for k in keys if self._keys.is_shown(k)})
                plain = [k for k in keys if k not in hashes]
                for h in hashes:  # one per scope asked about (in practice one: the catalog)
                    wanted = [f for hh, f in fields if hh == h]
                    out = await self._call("get", self._scripts.check(keys=[*plain, h], args=wanted))
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
