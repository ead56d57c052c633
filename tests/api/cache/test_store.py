"""The catalog cache against a real Redis: no stale read after a write, one rebuild for a stampede,
PostgreSQL answers (fast) when Redis is down, and an invalidation Redis missed is replayed."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as redis_sync

from tests.api.conftest import ASHA, BALA, MANGO, RADIO, SHOP_ASHA, VASE, Api, ShopDb, make_config, start_api
from villager_shop.embedded.redis import EmbeddedRedis
from villager_shop.monitoring.metrics import sample

pytestmark = pytest.mark.anyio


def db_queries(query: str = "list_products") -> float:
    return sample("villager_db_queries_total", {"query": query})


def hits() -> float:
    return sample("villager_cache_hits_total", {"scope": "catalog"})


def errors() -> float:
    return sum(sample("villager_cache_errors_total", {"operation": op})
               for op in ("get", "set", "lock", "unlock", "invalidate", "ping", "heartbeat", "subscribe"))


async def electronics(api: Api) -> dict[str, Any]:
    r = await api.client.get("/api/products", params={"category": "electronics", "limit": 50})
    assert r.status_code == 200, r.text
    return {p["id"]: p for p in r.json()["items"]}


async def test_no_stale_read_after_price_stock_availability_and_new_product(api_migrating: Api) -> None:
    api = api_migrating
    asha, bala = await api.auth(ASHA), await api.auth(BALA)
    await electronics(api)
    before_hits, before_queries = hits(), db_queries()
    radio = (await electronics(api))[str(RADIO)]
    assert hits() == before_hits + 1 and db_queries() == before_queries  # served by Redis
    variant = radio["variants"][0]["id"]

    r = await api.client.patch(f"/api/variants/{variant}", headers=asha, json={"price": "455.00"})
    assert r.status_code == 200
    radio = (await electronics(api))[str(RADIO)]
    assert radio["variants"][0]["price"] == 455 and radio["base_price"] == 455
    assert (await api.client.get(f"/api/products/{RADIO}")).json()["variants"][0]["price"] == 455

    r = await api.client.post("/api/orders", headers=bala, json={"items": [{"variant_id": variant, "quantity": 5}]})
    assert r.status_code == 201
    assert (await electronics(api))[str(RADIO)]["variants"][0]["stock"] == 0  # sold out, shown at once
    assert (await api.client.get(f"/api/products/{RADIO}")).json()["variants"][0]["stock"] == 0

    await api.client.patch(f"/api/variants/{variant}", headers=asha, json={"is_active": False})
    assert str(RADIO) not in await electronics(api)
    assert (await api.client.get(f"/api/products/{RADIO}")).status_code == 404

    r = await api.client.post("/api/products", headers=asha, json={
        "shop_id": str(SHOP_ASHA), "name": "Transistor", "category": "electronics", "price": 120, "stock": 3})
    assert r.json()["id"] in await electronics(api)


async def test_100_concurrent_requests_on_a_cold_key_make_one_query(shop_db: ShopDb, redis_url: str) -> None:
    """Two app instances (two workers) sharing one Redis: single-flight in each, the Redis lock
    between them."""
    prefix = f"vtest:{uuid.uuid4().hex[:10]}"
    # Both "workers" share this test's event loop, whose lag under 100 concurrent requests can exceed
    # the 100 ms Redis timeout (a timed-out call rightly falls back to PostgreSQL): not what this tests.
    workers = [start_api(make_config(shop_db.url, redis_url, cache_prefix=prefix, redis_timeout_ms=1000))
               for _ in range(2)]
    apis = [await w.__anext__() for w in workers]
    try:
        # steady state: each worker already holds Redis and PostgreSQL connections
        await asyncio.gather(*(apis[i % 2].client.get("/api/categories") for i in range(40)))
        before = db_queries()
        responses = await asyncio.gather(*(
            apis[i % 2].client.get("/api/products", params={"category": "dairy", "limit": 30}) for i in range(100)))
        assert {r.status_code for r in responses} == {200}
        assert len({r.content for r in responses}) == 1
        assert db_queries() - before == 1
    finally:
        for w in workers:
            await w.aclose()


async def test_without_redis_concurrent_identical_reads_share_queries(shop_db: ShopDb) -> None:
    """Without Redis, a worker still shares PostgreSQL reads: 100 concurrent identical requests
    make the read that began first and at most one more, shared by every request that arrived
    while the first one ran (see the next test for why they do not share the first)."""
    async for api in start_api(make_config(shop_db.url, None)):
        before = db_queries()
        responses = await asyncio.gather(*(
            api.client.get("/api/products", params={"category": "grocery", "limit": 30}) for _ in range(100)))
        assert {r.status_code for r in responses} == {200}
        assert len({r.content for r in responses}) == 1
        assert 1 <= db_queries() - before <= 2


async def test_without_redis_a_request_does_not_share_a_read_that_began_before_it() -> None:
    """Without Redis, nothing tells a worker that another worker committed a write. A request that
    joined a read already running could get what the database held before that write; so a request
    arriving while a read runs waits for the next read (one read of a key at a time), which the
    requests arriving meanwhile share."""
    from villager_shop.api.cache.keys import CATALOG
    from villager_shop.api.cache.store import Cache

    cache = Cache(None, prefix=f"vtest:{uuid.uuid4().hex[:10]}")
    await cache.start()
    loads: list[str] = []
    running = asyncio.Event()
    finish = asyncio.Event()

    async def read_before_the_write() -> bytes:
        loads.append("old")
        running.set()
        await finish.wait()
        return b"old"

    async def read_after_the_write() -> bytes:
        loads.append("new")
        return b"new"

    try:
        first = [asyncio.create_task(cache.get_or_load(CATALOG, "page", read_before_the_write)) for _ in range(3)]
        await running.wait()  # the read runs; now another worker's write commits
        later = [asyncio.create_task(cache.get_or_load(CATALOG, "page", read_after_the_write)) for _ in range(3)]
        await asyncio.sleep(0.05)
        assert loads == ["old"]  # the next read waits for the running one
        finish.set()
        assert await asyncio.gather(*first) == [b"old"] * 3  # arrived before the read began: shared it
        assert await asyncio.gather(*later) == [b"new"] * 3
        assert loads == ["old", "new"]
        assert await cache.get_or_load(CATALOG, "page", read_after_the_write) == b"new"  # nothing kept
        assert loads == ["old", "new", "new"]
    finally:
        await cache.close()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A Redis of this test's own, that it may stop."""
    server = EmbeddedRedis(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def api_own_redis(shop_db: ShopDb, own_redis: EmbeddedRedis) -> AsyncIterator[Api]:
    # A Redis timeout far above what a request takes here, so that a request that waited for Redis
    # stands out from one slowed by a busy machine (a 130 ms request on a loaded CI host is not a wait).
    async for a in start_api(make_config(shop_db.url, own_redis.url(), redis_breaker_s=0.3, redis_timeout_ms=1000)):
        yield a


async def test_redis_down_requests_are_answered_by_postgres_fast(api_own_redis: Api, own_redis: EmbeddedRedis) -> None:
    api = api_own_redis
    paths = ["/api/products?limit=20", "/api/products?category=dairy&limit=20", f"/api/products/{RADIO}",
             "/api/categories", f"/api/shops/{SHOP_ASHA}"]
    for path in paths * 2:  # warm: connections, prepared plans, cache
        assert (await api.client.get(path)).status_code == 200
    assert (await api.client.get("/health/ready")).json()["cache"] == "ok"
    errors_before = errors()

    own_redis.stop()
    for _ in range(6):
        for path in paths:
            started = time.perf_counter()
            r = await api.client.get(path)
            elapsed = time.perf_counter() - started
            assert r.status_code == 200, (path, r.text)
            assert elapsed < 0.5, f"{path} took {elapsed * 1000:.0f} ms with Redis down (timeout 1000 ms)"
    assert errors() > errors_before
    ready = await api.client.get("/health/ready")
    assert ready.status_code == 200 and ready.json()["cache"] == "degraded"
    health = await api.client.get("/api/health")
    assert health.status_code == 200 and health.json()["cache"] == "degraded"

    # writes still work and are seen
    asha = await api.auth(ASHA)
    radio = (await api.client.get(f"/api/products/{RADIO}")).json()
    r = await api.client.patch(f"/api/variants/{radio['variants'][0]['id']}", headers=asha, json={"price": 444})
    assert r.status_code == 200
    assert (await api.client.get(f"/api/products/{RADIO}")).json()["variants"][0]["price"] == 444

    # Redis back: the cache is used again once the breaker closes
    own_redis.start()
    await asyncio.sleep(0.4)
    for path in paths:
        await api.client.get(path)
    before = hits()
    for path in paths[:4]:
        assert (await api.client.get(path)).status_code == 200
    assert hits() == before + 4
    assert (await api.client.get(f"/api/products/{RADIO}")).json()["variants"][0]["price"] == 444


async def test_an_invalidation_redis_refused_is_replayed_before_cached_reads(
        api_own_redis: Api, own_redis: EmbeddedRedis) -> None:
    api = api_own_redis
    admin = redis_sync.Redis(unix_socket_path=str(own_redis.socket_path))
    asha = await api.auth(ASHA)
    radio = (await electronics(api))[str(RADIO)]
    assert (await api.client.get(f"/api/products/{RADIO}")).status_code == 200
    generation_key = f"{api.config.cache_prefix}:gen:catalog:product:{RADIO}"  # its page's (a price is only shown)
    generation = admin.get(generation_key)
    assert generation is not None

    admin.execute_command("ACL", "SETUSER", "default", "-incr")  # the bump fails; reads still work
    try:
        r = await api.client.patch(f"/api/variants/{radio['variants'][0]['id']}", headers=asha,
                                   json={"price": "433.00"})
        assert r.status_code == 200
        assert admin.get(generation_key) == generation  # Redis did not take the invalidation
        await asyncio.sleep(0.4)  # breaker closed again; the old entry is still in Redis
        assert (await electronics(api))[str(RADIO)]["variants"][0]["price"] == 433
    finally:
        admin.execute_command("ACL", "SETUSER", "default", "+incr")
    await asyncio.sleep(0.7)  # the pending invalidation is retried in the background
    assert admin.get(generation_key) != generation
    assert (await electronics(api))[str(RADIO)]["variants"][0]["price"] == 433
    before = hits()
    assert (await electronics(api))[str(RADIO)]["variants"][0]["price"] == 433
    assert hits() == before + 1
    admin.close()


async def test_only_writes_by_others_notify_the_catalog_channel(api_migrating: Api, shop_db: ShopDb) -> None:
    """The service's own product and variant writes (a price, an order's stock) invalidate what
    they changed themselves: they send no catalog notification, which would wake every worker and
    serialize commits on PostgreSQL's notification lock. Notifications arrive in commit order, so
    the first one after those writes is the old application's that follows them."""
    import psycopg

    api = api_migrating
    asha, bala = await api.auth(ASHA), await api.auth(BALA)
    variant = (await electronics(api))[str(RADIO)]["variants"][0]["id"]
    with psycopg.connect(shop_db.url, autocommit=True) as listener, \
            psycopg.connect(shop_db.url, autocommit=True) as legacy:
        listener.execute("LISTEN villager_catalog")
        r = await api.client.patch(f"/api/variants/{variant}", headers=asha, json={"price": 432})
        assert r.status_code == 200
        r = await api.client.post("/api/orders", headers=bala, json={"items": [{"variant_id": variant, "quantity": 1}]})
        assert r.status_code == 201
        legacy.execute("UPDATE products SET price = 431 WHERE id = %s", (RADIO,))
        first = next(iter(listener.notifies(timeout=5.0, stop_after=1)), None)
        assert first is not None, "the old application's write sent no notification"
        assert first.pid == legacy.info.backend_pid, f"a notification of the service's own writes came first: {first}"
        assert first.payload in {"products", "product_variants"}


async def radio_price_in_listing_becomes(api: Api, price: float, within_s: float) -> Any:
    """Poll the electronics listing until Radio shows `price` (or time runs out); the last price seen."""
    deadline = time.monotonic() + within_s
    seen = None
    while time.monotonic() < deadline:
        seen = (await electronics(api))[str(RADIO)]["variants"][0]["price"]
        if seen == price:
            break
        await asyncio.sleep(0.02)
    return seen


async def test_a_write_by_the_old_application_is_not_served_stale(api_migrating: Api, shop_db: ShopDb) -> None:
    """The old application (plain SQL on the legacy columns) changes a price: the sync trigger and
    the catalog notification make the next listings show it, well before the cache TTL."""
    import psycopg

    api = api_migrating
    assert (await electronics(api))[str(RADIO)]["variants"][0]["price"] != 321
    await electronics(api)  # cached now
    with psycopg.connect(shop_db.url, autocommit=True) as conn:
        conn.execute("UPDATE products SET price = 321 WHERE id = %s", (RADIO,))
    assert await radio_price_in_listing_becomes(api, 321, within_s=2.0) == 321


async def test_a_change_nobody_heard_is_not_served_once_the_listener_reconnects(api_migrating: Api,
                                                                                   shop_db: ShopDb) -> None:
    """Notifications sent while the listener had no connection (an outage, a restart, a `restore`
    that swapped the database in) are lost: on reconnecting it drops the whole catalog (was: the
    old values until the TTL, 300 s)."""
    import psycopg

    from villager_shop.core.channels import SELF_INVALIDATING_SESSION

    api = api_migrating
    await electronics(api)  # cached now
    with psycopg.connect(shop_db.url, autocommit=True) as conn:
        conn.execute(f"SET {SELF_INVALIDATING_SESSION} = on")  # the triggers stay silent: a change unheard
        conn.execute("UPDATE products SET price = 322 WHERE id = %s", (RADIO,))
    await asyncio.sleep(0.3)
    assert (await electronics(api))[str(RADIO)]["variants"][0]["price"] != 322  # still the cached value
    with psycopg.connect(shop_db.url, autocommit=True) as conn:
        assert conn.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                            " WHERE application_name = 'villager-shop cache listener'"
                            " AND datname = current_database()").fetchone() == (1,)
    assert await radio_price_in_listing_becomes(api, 322, within_s=5.0) == 322


