"""Who sees /dashboard and /api/monitoring/*: an admin's token (header or the page's cookie) or a
loopback client that came through no proxy, by default; the other modes of VILLAGER_MONITORING_ACCESS."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest

from tests.api.conftest import BALA, GITA, PASSWORD, ShopDb, forget_keys, make_config
from villager_shop.api.config import ServiceConfig
from villager_shop.api.main import create_app

pytestmark = pytest.mark.anyio

PAGES = ("/dashboard", "/api/monitoring/summary", "/api/monitoring/history")
REMOTE = ("203.0.113.7", 40000)
LOCAL = ("127.0.0.1", 40000)


@asynccontextmanager
async def clients(config: ServiceConfig) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    """The same app seen from a remote address and from the loopback interface."""
    app = create_app(config)
    try:
        async with app.router.lifespan_context(app), \
                httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=REMOTE),
                                  base_url="http://shop.test") as remote, \
                httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=LOCAL),
                                  base_url="http://shop.test") as local:
            yield remote, local
    finally:
        forget_keys(config)


async def token(client: httpx.AsyncClient, login: str) -> dict[str, str]:
    r = await client.post("/api/auth/token", data={"username": login, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


async def test_default_admin_token_or_loopback(shop_db: ShopDb, redis_url: str) -> None:
    async with clients(make_config(shop_db.url, redis_url)) as (remote, local):
        admin, customer = await token(remote, GITA), await token(remote, BALA)
        for path in PAGES:
            assert (await remote.get(path)).status_code == 401, path
            assert (await remote.get(path, headers={"Authorization": "Bearer forged"})).status_code == 401
            assert (await remote.get(path, headers=customer)).status_code == 403, path
            assert (await remote.get(path, headers=admin)).status_code == 200, path
            assert (await local.get(path)).status_code == 200, path
            # a proxy on this host makes everyone look local: forwarded requests are not
            assert (await local.get(path, headers={"X-Forwarded-For": "198.51.100.1"})).status_code == 401
        page = await remote.get("/dashboard")
        assert "text/html" in page.headers["content-type"] and 'id="login"' in page.text
        assert 'data-testid="chart-connections"' in (await local.get("/dashboard")).text
        # the page's session: an admin's token becomes an HttpOnly cookie
        assert (await remote.post("/dashboard/session", headers=customer)).status_code == 403
        r = await remote.post("/dashboard/session", headers=admin)
        assert r.status_code == 204 and "httponly" in r.headers["set-cookie"].lower()
        assert "samesite=strict" in r.headers["set-cookie"].lower()
        assert (await remote.get("/api/monitoring/summary")).status_code == 200  # the cookie
        remote.cookies.clear()
        assert (await remote.get("/api/monitoring/summary")).status_code == 401
        # static assets and /metrics are open (no data of the shop's users)
        assert (await remote.get("/dashboard/static/uPlot.iife.min.js")).status_code == 200
        assert (await remote.get("/metrics")).status_code == 200


@pytest.mark.parametrize("mode", ["admin", "local", "public"])
async def test_access_modes(shop_db: ShopDb, redis_url: str, mode: str) -> None:
    async with clients(make_config(shop_db.url, redis_url, monitoring_access=mode)) as (remote, local):
        admin = await token(remote, GITA)
        got = ((await remote.get("/api/monitoring/summary")).status_code,
               (await remote.get("/api/monitoring/summary", headers=admin)).status_code,
               (await local.get("/api/monitoring/summary")).status_code)
        assert got == {"admin": (401, 200, 401), "local": (403, 403, 200), "public": (200, 200, 200)}[mode]
