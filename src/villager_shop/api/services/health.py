"""Liveness, readiness and the guide's /api/health (SPEC defect 10): PostgreSQL down = not ready;
Redis down = ready with "cache": "degraded" (a cache outage must not pull every instance out of the
load balancer); the metrics of `db_performance_summary` are cached in-process for a few seconds so
probes stay cheap."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from decimal import Decimal
from typing import Any

from psycopg.rows import dict_row

from villager_shop.api.cache.store import Cache
from villager_shop.api.catalog_listener import ListenerState
from villager_shop.api.database import ShopPool
from villager_shop.api.replicas import Reads
from villager_shop.monitoring.metrics import DB_QUERIES

PROBE_TIMEOUT_S = 1.0
NOT_MIGRATED = "the database has no normalized schema (not migrated, or rolled back)"
SCHEMA_PRESENT = ("SELECT to_regclass('public.product_variants') IS NOT NULL"
                  " AND to_regclass('public.product_categories') IS NOT NULL"
                  " AND to_regclass('public.addresses') IS NOT NULL")


class Health:
    def __init__(self, pool: ShopPool, cache: Cache, metrics_ttl_s: float = 5.0,
                 listener: ListenerState | None = None, reads: Reads | None = None) -> None:
        self.pool = pool
        self.reads = reads
        self.cache = cache
        self.listener = listener or ListenerState()
        self.metrics_ttl_s = metrics_ttl_s
        self._metrics: list[dict[str, Any]] | None = None
        self._metrics_at = 0.0
        self._lock = asyncio.Lock()
        self.warm_up: dict[str, Any] | None = None  # this worker's cache warm-up at its start, if any

    async def database(self) -> str:
        """"ok", "unavailable", or "not_migrated": reachable, but without the normalized tables
        the service reads (a rollback removed them), so every catalog request would fail."""
        try:
            async with asyncio.timeout(PROBE_TIMEOUT_S), self.pool.connection(timeout=PROBE_TIMEOUT_S) as conn:
                cur = await conn.execute(SCHEMA_PRESENT)
                row = await cur.fetchone()
            return "ok" if row and row[0] else "not_migrated"
        except Exception:
            return "unavailable"

    async def ready(self) -> tuple[int, dict[str, Any]]:
        db_state, cache_state = await asyncio.gather(self.database(), self.cache.ping())
        db_ok = db_state == "ok"
        # The invalidation of other programs' writes does not decide readiness: without it the
        # service answers correctly, only up to the cache TTL late for those writes.
        body: dict[str, Any] = {"status": "ready" if db_ok else "not_ready", "database": db_state,
                                "cache": "ok" if cache_state == "connected" else cache_state,
                                "catalog_invalidation": self.listener.describe()}
        if self.reads is not None and self.reads.configured:
            # Standbys do not decide readiness either: without them the primary answers every read.
            body["replicas"] = self.reads.describe()
        if self.warm_up is not None:
            body["cache_warm_up"] = self.warm_up
        return (200 if db_ok else 503), body

    async def metrics(self) -> list[dict[str, Any]]:
        """Rows of db_performance_summary, refreshed at most every metrics_ttl_s."""
        if self._metrics is not None and time.monotonic() - self._metrics_at < self.metrics_ttl_s:
            return self._metrics
        async with self._lock:
            if self._metrics is not None and time.monotonic() - self._metrics_at < self.metrics_ttl_s:
                return self._metrics
            async with asyncio.timeout(PROBE_TIMEOUT_S), self.pool.connection(timeout=PROBE_TIMEOUT_S) as conn:
                cur = conn.cursor(row_factory=dict_row)
                await cur.execute("SELECT to_regclass('public.db_performance_summary') IS NOT NULL AS present")
                present = await cur.fetchone()
                rows: list[dict[str, Any]] = []
                if present and present["present"]:
                    DB_QUERIES.labels("db_performance_summary").inc()
                    await cur.execute("SELECT metric, value, threshold, status FROM public.db_performance_summary")
                    rows = [{k: (float(v) if isinstance(v, Decimal) else v) for k, v in r.items()}
                            for r in await cur.fetchall()]
            self._metrics, self._metrics_at = rows, time.monotonic()
            return rows

    async def summary(self) -> tuple[int, dict[str, Any]]:
        """The guide's shape: status, timestamp, database, cache, metrics. The database check is a
        `SELECT 1`; the heavier metrics come from the in-process copy."""
        db_state, cache_state = await asyncio.gather(self.database(), self.cache.ping())
        cache = {"connected": "connected", "disabled": "disabled"}.get(cache_state, "degraded")
        now = dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")
        if db_state == "unavailable":
            return 503, {"status": "unhealthy", "timestamp": now, "database": "disconnected", "cache": cache,
                         "metrics": [], "error": "database unavailable"}
        if db_state == "not_migrated":
            return 503, {"status": "unhealthy", "timestamp": now, "database": "connected", "cache": cache,
                         "metrics": [], "error": NOT_MIGRATED}
        body: dict[str, Any] = {"status": "healthy", "timestamp": now, "database": "connected", "cache": cache}
        try:
            body["metrics"] = await self.metrics()
        except Exception as exc:
            body["metrics"] = []
            body["error"] = f"metrics unavailable: {type(exc).__name__}"
        if cache == "degraded" or "error" in body or any(m.get("status") == "CRITICAL" for m in body["metrics"]):
            body["status"] = "degraded"
        return 200, body