async def test_an_order_invalidates_only_the_listings_and_page_of_its_products(api_migrating: Api) -> None:
    """The radio (electronics) is ordered: its stock is shown by its page and by the listings that
    hold it (electronics, a search for it, the whole catalog if its page shows it), which rebuild;
    another category's listing, a listing page that does not show the radio and another product's
    page stay cached — also after the service's own catalog notification arrived (skipped: the
    order invalidated finely)."""
    api = api_migrating
    bala = await api.auth(BALA)
    dairy = {"category": "dairy", "limit": 20}
    search = {"q": "radi", "limit": 20}
    radio = (await electronics(api))[str(RADIO)]
    whole = (await api.client.get("/api/products?limit=50")).json()
    whole_shows_radio = any(p["id"] == str(RADIO) for p in whole["items"])
    assert str(RADIO) in {p["id"] for p in (await api.client.get("/api/products", params=search)).json()["items"]}
    for _ in range(2):  # cached
        assert (await api.client.get("/api/products", params=dairy)).status_code == 200
        assert (await api.client.get(f"/api/products/{MANGO}")).status_code == 200
        assert (await api.client.get("/api/products?limit=50")).status_code == 200
        assert (await api.client.get("/api/products", params=search)).status_code == 200
    r = await api.client.post("/api/orders", headers=bala,
                              json={"items": [{"variant_id": radio["variants"][0]["id"], "quantity": 1}]})
    assert r.status_code == 201
    await asyncio.sleep(0.3)  # a catalog notification, had the order sent one, reached the listener
    before_hits, before_queries = hits(), db_queries()
    assert (await api.client.get("/api/products", params=dairy)).status_code == 200
    assert (await api.client.get(f"/api/products/{MANGO}")).status_code == 200
    assert hits() == before_hits + 2 and db_queries() == before_queries
    assert (await electronics(api))[str(RADIO)]["variants"][0]["stock"] == radio["variants"][0]["stock"] - 1
    assert (await api.client.get(f"/api/products/{RADIO}")).json()["variants"][0]["stock"] == 4
    found = {p["id"]: p for p in (await api.client.get("/api/products", params=search)).json()["items"]}
    assert found[str(RADIO)]["variants"][0]["stock"] == 4
    page = (await api.client.get("/api/products?limit=50")).json()
    # electronics, the search, and the whole catalog only if it shows the radio
    assert db_queries("list_products") == before_queries + 2 + whole_shows_radio
    assert all(p["variants"][0]["stock"] == 4 for p in page["items"] if p["id"] == str(RADIO))


