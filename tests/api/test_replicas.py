"""Catalog reads from a real streaming standby (the session's `streaming_pair`): routed there when
it is recent, never older than a client's own write, never into the cache after an invalidation,
and a standby that dies mid-load takes no request down."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
import pytest
import redis
from pydantic import SecretStr

from tests.api.conftest import ASHA, BALA, RADIO, SHOP_ASHA, Api, build_shop, make_config, start_api
from villager_shop.api.config import replica_urls
from villager_shop.api.replicas import Replica
from villager_shop.core.config import Settings
from villager_shop.core.db import create_database, drop_database
from villager_shop.core.errors import ConfigError
from villager_shop.core.wal import parse_lsn
from villager_shop.embedded.replica import StreamingPair

pytestmark = pytest.mark.anyio

SOURCE = "X-Villager-Read-From"
TOKEN = "X-Villager-LSN"


@dataclass
class Pair:
    primary: str  # the shop database on the primary
    standby: str  # the same database on the standby
    servers: StreamingPair

    def scalar(self, query: str, params: Any = None) -> Any:
        with psycopg.connect(self.primary, autocommit=True) as conn:
            row = conn.execute(query.encode(), params).fetchone()
            return row[0] if row else None

    def execute(self, query: str, params: Any = None) -> None:
        with psycopg.connect(self.primary, autocommit=True) as conn:
            conn.execute(query.encode(), params)

    def standby_scalar(self, query: str, params: Any = None) -> Any:
        with psycopg.connect(self.standby, autocommit=True) as conn:
            row = conn.execute(query.encode(), params).fetchone()
            return row[0] if row else None


@pytest.fixture(scope="session")
def replicated_template(streaming_pair: StreamingPair) -> Iterator[str]:
    name = "vt_rtpl_" + uuid.uuid4().hex[:8]
    admin = streaming_pair.primary_url()
    url = create_database(admin, name)
    try:
        build_shop(url)
        yield name
    finally:
        drop_database(admin, name)


@pytest.fixture
def pair(streaming_pair: StreamingPair, replicated_template: str) -> Iterator[Pair]:
    """A migrated shop database of this test's own on the primary, replayed by the standby."""
    name = "vt_" + uuid.uuid4().hex[:12]
    admin = streaming_pair.primary_url()
    create_database(admin, name, template=replicated_template)
    streaming_pair.wait_caught_up()
    try:
        yield Pair(streaming_pair.primary_url(name), streaming_pair.standby_url(name), streaming_pair)
    finally:
        streaming_pair.resume_replay()
        drop_database(admin, name)


@asynccontextmanager
async def replicated_api(pair: Pair, redis_url: str, **overrides: Any) -> AsyncIterator[Api]:
    """The app on the primary, with the standby as its replica."""
    config = make_config(pair.primary, redis_url, replica_urls=(pair.standby,), **overrides)
    async for api in start_api(config):
        yield api


def reader(api: Api) -> httpx.AsyncClient:
    """A client of its own: no cookie, so no token unless given one."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=api.app), base_url="http://shop.test", timeout=30)


async def wait_for_replica(api: Api, timeout_s: float = 10) -> None:
    """Until a read that misses the cache is answered by the standby."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        r = await api.client.get("/api/products", params={"q": uuid.uuid4().hex[:6]})
        assert r.status_code == 200
        if r.headers.get(SOURCE) == "replica":
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the standby never answered a read")


async def product_count(client: httpx.AsyncClient, headers: dict[str, str] | None = None) -> tuple[int, str]:
    r = await client.get(f"/api/shops/{SHOP_ASHA}", headers=headers or {})
    assert r.status_code == 200, r.text
    return int(r.json()["product_count"]), r.headers[SOURCE]


