"""The app factory of the shop service.

`create_app(config)` builds a FastAPI app; its lifespan opens the PostgreSQL pool and the cache.
`villager-shop serve` runs `create_app` as a uvicorn factory in each worker (config from the
environment)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from psycopg_pool import PoolTimeout
from starlette.types import Receive, Scope, Send

from villager_shop.api.cache.store import Cache
from villager_shop.api.catalog_listener import ListenerState, listen_for_catalog_changes, tell_other_instances
from villager_shop.api.config import ServiceConfig
from villager_shop.api.database import find_connections, make_pool
from villager_shop.api.deps import AppServices
from villager_shop.api.errors import ApiError
from villager_shop.api.fast_listing import FastListing
from villager_shop.api.read_your_writes import ReadYourWrites
from villager_shop.api.replicas import Reads
from villager_shop.api.routes import auth, docs, health, monitoring, orders, products, shops
from villager_shop.api.services.accounts import ensure_service_schema
from villager_shop.api.services.catalog import Catalog
from villager_shop.api.services.health import NOT_MIGRATED, Health
from villager_shop.api.services.monitoring import Monitor, Sampler
from villager_shop.api.services.orders import Orders
from villager_shop.api.services.products import Products
from villager_shop.api.services.warm_up import warm_catalog
from villager_shop.core.db import connection
from villager_shop.monitoring import metrics
from villager_shop.monitoring.event_loop import watch_event_loop
from villager_shop.monitoring.middleware import MetricsMiddleware

log = logging.getLogger("villager_shop.api")


def prepare_database(url: str, connect_timeout_s: int = 3) -> None:
    """Fail fast (ServerUnavailable) when PostgreSQL is unreachable; create the service's tables."""
    with connection(url, autocommit=True, connect_timeout=connect_timeout_s) as conn:
        ensure_service_schema(conn)


async def _bounded(awaitable: Awaitable[Any], what: str, timeout_s: float = 5.0) -> None:
    try:
        await asyncio.wait_for(awaitable, timeout_s)
    except TimeoutError:
        logging.getLogger("villager_shop.api").warning("shutdown: %s did not stop within %.0f s", what, timeout_s)
    except Exception as exc:  # shutting down: report, go on closing the rest
        logging.getLogger("villager_shop.api").warning("shutdown: %s: %s", what, exc)


