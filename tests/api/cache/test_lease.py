"""The workers' leases (villager_shop.api.cache.lease): hits answered without Redis, and still no stale
read. Real Redis; each test uses its own key prefix."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import redis as redis_sync

from villager_shop.api.cache.keys import CATALOG
from villager_shop.api.cache.store import Cache
from villager_shop.embedded.redis import EmbeddedRedis

pytestmark = pytest.mark.anyio


async def eventually(condition: Callable[[], bool], timeout_s: float = 3.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


class Loads:
    """A loader returning the current 'database' value, counting its calls."""

    def __init__(self, value: bytes) -> None:
        self.value = value
        self.calls = 0

    async def __call__(self) -> bytes:
        self.calls += 1
        return self.value


@pytest.fixture
async def workers(redis_url: str) -> AsyncIterator[Callable[..., Any]]:
    prefix = f"vtest:{uuid.uuid4().hex[:10]}"
    started: list[Cache] = []

    async def start(**options: Any) -> Cache:
        cache = Cache(redis_url, prefix=prefix, **options)
        await cache.start()
        started.append(cache)
        await eventually(cache._lease.valid)  # its first heartbeat came back
        return cache

    try:
        yield start
    finally:
        for cache in started:
            await cache.close()
        with redis_sync.Redis.from_url(redis_url) as r:
            for key in r.scan_iter(match=f"{prefix}:*"):
                r.delete(key)


async def test_a_hit_under_a_lease_asks_redis_nothing(workers: Callable[..., Any], redis_url: str) -> None:
    """While its lease runs, a worker answers its copy as it is: with the value's entry and its
    generation keys gone from Redis (evicted: no write happened), it still hits without loading."""
    a = await workers()
    loads = Loads(b"v1")
    assert await a.get_or_load(CATALOG, "page", loads, ("c1",)) == b"v1"
    with redis_sync.Redis.from_url(redis_url) as r:
        for key in r.scan_iter(match=f"{a.prefix}:*"):
            if not key.startswith(f"{a.prefix}:lease:".encode()):
                r.delete(key)
    for _ in range(3):
        assert await a.get_or_load(CATALOG, "page", loads, ("c1",)) == b"v1"
    assert loads.calls == 1


async def test_an_invalidation_returns_only_once_every_leased_worker_dropped_its_copy(
        workers: Callable[..., Any]) -> None:
    a, b, c = await workers(), await workers(), await workers()
    loads = Loads(b"old")
    for cache in (a, b, c):
        assert await cache.get_or_load(CATALOG, "page", loads, ("c1",)) == b"old"
        assert await cache.get_or_load(CATALOG, "other", Loads(b"x"), ("c2",)) == b"x"
    loads.value = b"new"  # the write commits, then invalidates
    await a.invalidate(CATALOG, ["c1"])
    for cache in (b, c):  # nothing awaited since: the copies were dropped before invalidate returned
        assert f"{CATALOG}:page" not in cache._local
        assert f"{CATALOG}:other" in cache._local  # another part: kept
    for cache in (a, b, c):
        assert await cache.get_or_load(CATALOG, "page", loads, ("c1",)) == b"new"


async def test_a_shown_product_change_reaches_the_copies_that_list_it(workers: Callable[..., Any]) -> None:
    a, b = await workers(), await workers()

    def shows(_body: bytes) -> list[str]:
        return ["p1", "p2"]

    loads = Loads(b"list v1")
    for cache in (a, b, b):
        assert await cache.get_or_load(CATALOG, "listing", loads, ("all",), shows=shows) == b"list v1"
    loads.value = b"list v2"
    await a.invalidate(CATALOG, [], shown=["p3"])  # not listed
    assert await b.get_or_load(CATALOG, "listing", loads, ("all",), shows=shows) == b"list v1"
    await a.invalidate(CATALOG, [], shown=["p2"])
    assert await b.get_or_load(CATALOG, "listing", loads, ("all",), shows=shows) == b"list v2"


async def test_a_worker_that_stops_answering_delays_a_write_by_at_most_its_lease(
        workers: Callable[..., Any]) -> None:
    """B's subscription is cut (no acknowledgement will come): A's invalidation waits for B's
    lease to run out, no longer; B itself stops answering unchecked at once and, once its
    subscription is back, its next heartbeat gives it a new lease."""
    a = await workers(lease_ms=600)
    b = await workers(lease_ms=600)
    loads = Loads(b"old")
    for cache in (a, b, b):
        assert await cache.get_or_load(CATALOG, "page", loads, ("c1",)) == b"old"

    # B hangs: its listener is paused (an event loop that no longer runs it), its lease stays registered
    listener = b._lease._tasks[0]
    listener.cancel()
    await asyncio.gather(listener, return_exceptions=True)
    b._lease._tasks[1].cancel()  # and no heartbeat renews it
    assert not b._lease.valid()
    loads.value = b"new"
    started = time.monotonic()
    await a.invalidate(CATALOG, ["c1"])
    waited = time.monotonic() - started
    assert 0.05 < waited < 0.6 + 0.3, f"waited {waited:.3f}s"
    assert await b.get_or_load(CATALOG, "page", loads, ("c1",)) == b"new"  # checked in Redis


async def test_losing_the_subscription_ends_the_lease_until_it_is_back(
        workers: Callable[..., Any], redis_url: str) -> None:
    """A's subscription is cut. A stops answering unchecked and leaves the registry at once (a
    writer does not wait for it); what A reads while it cannot hear writers, and what it trusted
    before, is checked in Redis again once the subscription and a heartbeat are back."""
    a = await workers()
    loads = Loads(b"old")
    assert await a.get_or_load(CATALOG, "page", loads, ("c1",)) == b"old"
    with redis_sync.Redis.from_url(redis_url) as r:
        killed = r.client_kill_filter(_type="pubsub", skipme=True)
    assert killed >= 1
    await eventually(lambda: not a._lease.valid(), timeout_s=1.0)
    with redis_sync.Redis.from_url(redis_url) as r:  # it took itself out of the registry
        await eventually(lambda: not r.hexists(a._lease.registry, a._lease.member), timeout_s=2.0)
    # while A is not subscribed: it reads (and keeps) the page, then another worker (no lease of
    # its own) invalidates it — a message A never gets
    assert await a.get_or_load(CATALOG, "page", loads, ("c1",)) == b"old"
    other = Cache(redis_url, prefix=a.prefix, lease_ms=0)
    await other.start()
    try:
        loads.value = b"new"
        started = time.monotonic()
        await other.invalidate(CATALOG, ["c1"])
        assert time.monotonic() - started < 0.5  # A's lease ended with its subscription
    finally:
        await other.close()
    await eventually(a._lease.valid, timeout_s=8.0)  # resubscribed, heartbeat back
    assert await a.get_or_load(CATALOG, "page", loads, ("c1",)) == b"new"
    calls = loads.calls
    for _ in range(2):  # and the new one is trusted again
        assert await a.get_or_load(CATALOG, "page", loads, ("c1",)) == b"new"
    assert loads.calls == calls


async def test_a_writer_without_a_lease_still_reaches_the_workers_that_have_one(
        workers: Callable[..., Any], redis_url: str) -> None:
    b = await workers()
    loads = Loads(b"old")
    for _ in range(2):
        assert await b.get_or_load(CATALOG, "page", loads, ("c1",)) == b"old"
    writer = Cache(redis_url, prefix=b.prefix, lease_ms=0)
    await writer.start()
    try:
        await eventually(lambda: writer._lease._live)
        await writer.invalidate(CATALOG, ["c1"])
        assert f"{CATALOG}:page" not in b._local  # dropped before invalidate returned
    finally:
        await writer.close()


async def test_a_value_read_while_an_invalidation_arrived_is_checked_not_trusted(
        workers: Callable[..., Any]) -> None:
    """B loads a page; while its database read runs, A's write commits and invalidates. B's result
    answers its own request, but B does not answer it unchecked later: its next read asks Redis,
    misses, and loads the new value."""
    a, b = await workers(), await workers()
    state = {"value": b"old"}

    async def racing_load() -> bytes:
        value = state["value"]
        state["value"] = b"new"
        await a.invalidate(CATALOG, ["c1"])
        return value

    assert await b.get_or_load(CATALOG, "page", racing_load, ("c1",)) == b"old"
    loads = Loads(b"new")
    assert await b.get_or_load(CATALOG, "page", loads, ("c1",)) == b"new"
    assert loads.calls == 1


async def test_when_redis_goes_away_no_lease_outlives_it(tmp_path: Path) -> None:
    """Redis stops (refused): every worker's subscription breaks with it, so a write does not wait
    and no worker answers its old copy unchecked afterwards."""
    server = EmbeddedRedis(tmp_path)
    server.start()
    a = Cache(server.url(), prefix="vtest", lease_ms=1000, breaker_s=0.2)
    b = Cache(server.url(), prefix="vtest", lease_ms=1000, breaker_s=0.2)
    try:
        for cache in (a, b):
            await cache.start()
            await eventually(cache._lease.valid)
        loads = Loads(b"old")
        for cache in (a, b, b):
            assert await cache.get_or_load(CATALOG, "page", loads, ("c1",)) == b"old"
        server.stop()
        loads.value = b"new"
        started = time.monotonic()
        await a.invalidate(CATALOG, ["c1"])
        assert time.monotonic() - started < 0.3
        # B's next request comes through its event loop, which has seen its subscription end by
        # then (in production B polls on its own; here it shares the test's loop: let it poll)
        await asyncio.sleep(0.01)
        assert not b._lease.valid()
        assert await b.get_or_load(CATALOG, "page", loads, ("c1",)) == b"new"
        assert await a.get_or_load(CATALOG, "page", loads, ("c1",)) == b"new"
    finally:
        for cache in (a, b):
            await cache.close()
        server.stop()


async def test_a_write_while_redis_hangs_waits_out_the_leases(tmp_path: Path) -> None:
    """Redis hangs (SIGSTOP): nobody can receive the message of the bump that timed out, and the
    other workers cannot tell yet. The writer waits until no lease can still be running (at most
    the lease after the outage began), then returns; later writes of the same outage do not wait;
    a new outage after Redis answered again is waited out again."""
    server = EmbeddedRedis(tmp_path)
    server.start()
    pid = server.pid()
    assert pid is not None
    a = Cache(server.url(), prefix="vtest", lease_ms=400, breaker_s=0.2)
    try:
        await a.start()
        await eventually(a._lease.valid)
        await a.get_or_load(CATALOG, "page", Loads(b"old"), ("c1",))
        for outage in range(2):
            os.kill(pid, signal.SIGSTOP)
            try:
                started = time.monotonic()
                await a.invalidate(CATALOG, ["c1"])
                waited = time.monotonic() - started
                assert 0.3 < waited < 1.5, f"outage {outage}: waited {waited:.3f}s"
                assert f"{CATALOG}:page" not in a._local
                started = time.monotonic()
                await a.invalidate(CATALOG, ["c1"])  # the same outage: every lease has run out by now
                assert time.monotonic() - started < 0.6
            finally:
                os.kill(pid, signal.SIGCONT)
            await eventually(lambda: not a._pending, timeout_s=10.0)  # replayed once Redis answers
            await eventually(a._lease.valid, timeout_s=10.0)
    finally:
        await a.close()
        server.stop()


async def test_what_a_worker_read_before_its_subscription_was_live_is_not_trusted(redis_url: str) -> None:
    """Right after start, a worker reads a page before Redis has confirmed its subscription; an
    invalidation sent then (here: the generation bumped directly) never reaches it. Once its lease
    runs, that copy is still checked in Redis, not answered as it is."""
    prefix = f"vtest:{uuid.uuid4().hex[:10]}"
    a = Cache(redis_url, prefix=prefix)
    await a.start()
    try:
        loads = Loads(b"old")
        assert await a.get_or_load(CATALOG, "page", loads, ("c1",)) == b"old"
        with redis_sync.Redis.from_url(redis_url) as r:
            r.incr(a.keys.generation(CATALOG, "c1"))
        loads.value = b"new"
        await eventually(a._lease.valid)
        assert await a.get_or_load(CATALOG, "page", loads, ("c1",)) == b"new"
    finally:
        await a.close()
        with redis_sync.Redis.from_url(redis_url) as r:
            for key in r.scan_iter(match=f"{prefix}:*"):
                r.delete(key)