async def test_reads_are_answered_by_a_recent_standby_and_health_shows_it(pair: Pair, redis_url: str) -> None:
    async with replicated_api(pair, redis_url, replica_max_lag_ms=60_000) as api:
        await wait_for_replica(api)
        ready = (await api.client.get("/health/ready")).json()
        [replica] = ready["replicas"]
        assert replica["state"] == "ok" and replica["lag_bytes"] is not None and replica["lag_ms"] < 1000
        assert f":{pair.servers.standby_port}/" in replica["url"]
        before, _ = await product_count(api.client)
        pair.servers.pause_replay()
        # A change the standby has not replayed: within the (generous) bound, a read without a
        # token may be answered by the standby, and is: it shows the old count.
        pair.execute("UPDATE products SET is_available = NOT is_available WHERE id = %s", (RADIO,))
        after_on_primary = pair.scalar(
            "SELECT count(*) FROM products p WHERE shop_id = %s AND is_available AND EXISTS"
            " (SELECT 1 FROM product_variants v WHERE v.product_id = p.id AND v.is_active)", (SHOP_ASHA,))
        assert after_on_primary != before
        async with reader(api) as client:
            assert await product_count(client) == (before, "replica")
        deadline = time.monotonic() + 3
        while (await api.client.get("/health/ready")).json()["replicas"][0]["lag_bytes"] == 0:
            assert time.monotonic() < deadline, "health never showed the standby behind"
            await asyncio.sleep(0.05)


async def test_a_client_reads_its_own_writes_while_the_standby_lags(pair: Pair, redis_url: str) -> None:
    bound_ms = 1500
    async with replicated_api(pair, redis_url, replica_max_lag_ms=bound_ms) as api:
        asha, bala = await api.auth(ASHA), await api.auth(BALA)
        page = (await api.client.get(f"/api/products/{RADIO}")).json()
        variant = page["variants"][0]["id"]
        r = await api.client.patch(f"/api/variants/{variant}", headers=asha, json={"stock": 1000})
        assert r.status_code == 200
        await wait_for_replica(api)
        count, _ = await product_count(api.client)
        pair.servers.pause_replay()
        started = time.monotonic()
        async with reader(api) as writer, reader(api) as bystander:
            stale_seen, stock = 0, 1000
            for n in range(12):
                # A catalog edit: the shop's listed products change; the token must bring it back.
                available = n % 2 == 1
                r = await writer.patch(f"/api/products/{RADIO}", headers=asha, json={"is_available": available})
                assert r.status_code == 200, r.text
                count += 1 if available else -1
                token = r.headers[TOKEN]
                assert parse_lsn(token) is not None and "villager_lsn=" in r.headers["set-cookie"]
                assert await product_count(writer, {TOKEN: token}) == (count, "primary")
                assert (await product_count(writer))[0] == count  # the cookie alone carries it too
                if available:  # an order: its stock is on the product page at once
                    r = await writer.post("/api/orders", headers=bala,
                                          json={"items": [{"variant_id": variant, "quantity": 1}]})
                    assert r.status_code == 201, r.text
                    stock -= 1
                    page = (await writer.get(f"/api/products/{RADIO}", headers={TOKEN: r.headers[TOKEN]})).json()
                    assert page["variants"][0]["stock"] == stock
                # Without the token, older data only within the bound: the standby stopped replaying
                # before the first write, so past the bound the primary answers.
                seen, source = await product_count(bystander)
                if seen != count:
                    stale_seen += 1
                    assert source == "replica" and time.monotonic() - started < bound_ms / 1000 + 0.1
            await asyncio.sleep(max(0.0, started + bound_ms / 1000 + 0.1 - time.monotonic()))
            assert await product_count(bystander) == (count, "primary")
            assert stale_seen >= 1  # the standby did answer (and lag) at first: the token made the difference


async def test_a_standby_stopped_under_load_fails_no_request(pair: Pair, redis_url: str) -> None:
    async with replicated_api(pair, redis_url) as api:
        await wait_for_replica(api)
        results: list[tuple[int, str | None]] = []
        stop = time.monotonic() + 3.5

        async def client(n: int) -> None:
            async with reader(api) as c:
                i = 0
                while time.monotonic() < stop:
                    i += 1
                    if i % 2:  # a listing the cache does not hold: read from PostgreSQL
                        r = await c.get("/api/products", params={"q": f"{n}-{i}", "limit": 5})
                    else:
                        r = await c.get(f"/api/shops/{SHOP_ASHA}")
                    results.append((r.status_code, r.headers.get(SOURCE)))

        async def stop_the_standby() -> int:
            await asyncio.sleep(1.0)
            served = len(results)
            await asyncio.to_thread(pair.servers.stop_standby)
            return served

        try:
            *_, served_before = await asyncio.gather(*(client(n) for n in range(8)), stop_the_standby())
            health = (await api.client.get("/health/ready"))
            assert health.status_code == 200 and health.json()["replicas"][0]["state"] == "down"
        finally:
            await asyncio.to_thread(pair.servers.start_standby)
            await asyncio.to_thread(pair.servers.wait_streaming)
        assert [r for r in results if r[0] != 200] == []
        assert {s for _, s in results[:served_before]} >= {"replica"}
        assert {s for _, s in results[-50:]} == {"primary"}
        assert len(results) > 200