async def test_the_breaker_opens_on_a_refused_connection_or_when_a_probe_confirms_a_timeout(redis_url: str) -> None:
    """A timeout alone (often the worker's own event-loop lag) does not open the breaker: a probe
    PING does, if it fails too. A refused connection opens it at once."""
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import MaxConnectionsError

    from villager_shop.api.cache.store import Cache

    cache = Cache(redis_url, prefix=f"vtest:{uuid.uuid4().hex[:10]}", breaker_s=5.0)
    await cache.start()
    try:
        for _ in range(5):
            cache._breaker.trip("get", TimeoutError())
        assert cache._breaker.probe_task is not None
        await cache._breaker.probe_task  # Redis answers the probe: stays closed
        assert cache.available()
        busy = RedisConnectionError("No connection available.")
        busy.__cause__ = TimeoutError()
        for exc in (MaxConnectionsError("Too many connections"), busy):  # our own pool is busy
            cache._breaker.trip("get", exc)
            await cache._breaker.probe_task
            assert cache.available()
        cache._breaker.trip("get", RedisConnectionError("refused"))  # Redis down: at once
        assert not cache.available()
    finally:
        await cache.close()

    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)  # a Redis that accepts and never answers
        writer.close()

    server = await asyncio.start_server(hang, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    cache = Cache(f"redis://127.0.0.1:{port}/0", breaker_s=5.0, probe_ms=200)
    await cache.start()
    try:
        cache._breaker.trip("get", TimeoutError())
        assert cache.available()
        assert cache._breaker.probe_task is not None
        await cache._breaker.probe_task
        assert not cache.available()
    finally:
        await cache.close()
        server.close()


def test_plain_listing_accepts_only_what_the_route_would_take_as_it_is() -> None:
    from villager_shop.api.fast_listing import plain_listing

    assert plain_listing(b"") == {}
    assert plain_listing(b"category=dairy&limit=30&q=ghee&cursor=abc") == {
        "category": "dairy", "limit": 30, "q": "ghee", "cursor": "abc"}
    assert plain_listing(b"category=d%C3%A1iry") == {"category": "d\u00e1iry"}
    for odd in (b"category=a&category=b", b"category=", b"limit=0", b"limit=020", b"limit=+5", b"limit=1000",
                b"shop=10000000-0000-0000-0000-000000000001", b"page=2", b"q=" + b"x" * 101):
        assert plain_listing(odd) is None, odd


async def test_a_cached_listing_is_answered_below_fastapi_the_same_way(api_migrating: Api) -> None:
    api = api_migrating
    params = {"category": "electronics", "limit": 50}
    first = await api.client.get("/api/products", params=params)  # miss: FastAPI, rebuild
    before_hits, before_counted = hits(), ok_listings()
    fast = await api.client.get("/api/products", params=params)
    assert hits() == before_hits + 1 and ok_listings() == before_counted + 1  # under the route's template
    assert fast.status_code == 200 and fast.content == first.content
    assert fast.headers["content-type"] == first.headers["content-type"] == "application/json"
    assert fast.headers["content-length"] == first.headers["content-length"]
    # invalid input still gets the route's answers
    assert (await api.client.get("/api/products", params={"limit": 0})).status_code == 422
    assert (await api.client.get("/api/products", params={"cursor": "%%%"})).status_code == 400
    assert (await api.client.get("/api/products", params={"category": "a\x00b"})).status_code == 422

    # product pages likewise; a page that is not listed stays a 404
    first = await api.client.get(f"/api/products/{RADIO}")
    before_hits = hits()
    fast = await api.client.get(f"/api/products/{RADIO}")
    assert hits() == before_hits + 1
    assert fast.status_code == 200 and fast.content == first.content
    assert fast.headers["content-length"] == first.headers["content-length"]
    for _ in range(2):
        assert (await api.client.get(f"/api/products/{VASE}")).status_code == 404
    assert (await api.client.get(f"/api/products/{str(RADIO).upper()}")).status_code == 200
    assert (await api.client.get("/api/products/not-a-uuid")).status_code == 422


def ok_listings() -> float:
    return sample("villager_http_requests_total", {"method": "GET", "route": "/api/products", "status": "200"})


async def test_the_catalog_listener_stops_promptly_when_cancelled(shop_db: ShopDb) -> None:
    """Shutdown must never hang on the listener (it waits inside psycopg's notifies())."""
    from villager_shop.api.cache.store import Cache
    from villager_shop.api.catalog_listener import listen_for_catalog_changes

    cache = Cache(None, prefix=f"vtest:{uuid.uuid4().hex[:8]}")
    await cache.start()
    for wait in (0.3, 1.5):
        task = asyncio.create_task(listen_for_catalog_changes(shop_db.url, cache))
        await asyncio.sleep(wait)  # connected and waiting for a notification
        t0 = time.monotonic()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=5)
        assert time.monotonic() - t0 < 3
    await cache.close()