class ShopApp(FastAPI):
    """FastAPI, with two pure ASGI layers in front of its whole middleware stack: the metrics
    (outermost: every HTTP request, by route template) and the cached listings and product pages
    (api.fast_listing), which so skip FastAPI's own layers too; anything else goes on to FastAPI."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._front = MetricsMiddleware(ReadYourWrites(FastListing(super().__call__)))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope["app"] = self
            await self._front(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


def create_app(config: ServiceConfig | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        cfg = config if config is not None else await asyncio.to_thread(ServiceConfig.from_env)
        await asyncio.to_thread(prepare_database, cfg.database_url, cfg.db_connect_timeout_s)
        found = await asyncio.to_thread(find_connections, cfg)
        pool = make_pool(cfg, through_pooler=found.through_pooler)
        await pool.open(wait=True, timeout=cfg.db_connect_timeout_s + 2)
        cache = Cache(cfg.redis_url if cfg.cache_enabled else None, prefix=cfg.cache_prefix, ttl_s=cfg.cache_ttl_s,
                      timeout_ms=cfg.redis_timeout_ms, breaker_s=cfg.redis_breaker_s, lease_ms=cfg.cache_lease_ms)
        cache.on_missed = functools.partial(tell_other_instances, pool)
        await cache.start()
        sampler = Sampler(cfg.database_url, interval_s=cfg.monitoring_interval_s,
                          orders_ttl_s=cfg.monitoring_orders_ttl_s, connect_timeout_s=cfg.db_connect_timeout_s)
        monitor = Monitor(sampler, pool)
        listener = ListenerState(off=found.listener_off)
        reads = Reads(pool, cfg)
        app.state.services = AppServices(
            config=cfg, pool=pool, cache=cache, catalog=Catalog(reads, cache), products=Products(pool, cache),
            orders=Orders(pool, cache, cfg.delivery_fee),
            health=Health(pool, cache, cfg.health_metrics_ttl_s, listener, reads), monitor=monitor, reads=reads)
        sampling = asyncio.create_task(monitor.run(), name="monitoring sampler")
        background = [sampling]
        if reads.configured:
            await reads.check()  # standbys found recent enough are read from the first request on
            background.append(asyncio.create_task(reads.run(), name="replica check"))
        if found.listen_url is not None:
            background.append(asyncio.create_task(
                listen_for_catalog_changes(found.listen_url, cache, connect_timeout_s=cfg.db_connect_timeout_s,
                                           listening=listener.listening),
                name="catalog change listener"))
            # Serve once the listener hears changes and has dropped what a previous run cached (it may
            # have missed changes meanwhile); bounded, so an unreachable database does not block startup.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(listener.listening.wait(), cfg.db_connect_timeout_s)
        if cfg.cache_warm > 0:
            # After the listener's first connection, which drops what a previous run cached.
            warmed = await warm_catalog(app.state.services.catalog, pages=cfg.cache_warm, budget_s=cfg.cache_warm_s)
            app.state.services.health.warm_up = warmed
            log.info("cache warm-up: %s", warmed)
        background.append(asyncio.create_task(watch_event_loop(), name="event loop lag"))
        try:
            yield
        finally:
            # Every shutdown step is bounded: one stuck component must not keep the process alive.
            for task in background:
                task.cancel()
            await _bounded(asyncio.gather(*background, return_exceptions=True), "background tasks")
            await _bounded(sampler.close(), "monitoring sampler")
            await _bounded(cache.close(), "cache")
            await _bounded(reads.close(), "standby pools")
            await _bounded(pool.close(timeout=3), "database pool")
            metrics.mark_process_dead()

    app = ShopApp(title="Villager Shop", version="1.0", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="The marketplace API on the normalized schema (see README, 'Shop service').")
    for module in (products, shops, orders, auth, health, monitoring, docs):
        app.include_router(module.router)
    app.mount("/dashboard/static", monitoring.static_files(), name="dashboard-static")
    app.mount(docs.STATIC_PATH, docs.static_files(), name="docs-static")
    _install_error_handlers(app)
    return app


def _error(status: int, detail: object, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> Response:
        # The errors quote the input, and JSON admits a lone surrogate (`"\ud800"`) that UTF-8
        # cannot encode: FastAPI's own handler then fails with a 500. ASCII escapes encode anything.
        body = json.dumps({"detail": jsonable_encoder(exc.errors())}, ensure_ascii=True)
        return Response(body, status_code=422, media_type="application/json")

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.detail, exc.headers)

    @app.exception_handler(PoolTimeout)
    async def pool_timeout(_: Request, exc: PoolTimeout) -> JSONResponse:
        log.warning("no database connection available: %s", exc)
        return _error(503, "database busy or unavailable", {"Retry-After": "1"})

    @app.exception_handler(psycopg.Error)
    async def database_error(_: Request, exc: psycopg.Error) -> JSONResponse:
        if isinstance(exc, psycopg.errors.QueryCanceled | psycopg.errors.LockNotAvailable):
            return _error(503, "database timeout", {"Retry-After": "1"})
        if isinstance(exc, psycopg.OperationalError):
            log.warning("database unavailable: %s", exc)
            return _error(503, "database unavailable", {"Retry-After": "1"})
        if isinstance(exc, psycopg.errors.DeadlockDetected | psycopg.errors.SerializationFailure):
            return _error(503, "conflicting concurrent update; retry", {"Retry-After": "1"})
        if isinstance(exc, psycopg.errors.UndefinedTable | psycopg.errors.UndefinedColumn):
            # The schema changed under the service (a `migrate rollback`): /health/ready says so too.
            log.warning("database schema not as expected: %s", exc.diag.message_primary)
            return _error(503, NOT_MIGRATED, {"Retry-After": "30"})
        if isinstance(exc, psycopg.DataError):
            return _error(422, f"invalid value: {exc.diag.message_primary or type(exc).__name__}")
        if isinstance(exc, psycopg.IntegrityError):
            return _error(409, f"conflict: {exc.diag.message_primary or type(exc).__name__}")
        log.exception("database error")
        return _error(500, "internal error")