async def test_the_cache_never_keeps_what_a_lagging_standby_returned_after_an_invalidation(
        pair: Pair, redis_url: str) -> None:
    # A bound so generous that the paused standby stays eligible: only the invalidation's WAL
    # position keeps the rebuilds off it.
    async with replicated_api(pair, redis_url, replica_max_lag_ms=600_000) as api:
        asha = await api.auth(ASHA)
        await wait_for_replica(api)
        page = (await api.client.get(f"/api/products/{RADIO}")).json()
        variant, old_price = page["variants"][0]["id"], page["variants"][0]["price"]
        pair.servers.pause_replay()
        async with reader(api) as anyone:
            # Through the API: once the write has answered, no reader gets the old price.
            r = await api.client.patch(f"/api/variants/{variant}", headers=asha, json={"price": "777.00"})
            assert r.status_code == 200
            for _ in range(20):
                assert (await anyone.get(f"/api/products/{RADIO}")).json()["variants"][0]["price"] == 777
                listing = (await anyone.get("/api/products", params={"category": "electronics", "limit": 100})).json()
                assert {p["variants"][0]["price"] for p in listing["items"] if p["id"] == str(RADIO)} == {777}
            # By another program (SQL on the primary; the listener hears it): once the invalidation
            # carrying that write's position is in Redis, no reader gets the old price.
            with psycopg.connect(pair.primary) as conn:  # one transaction: a position before its commit
                conn.execute("UPDATE product_variants SET price = 555 WHERE id = %s", (variant,))
                row = conn.execute("SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn").fetchone()
                assert row is not None
                written = int(row[0])
            wal_key = f"{api.config.cache_prefix}:wal:catalog"
            with redis.Redis.from_url(redis_url) as r_:
                deadline = time.monotonic() + 5
                while int(r_.get(wal_key) or b"0", 16) < written:
                    assert time.monotonic() < deadline, "the listener did not invalidate"
                    await asyncio.sleep(0.01)
            for _ in range(20):
                assert (await anyone.get(f"/api/products/{RADIO}")).json()["variants"][0]["price"] == 555
        # The standby still holds the original price: the answers above came from the primary.
        assert float(pair.standby_scalar("SELECT price FROM product_variants WHERE id = %s", (variant,))) == old_price


def test_replica_urls_are_checked_and_never_quoted() -> None:
    def urls(raw: str) -> tuple[str, ...]:
        return replica_urls(Settings(database_replica_urls=SecretStr(raw)))  # type: ignore[call-arg]

    assert urls(" postgresql://app:pw1@s1/shop , postgresql://app@s2:5433/shop ") == (
        "postgresql://app:pw1@s1/shop", "postgresql://app@s2:5433/shop")
    assert urls("") == ()
    for raw, problem in (("postgresql://app:hunter2@s1/shop,,postgresql://s2/shop", "URL 2) is empty"),
                         ("postgresql://app:hunter2@s1/shop,postgresql://app:hunter2@s1/shop", "given twice"),
                         ("postgresql://app:hunter2@s1/shop,not a url", "URL 2) is not a PostgreSQL")):
        with pytest.raises(ConfigError) as err:
            urls(raw)
        assert problem in str(err.value) and "hunter2" not in str(err.value)
    shown = Replica("postgresql://app:hunter2@s1:5433/shop").describe(time.monotonic(), 1.0)
    assert shown["url"] == "postgresql://app:***@s1:5433/shop" and shown["state"] == "down"