async def test_a_write_through_one_instance_is_seen_by_the_next_read_through_another(
        shop_db: ShopDb, redis_url: str) -> None:
    """Each worker keeps its own copy of the values it served, but checks their generations in Redis
    on every request: a price change, an order and a deactivation made through instance A are seen
    by the very next read through instance B, whose copy of the listing and of the page was warm."""
    prefix = f"vtest:{uuid.uuid4().hex[:10]}"
    workers = [start_api(make_config(shop_db.url, redis_url, cache_prefix=prefix)) for _ in range(2)]
    a, b = [await w.__anext__() for w in workers]
    try:
        asha, bala = await a.auth(ASHA), await a.auth(BALA)
        radio = (await electronics(b))[str(RADIO)]
        variant = radio["variants"][0]["id"]

        async def warm() -> None:
            for api in (a, b, b):
                await electronics(api)
                assert (await api.client.get(f"/api/products/{RADIO}")).status_code == 200

        await warm()
        # B answers from its own copy: not even the value's Redis entry is needed any more
        copy = b.app.state.services.cache
        assert any(key.endswith(":product:" + str(RADIO)) for key in copy._local)
        with redis_sync.Redis.from_url(redis_url) as r:
            for key in r.scan_iter(match=f"{prefix}:catalog:*:product:{RADIO}"):
                r.delete(key)
        before_hits, before_queries = hits(), db_queries("product_detail")
        assert (await b.client.get(f"/api/products/{RADIO}")).json()["id"] == str(RADIO)
        assert hits() == before_hits + 1 and db_queries("product_detail") == before_queries

        r = await a.client.patch(f"/api/variants/{variant}", headers=asha, json={"price": "466.00"})
        assert r.status_code == 200
        assert (await electronics(b))[str(RADIO)]["variants"][0]["price"] == 466
        assert (await b.client.get(f"/api/products/{RADIO}")).json()["variants"][0]["price"] == 466

        await warm()
        stock = (await electronics(b))[str(RADIO)]["variants"][0]["stock"]
        r = await a.client.post("/api/orders", headers=bala, json={"items": [{"variant_id": variant, "quantity": 1}]})
        assert r.status_code == 201
        assert (await electronics(b))[str(RADIO)]["variants"][0]["stock"] == stock - 1
        assert (await b.client.get(f"/api/products/{RADIO}")).json()["variants"][0]["stock"] == stock - 1

        await warm()
        r = await a.client.patch(f"/api/variants/{variant}", headers=asha, json={"is_active": False})
        assert r.status_code == 200
        assert str(RADIO) not in await electronics(b)
        assert (await b.client.get(f"/api/products/{RADIO}")).status_code == 404
    finally:
        for w in workers:
            await w.aclose()


