"""Probes: /health/live (process), /health/ready (PostgreSQL required, Redis optional), and the
guide's /api/health summary."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from villager_shop.api.deps import Services

router = APIRouter(tags=["health"])


@router.get("/health/live")
async def live() -> dict[str, str]:
    """The process answers (nothing else is checked)."""
    return {"status": "alive"}


@router.get("/health/ready")
async def ready(svc: Services) -> JSONResponse:
    """200 when PostgreSQL answers (cache "degraded" when Redis does not); 503 otherwise.
    catalog_invalidation: "listening", "connecting", or "off: why" (changes by other programs then
    served stale up to the cache TTL). With DATABASE_REPLICA_URLS, replicas: each standby's url
    (masked), state (ok, lagging, down: then its problem), lag_ms and lag_bytes; a standby down
    leaves the service ready (the primary answers its reads)."""
    status, body = await svc.health.ready()
    return JSONResponse(body, status_code=status)


@router.get("/api/health")
async def health(svc: Services) -> JSONResponse:
    """status, timestamp, database, cache, metrics (db_performance_summary, cached ~5 s)."""
    status, body = await svc.health.summary()
    return JSONResponse(body, status_code=status)
