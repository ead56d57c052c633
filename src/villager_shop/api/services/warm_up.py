"""The cache warm-up at a worker's start: the hot listing pages are put in the cache before the
worker serves (uvicorn accepts no request, not even /health/ready, until the app's startup is over).
Without it a start with an empty cache (a deploy, a flushed or restarted Redis) sends the first
listing of every shopper to PostgreSQL at once; at 500 000 products that queue is the slowest
second of the service's life."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from villager_shop.api.errors import ApiError
from villager_shop.api.services.catalog import Catalog

log = logging.getLogger("villager_shop.api.warm_up")


def next_cursor(body: bytes) -> str | None:
    cursor = json.loads(body).get("next_cursor")
    return str(cursor) if cursor else None


async def warm_catalog(catalog: Catalog, *, pages: int, budget_s: float, concurrency: int = 4) -> dict[str, Any]:
    """The categories, then the first `pages` pages (default page size) of the unfiltered listing and
    of each active category, `concurrency` reads at a time, through the cache's own path (a key
    another worker is rebuilding is waited for, not read twice). Stops after `budget_s`: a slow
    database delays the start by that much at most. Never fails the start: what it could not warm
    is read on demand as without it."""
    if pages <= 0 or not catalog.cache.available():
        return {"warmed": 0, "skipped": "off" if pages <= 0 else "cache unavailable"}
    started = time.monotonic()
    warmed = failed = 0
    gate = asyncio.Semaphore(concurrency)

    async def warm(category: str | None) -> None:
        nonlocal warmed, failed
        cursor: str | None = None
        for _ in range(pages):
            try:
                async with gate:
                    body = await catalog.list_products(category=category, cursor=cursor)
            except ApiError:  # a slug the listing refuses (control characters): nothing to warm
                failed += 1
                return
            warmed += 1
            cursor = next_cursor(body)
            if cursor is None:
                return

    outcome = "done"
    try:
        async with asyncio.timeout(budget_s):
            slugs = [str(c["slug"]) for c in json.loads(await catalog.categories())]
            await asyncio.gather(warm(None), *(warm(s) for s in slugs))
    except TimeoutError:
        outcome = "budget exhausted"
        log.warning("cache warm-up stopped after %.0f s (%d pages warmed)", budget_s, warmed)
    except Exception as exc:  # the database or Redis failing now: serve anyway, read on demand
        outcome = f"failed: {type(exc).__name__}"
        log.warning("cache warm-up failed after %d pages: %s", warmed, exc)
    return {"warmed": warmed, "refused": failed, "outcome": outcome,
            "seconds": round(time.monotonic() - started, 3)}
