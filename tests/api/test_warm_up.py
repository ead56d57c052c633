"""The cache warm-up at start (VILLAGER_CACHE_WARM): the hot listing pages are in the cache before
the first request, so the shoppers' first listings after a start with an empty cache are hits."""

from __future__ import annotations

import urllib.parse

import pytest

from tests.api.conftest import ShopDb, make_config, start_api
from villager_shop.monitoring import metrics

pytestmark = pytest.mark.anyio


def _listing_reads() -> float:
    return metrics.sample("villager_db_queries_total", {"query": "list_products"})


async def test_the_first_pages_of_every_listing_are_cached_before_the_first_request(shop_db: ShopDb,
                                                                                   redis_url: str) -> None:
    slugs = [r[0] for r in shop_db.rows("SELECT slug FROM public.product_categories WHERE is_active ORDER BY slug")]
    assert len(slugs) >= 2
    async for api in start_api(make_config(shop_db.url, redis_url, cache_warm=2)):
        ready = (await api.client.get("/health/ready")).json()
        warm = ready["cache_warm_up"]
        assert warm["outcome"] == "done" and warm["warmed"] >= 1 + len(slugs), warm
        before = _listing_reads()
        cursors = 0
        for path in ["/api/products", *(f"/api/products?category={urllib.parse.quote(s)}" for s in slugs)]:
            first = await api.client.get(path)
            assert first.status_code == 200
            cursor = first.json()["next_cursor"]
            if cursor:  # the second page is warm too
                cursors += 1
                sep = "&" if "?" in path else "?"
                assert (await api.client.get(f"{path}{sep}cursor={cursor}")).status_code == 200
        assert cursors >= 1  # the shop has a listing of more than one page
        assert _listing_reads() == before  # every one of them a hit: none read PostgreSQL
        third = await api.client.get("/api/products", params={"cursor": (await api.client.get(
            "/api/products", params={"cursor": (await api.client.get("/api/products")).json()["next_cursor"]},
        )).json()["next_cursor"]})
        assert third.status_code == 200
        assert _listing_reads() == before + 1  # the third page was not warmed: read on demand


async def test_without_warm_up_the_first_listing_reads_postgresql(shop_db: ShopDb, redis_url: str) -> None:
    async for api in start_api(make_config(shop_db.url, redis_url, cache_warm=0)):
        assert "cache_warm_up" not in (await api.client.get("/health/ready")).json()
        before = _listing_reads()
        assert (await api.client.get("/api/products")).status_code == 200
        assert _listing_reads() == before + 1


async def test_no_warm_up_without_a_cache(shop_db: ShopDb) -> None:
    async for api in start_api(make_config(shop_db.url, None, cache_warm=2)):
        ready = await api.client.get("/health/ready")
        assert ready.status_code == 200
        assert ready.json()["cache_warm_up"] == {"warmed": 0, "skipped": "cache unavailable"}
