"""Monitoring: `/metrics` (Prometheus text format, every worker summed), the dashboard page and its
JSON (`/api/monitoring/summary`, `/api/monitoring/history`).

Who sees the dashboard and its JSON is `VILLAGER_MONITORING_ACCESS`: `admin_or_local` (default: an
admin's bearer token or dashboard cookie, or a client on the loopback interface that came through no
proxy), `admin`, `local` or `public`. `/metrics` is open, like most exporters (it holds no query text
and no personal data): restrict it at the network level if needed."""

from __future__ import annotations

import asyncio
import ipaddress
from importlib import resources
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from villager_shop.api.deps import AppServices, Services, admin_of_token, bearer
from villager_shop.api.errors import ApiError, Forbidden
from villager_shop.api.services.monitoring import update_pool_gauges
from villager_shop.monitoring import metrics

router = APIRouter(tags=["monitoring"])

COOKIE = "villager_dashboard"
FORWARDED = ("x-forwarded-for", "forwarded", "x-real-ip")
DASHBOARD = resources.files("villager_shop.monitoring") / "dashboard"


def static_files() -> StaticFiles:
    return StaticFiles(directory=str(DASHBOARD / "static"))


def is_local(request: Request) -> bool:
    """A client on 127.0.0.1/::1 that did not come through a proxy (a proxy on this host would make
    every visitor look local)."""
    host = request.client.host if request.client else ""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback and not any(h in request.headers for h in FORWARDED)


async def _admin(svc: AppServices, token: str | None) -> None:
    await admin_of_token(svc, token, missing="the dashboard needs an admin's token (or a local client)",
                         denied="the dashboard is for admins")


async def monitoring_access(request: Request, svc: Services,
                            token: Annotated[str | None, Depends(bearer)]) -> None:
    mode = svc.config.monitoring_access
    if mode == "public" or (mode in ("admin_or_local", "local") and is_local(request)):
        return
    if mode == "local":
        raise Forbidden("the dashboard is served to local clients only (VILLAGER_MONITORING_ACCESS=local)")
    await _admin(svc, token or request.cookies.get(COOKIE))


Allowed = Depends(monitoring_access)


@router.get("/metrics", include_in_schema=False)
async def prometheus_metrics(svc: Services) -> Response:
    await svc.monitor.sampler.snapshot()  # cached: at most one sample per interval
    update_pool_gauges(svc.pool)
    body, content_type = await asyncio.to_thread(metrics.render)
    return Response(body, media_type=content_type)


@router.get("/dashboard", include_in_schema=False, response_model=None)
async def dashboard(request: Request, svc: Services,
                    token: Annotated[str | None, Depends(bearer)]) -> HTMLResponse:
    """The live dashboard; without access, a login form (401/403)."""
    try:
        await monitoring_access(request, svc, token)
    except ApiError as exc:
        page = (DASHBOARD / "login.html").read_text(encoding="utf-8").replace("{{reason}}", str(exc.detail))
        return HTMLResponse(page, status_code=exc.status, headers=exc.headers)
    return HTMLResponse((DASHBOARD / "index.html").read_text(encoding="utf-8"),
                        headers={"Cache-Control": "no-store"})


@router.post("/dashboard/session", include_in_schema=False)
async def dashboard_session(request: Request, svc: Services,
                            token: Annotated[str | None, Depends(bearer)]) -> Response:
    """Turn an admin's bearer token into an HttpOnly, SameSite=Strict cookie for the page."""
    await _admin(svc, token)
    response = Response(status_code=204)
    response.set_cookie(COOKIE, token or "", max_age=svc.config.jwt_ttl_s, httponly=True, samesite="strict",
                        secure=request.url.scheme == "https", path="/")
    return response


@router.get("/api/monitoring/summary", dependencies=[Allowed])
async def summary(svc: Services) -> JSONResponse:
    """The latest figures: badges (guide thresholds), latency, errors, caches, pool, orders,
    slow statements, migration progress."""
    return JSONResponse(await svc.monitor.summary(), headers={"Cache-Control": "no-store"})


@router.get("/api/monitoring/history", dependencies=[Allowed])
async def history(svc: Services,
                  since: Annotated[float | None, Query(description="unix time; points after it")] = None
                  ) -> JSONResponse:
    """This worker's points of the last hour (one per sampling interval)."""
    return JSONResponse({"interval_s": svc.monitor.sampler.interval_s, "points": svc.monitor.history.since(since)},
                        headers={"Cache-Control": "no-store"})