async def test_a_write_through_an_instance_without_redis_is_not_served_stale_by_another(
        shop_db: ShopDb, redis_url: str) -> None:
    """Instance B cannot reach Redis (a wrong port, a partition): its own invalidation cannot land,
    and its writes send no catalog notification. It notifies through PostgreSQL instead, so A,
    whose Redis is fine, does not serve B's change from its cache until the TTL (300 s)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"redis://127.0.0.1:{sock.getsockname()[1]}/0"
    prefix = f"vtest:{uuid.uuid4().hex[:10]}"
    workers = [start_api(make_config(shop_db.url, url, cache_prefix=prefix)) for url in (redis_url, closed)]
    a, b = [await w.__anext__() for w in workers]
    try:
        asha = await b.auth(ASHA)
        variant = (await electronics(b))[str(RADIO)]["variants"][0]["id"]
        for _ in range(3):  # A's cache is warm: its Redis holds the listing and the page
            await electronics(a)
            assert (await a.client.get(f"/api/products/{RADIO}")).status_code == 200
        r = await b.client.patch(f"/api/variants/{variant}", headers=asha, json={"price": "477.00"})
        assert r.status_code == 200
        assert await radio_price_in_listing_becomes(a, 477, within_s=2.0) == 477
        assert (await a.client.get(f"/api/products/{RADIO}")).json()["variants"][0]["price"] == 477
    finally:
        for w in workers:
            await w.aclose()


async def test_concurrent_reads_share_one_generation_read(shop_db: ShopDb, redis_url: str) -> None:
    """Without a lease (VILLAGER_CACHE_LEASE_MS=0, or while it has lapsed) every hit checks its copy
    in Redis: requests that arrive while a check is in flight share the next one; each check is
    sent after every request it serves arrived."""
    config = make_config(shop_db.url, redis_url, cache_prefix=f"vtest:{uuid.uuid4().hex[:10]}", cache_lease_ms=0)
    worker = start_api(config)
    api = await worker.__anext__()
    try:
        cache = api.app.state.services.cache
        for _ in range(2):
            await electronics(api)
        sent: list[int] = []
        check = cache._scripts.check

        def counting_check(*, keys: list[str], args: list[str]) -> Any:
            sent.append(len(keys))
            return check(keys=keys, args=args)

        cache._scripts.check = counting_check
        try:
            responses = await asyncio.gather(*(api.client.get("/api/products", params={"category": "electronics",
                                                                                        "limit": 50})
                                               for _ in range(40)))
        finally:
            cache._scripts.check = check
        assert {r.status_code for r in responses} == {200} and len({r.content for r in responses}) == 1
        assert 1 <= len(sent) < 40
    finally:
        await worker.aclose()


async def test_a_listing_read_before_a_change_to_a_product_it_shows_is_not_kept(redis_url: str) -> None:
    """A value that lists products depends on what is shown of them. A rebuild whose database read
    began before such a change (committed and invalidated while it ran) answers its own request
    but is not kept, in Redis or in the worker: the next read, here or in another worker, rebuilds.
    A change to a product it does not show keeps it."""
    from villager_shop.api.cache.keys import CATALOG
    from villager_shop.api.cache.store import Cache

    prefix = f"vtest:{uuid.uuid4().hex[:10]}"
    a, b = Cache(redis_url, prefix=prefix), Cache(redis_url, prefix=prefix)
    await a.start()
    await b.start()
    loads: list[str] = []

    def shows(body: bytes) -> list[str]:
        return ["p1", "p2"]

    async def racing_load() -> bytes:  # the write commits while the page is being read
        loads.append("old")
        await b.invalidate(CATALOG, [], shown=["p1"])
        return b"old"

    async def load_new() -> bytes:
        loads.append("new")
        return b"new"

    try:
        assert await a.get_or_load(CATALOG, "page", racing_load, ("all",), shows=shows) == b"old"
        for cache in (a, b, a):
            assert await cache.get_or_load(CATALOG, "page", load_new, ("all",), shows=shows) == b"new"
        assert loads == ["old", "new"]  # the second one was kept
        await b.invalidate(CATALOG, [], shown=["p3"])  # not shown by the page
        for cache in (a, b):
            assert await cache.get_cached(CATALOG, "page", ("all",)) == b"new"
        await b.invalidate(CATALOG, [], shown=["p2"])
        for cache in (a, b):
            assert await cache.get_cached(CATALOG, "page", ("all",)) is None
    finally:
        await a.close()
        await b.close()
        with redis_sync.Redis.from_url(redis_url) as r:
            for key in r.scan_iter(match=f"{prefix}:*"):
                r.delete(key)
