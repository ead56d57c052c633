"""Requests of one worker that want the same missing value share one load (single-flight), so a
burst of requests for a cold or invalidated key costs one rebuild, and one PostgreSQL read per key
at a time while Redis is skipped."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from villager_shop.core.wal import current_floor, floor_at_least

# A read from PostgreSQL of a value's body.
Loader = Callable[[], Coroutine[Any, Any, bytes]]


class SingleFlight:
    """One task per key at a time: the requests that ask while it runs get its result."""

    def __init__(self) -> None:
        self._flights: dict[str, asyncio.Task[Any]] = {}

    async def run(self, key: str, load: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
        task = self._flights.get(key)
        if task is None:
            task = asyncio.create_task(load())
            self._flights[key] = task
            task.add_done_callback(lambda t, k=key: self._done(k, t))  # type: ignore[misc]
        # shield: a client that goes away does not cancel the rebuild the others wait for
        return await asyncio.shield(task)

    def _done(self, key: str, task: asyncio.Task[Any]) -> None:
        if self._flights.get(key) is task:
            del self._flights[key]
        if not task.cancelled():
            task.exception()  # retrieved here so that an unawaited failure is not logged as lost


@dataclass
class _Fresh:
    """A PostgreSQL read shared while Redis is skipped (FreshReads.read)."""
    previous: asyncio.Task[bytes] | None  # the read of the same key it waits for
    task: asyncio.Task[bytes] | None = None
    started: bool = False  # from then on, a request arriving does not join it
    floor: int = 0  # the highest WAL floor of the requests that joined it (core.wal)


class FreshReads:
    """PostgreSQL reads while Redis is skipped, shared only when that cannot be stale."""

    def __init__(self) -> None:
        self._fresh: dict[str, _Fresh] = {}

    async def read(self, key: str, load: Loader, floor: int) -> bytes:
        """A PostgreSQL read while Redis is skipped. Nothing then tells this worker about another
        worker's write, so a request shares only a read that has not begun (its answer is read
        after the request arrived: no stale read); requests arriving while a read runs share the
        next one, which begins when that one ends. At most one read of a key runs at a time.
        The read includes the WAL floor of every request that joined it (their own writes, and
        `floor`: this worker's invalidations; core.wal)."""
        flight = self._fresh.get(key)
        if flight is None or flight.started:
            flight = _Fresh(flight.task if flight is not None else None)
            flight.task = asyncio.create_task(self._read(flight, load))
            self._fresh[key] = flight
            flight.task.add_done_callback(functools.partial(self._done, key, flight))
        flight.floor = max(flight.floor, current_floor(), floor)
        assert flight.task is not None
        return await asyncio.shield(flight.task)  # a client going away does not cancel the others' read

    @staticmethod
    async def _read(flight: _Fresh, load: Loader) -> bytes:
        if flight.previous is not None:
            await asyncio.wait([flight.previous])  # its outcome is its own requests' business
        flight.started = True
        with floor_at_least(flight.floor):
            return await load()

    def _done(self, key: str, flight: _Fresh, task: asyncio.Task[bytes]) -> None:
        if self._fresh.get(key) is flight:
            del self._fresh[key]
        if not task.cancelled():
            task.exception()  # retrieved: an unawaited failure is not logged as lost
