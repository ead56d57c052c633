"""Probes: Redis down is 'degraded' (still ready), PostgreSQL down is 503, metrics cached in-process."""

from __future__ import annotations

import pytest

from tests.api.conftest import ShopDb, make_config, start_api
from tests.helpers import run_cli
from villager_shop.core.db import drop_database
from villager_shop.core.urls import dbname_of
from villager_shop.monitoring.metrics import sample

pytestmark = pytest.mark.anyio


def summary_queries() -> float:
    return sample("villager_db_queries_total", {"query": "db_performance_summary"})


async def test_health_shape_and_metrics_cached(shop_db: ShopDb, redis_url: str) -> None:
    async for api in start_api(make_config(shop_db.url, redis_url, health_metrics_ttl_s=60)):
        assert (await api.client.get("/health/live")).json() == {"status": "alive"}
        ready = await api.client.get("/health/ready")
        assert ready.status_code == 200 and ready.json() == {
            "status": "ready", "database": "ok", "cache": "ok", "catalog_invalidation": "listening"}
        before = summary_queries()
        for _ in range(5):
            r = await api.client.get("/api/health")
            assert r.status_code == 200
            body = r.json()
            assert set(body) == {"status", "timestamp", "database", "cache", "metrics"}
            assert body["database"] == "connected" and body["cache"] == "connected"
            assert {m["metric"] for m in body["metrics"]} == {"connection_count", "cache_hit_ratio"}
        assert summary_queries() - before == 1  # five probes, one query of the view


async def test_redis_unreachable_is_degraded_not_down(shop_db: ShopDb) -> None:
    config = make_config(shop_db.url, "redis://127.0.0.1:1/0")
    async for api in start_api(config):
        ready = await api.client.get("/health/ready")
        assert ready.status_code == 200 and ready.json()["cache"] == "degraded"
        health = await api.client.get("/api/health")
        assert health.status_code == 200
        assert health.json()["status"] == "degraded" and health.json()["cache"] == "degraded"
        assert (await api.client.get("/api/products?limit=5")).status_code == 200


async def test_postgres_down_is_503(shop_db: ShopDb, redis_url: str, pg_admin_url: str) -> None:
    async for api in start_api(make_config(shop_db.url, redis_url, db_pool_timeout_s=1)):
        assert (await api.client.get("/health/ready")).status_code == 200
        drop_database(pg_admin_url, dbname_of(shop_db.url))  # terminates the pool's connections
        ready = await api.client.get("/health/ready")
        assert ready.status_code == 503 and ready.json()["database"] == "unavailable"
        health = await api.client.get("/api/health")
        assert health.status_code == 503 and health.json()["status"] == "unhealthy"
        assert (await api.client.get("/health/live")).status_code == 200
        r = await api.client.get("/api/products?limit=5&q=not-cached")
        assert r.status_code == 503


async def test_a_rollback_makes_the_service_not_ready(shop_db: ShopDb, redis_url: str) -> None:
    """After `migrate rollback` the normalized tables are gone: the probe says so and catalog
    requests get 503, not 500 (was: ready 200 while every catalog request failed)."""
    async for api in start_api(make_config(shop_db.url, redis_url)):
        assert (await api.client.get("/health/ready")).status_code == 200
        res = run_cli("migrate", "rollback", "--yes", database_url=shop_db.url)
        assert res.returncode == 0, res.stderr
        ready = await api.client.get("/health/ready")
        assert ready.status_code == 503 and ready.json()["database"] == "not_migrated"
        health = await api.client.get("/api/health")
        assert health.status_code == 503 and "rolled back" in health.json()["error"]
        r = await api.client.get("/api/products?limit=5&q=not-cached-either")
        assert r.status_code == 503 and "rolled back" in r.text


async def test_connections_the_server_ended_are_replaced_not_served(shop_db: ShopDb, redis_url: str) -> None:
    """A restore swapping the database in (or a server restart) ends every pool connection: the
    next requests get fresh ones (was: 503 for each dead connection handed out)."""
    import asyncio

    from villager_shop.api.database import APP_NAME

    async for api in start_api(make_config(shop_db.url, redis_url, db_pool_min=4, db_pool_max=4)):
        for i in range(3):
            rs = await asyncio.gather(*[api.client.get(f"/api/products?limit=5&q=warm{i}{j}") for j in range(8)])
            assert all(r.status_code == 200 for r in rs)
        ended = shop_db.scalar("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                               " WHERE application_name = %s AND datname = current_database()", (APP_NAME,))
        assert ended >= 2
        await asyncio.sleep(0.2)
        rs = await asyncio.gather(*[api.client.get(f"/api/products?limit=5&q=after{j}") for j in range(8)])
        assert [r.status_code for r in rs] == [200] * 8, [r.text for r in rs if r.status_code != 200]
