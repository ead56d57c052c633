"""/metrics of the app in-process (real PostgreSQL and Redis): every series is exposed, values move
with traffic and orders, routes are templates, and the database sampler is cached."""

from __future__ import annotations

import uuid

import pytest

from tests.api.conftest import ASHA, BALA, RADIO, Api, ShopDb, make_config, start_api
from villager_shop.api.services.monitoring import quantile
from villager_shop.monitoring.metrics import sample

pytestmark = pytest.mark.anyio

SERIES = [
    "villager_http_requests_total", "villager_http_request_duration_seconds_bucket",
    "villager_http_request_duration_seconds_count", "villager_cache_hits_total", "villager_cache_misses_total",
    "villager_db_pool_size", "villager_db_pool_available", "villager_db_pool_waiting", "villager_db_pool_max",
    "villager_orders_total", "villager_order_revenue_total",
    "villager_db_connections", "villager_db_connections_threshold", "villager_db_cache_hit_ratio",
    "villager_db_metric_critical", "villager_db_slow_statements", "villager_db_slow_statements_available",
    "villager_db_slow_statement_max_mean_seconds",
    "villager_migration_phase", "villager_migration_steps_done", "villager_migration_steps_total",
    "villager_migration_backfill_rows_done", "villager_migration_backfill_rows_total",
    "villager_migration_backfill_rows_per_second", "villager_monitoring_samples_total",
    "villager_monitoring_last_sample_timestamp_seconds",
]


def parse(text: str) -> dict[str, float]:
    """`name{labels}` -> value, for the villager_* samples of an exposition."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("villager_"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


def value(samples: dict[str, float], name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for key, v in samples.items():
        n, _, rest = key.partition("{")
        got = ",".join(sorted(p for p in rest.rstrip("}").split(",") if p)) if rest else ""
        if n == name and got == want:
            return v
    return 0.0


async def scrape(api: Api) -> dict[str, float]:
    r = await api.client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return parse(r.text)


async def default_variant(api: Api, product: uuid.UUID) -> str:
    page = (await api.client.get(f"/api/products/{product}")).json()
    return str(next(v for v in page["variants"] if v["is_default"])["id"])


async def test_metrics_expose_every_series_and_move_with_traffic(shop_db: ShopDb, redis_url: str) -> None:
    async for api in start_api(make_config(shop_db.url, redis_url, monitoring_interval_s=60)):
        before = await scrape(api)
        variant = await default_variant(api, RADIO)
        for _ in range(5):
            assert (await api.client.get("/api/products?limit=3")).status_code == 200
        missing = uuid.uuid4()
        assert (await api.client.get(f"/api/orders/{missing}")).status_code == 401
        assert (await api.client.get("/no/such/page")).status_code == 404
        r = await api.client.post("/api/orders", headers=await api.auth(BALA),
                                  json={"items": [{"variant_id": variant, "quantity": 2}]})
        assert r.status_code == 201, r.text
        order = r.json()
        r = await api.client.patch(f"/api/orders/{order['id']}", headers=await api.auth(ASHA),
                                   json={"status": "cancelled"})
        assert r.status_code == 200, r.text

        after = await scrape(api)
        for name in SERIES:
            assert any(k.split("{")[0] == name for k in after), f"{name} missing from /metrics"
        listing = {"method": "GET", "route": "/api/products"}
        assert value(after, "villager_http_requests_total", **listing, status="200") - \
            value(before, "villager_http_requests_total", **listing, status="200") == 5
        assert value(after, "villager_http_request_duration_seconds_count", **listing) - \
            value(before, "villager_http_request_duration_seconds_count", **listing) == 5
        assert value(after, "villager_http_request_duration_seconds_bucket", **listing, le="+Inf") - \
            value(before, "villager_http_request_duration_seconds_bucket", **listing, le="+Inf") == 5
        # templates, never raw paths; unknown paths share one series
        assert value(after, "villager_http_requests_total", method="GET", route="/api/orders/{order_id}",
                     status="401") >= 1
        assert value(after, "villager_http_requests_total", method="GET", route="<unmatched>", status="404") >= 1
        text = (await api.client.get("/metrics")).text
        assert str(missing) not in text and "/no/such/page" not in text
        # orders and revenue, counted after the commit
        assert value(after, "villager_orders_total", event="created") - \
            value(before, "villager_orders_total", event="created") == 1
        assert value(after, "villager_orders_total", event="cancelled") - \
            value(before, "villager_orders_total", event="cancelled") == 1
        placed = value(after, "villager_order_revenue_total", event="created") - \
            value(before, "villager_order_revenue_total", event="created")
        assert placed == pytest.approx(order["total"])
        assert value(after, "villager_order_revenue_total", event="cancelled") - \
            value(before, "villager_order_revenue_total", event="cancelled") == pytest.approx(order["total"])
        # cache and pool
        assert value(after, "villager_cache_hits_total", scope="catalog") > value(
            before, "villager_cache_hits_total", scope="catalog")
        assert value(after, "villager_db_pool_max") == 8 and value(after, "villager_db_pool_size") >= 1
        # database side and migration, from the views and villager_migration
        assert value(after, "villager_db_connections") >= 2
        assert value(after, "villager_db_connections_threshold") > 0
        assert 0 < value(after, "villager_db_cache_hit_ratio") <= 1
        assert value(after, "villager_migration_phase", phase="migrated") == 1
        assert value(after, "villager_migration_phase", phase="backfilling") == 0
        done = value(after, "villager_migration_backfill_rows_done", step="backfill_products", table="products")
        assert done > 1000
        assert done == value(after, "villager_migration_backfill_rows_total", step="backfill_products",
                             table="products")
        assert value(after, "villager_migration_steps_done") == value(after, "villager_migration_steps_total")
        assert shop_db.scalar("SELECT count(*) FROM villager_migration.backfill WHERE step LIKE 'backfill_products%'")


async def test_sampler_runs_the_views_once_per_window(shop_db: ShopDb, redis_url: str) -> None:
    async for api in start_api(make_config(shop_db.url, redis_url, monitoring_interval_s=60)):
        await api.client.get("/metrics")  # the lifespan's first sample is done
        views = sample("villager_db_queries_total", {"query": "monitoring_views"})
        samples = sample("villager_monitoring_samples_total")
        for _ in range(3):
            assert (await api.client.get("/metrics")).status_code == 200
            assert (await api.client.get("/api/monitoring/summary")).status_code == 200  # httpx ASGI client = 127.0.0.1
        assert sample("villager_db_queries_total", {"query": "monitoring_views"}) == views
        assert sample("villager_monitoring_samples_total") == samples
        # once the window is over, the next reader refreshes it (exactly once)
        api.app.state.services.monitor.sampler._taken -= 61
        await api.client.get("/metrics")
        await api.client.get("/metrics")
        assert sample("villager_db_queries_total", {"query": "monitoring_views"}) == views + 1


def test_quantile_matches_prometheus_histogram_quantile() -> None:
    # 100 requests: 90 under 10 ms, 10 between 10 and 20 ms -> p95 halfway into the (10, 20] bucket
    buckets = {0.005: 50.0, 0.01: 90.0, 0.02: 100.0, float("inf"): 100.0}
    assert quantile(0.95, buckets) == pytest.approx(0.015)
    assert quantile(0.5, buckets) == pytest.approx(0.005)
    assert quantile(0.95, {0.01: 0.0, float("inf"): 0.0}) is None
