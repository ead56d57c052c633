"""Fixtures of the service tests: a migrated database per test (copied from a session template,
mid-migration or after a simulated `migrate complete`), a real Redis with a key prefix of its own,
and the app in-process (lifespan running) behind an httpx client."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import redis
from fastapi import FastAPI

from tests.api.dbs import build_migrated, complete_for_real, simulate_complete
from tests.plans import quarantined
from villager_shop.api.config import ServiceConfig
from villager_shop.api.main import create_app
from villager_shop.api.services.accounts import set_password
from villager_shop.core.db import create_database, drop_database

VILLAGER_PLAN = Path(__file__).resolve().parents[2] / "plans" / "villager.toml"
PASSWORD = "village-pass-1"
ASHA = "asha@v.in"      # shopkeeper of shop 1 (Asha Kirana)
FARID = "farid@v.in"    # shopkeeper of shops 2 and 3
BALA = "bala@v.in"      # customer
CHITRA = "chitra@v.in"  # customer
GITA = "gita@v.in"      # admin
SHOP_ASHA = uuid.UUID("10000000-0000-0000-0000-000000000001")
SHOP_FARID_SWEETS = uuid.UUID("10000000-0000-0000-0000-000000000002")
SHOP_FARID_VEG = uuid.UUID("10000000-0000-0000-0000-000000000003")
RADIO = uuid.UUID("20000000-0000-0000-0000-000000000001")      # Asha, Electronics, 499.00, stock 5
MANGO = uuid.UUID("20000000-0000-0000-0000-000000000005")      # Farid Veg
LADDU = uuid.UUID("20000000-0000-0000-0000-000000000007")      # Farid Sweets
VASE = uuid.UUID("20000000-0000-0000-0000-000000000004")       # not available
FREE_SAMPLE = uuid.UUID("20000000-0000-0000-0000-000000000008")  # price 0: quarantined
REFUND = uuid.UUID("20000000-0000-0000-0000-000000000009")      # price -5: quarantined

# Ratings and order counts with many ties, so the keyset pagination is really exercised.
SPREAD = """
UPDATE products SET rating = ((abs(hashtext(id::text)) % 11) / 2.0)::numeric(2, 1),
                    order_count = abs(hashtext(name)) % 5
 WHERE id::text NOT LIKE '20000000-%';
ANALYZE;
"""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _new_name() -> str:
    return f"vt_{uuid.uuid4().hex[:12]}"


def _template(pg_admin_url: str, prefix: str, build: Callable[[str], None], template: str | None = None) -> Iterator[str]:
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    url = create_database(pg_admin_url, name, template=template)
    try:
        build(url)
        yield name
    finally:
        drop_database(pg_admin_url, name)


@pytest.fixture(scope="session")
def migrating_template(pg_admin_url: str) -> Iterator[str]:
    """Template: messy + bulk legacy data after `migrate run`, passwords set for five users."""
    yield from _template(pg_admin_url, "vt_tpl", build_shop)


def build_shop(url: str, plan_file: Path | None = None) -> None:
    """Into an empty database: messy + bulk legacy data after `migrate run` (of the built-in plan
    or of `plan_file`), ratings spread, passwords set for five users."""
    build_migrated(url, plan_file)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(SPREAD)
        for login, role in ((ASHA, "shopkeeper"), (FARID, "shopkeeper"), (BALA, "customer"),
                            (CHITRA, "customer"), (GITA, "admin")):
            set_password(conn, login, PASSWORD, role)


@pytest.fixture(scope="session")
def completed_template(pg_admin_url: str, migrating_template: str) -> Iterator[str]:
    """The same after a simulated `migrate complete` (legacy columns and sync triggers gone)."""
    yield from _template(pg_admin_url, "vt_tplc", simulate_complete, migrating_template)


@pytest.fixture(scope="session")
def file_migrating_template(pg_admin_url: str) -> Iterator[str]:
    """The same data after `migrate run --plan plans/villager.toml`."""
    yield from _template(pg_admin_url, "vt_tplf", lambda url: build_shop(url, VILLAGER_PLAN))


@pytest.fixture(scope="session")
def file_completed_template(pg_admin_url: str, file_migrating_template: str) -> Iterator[str]:
    """The same after `migrate complete`."""
    yield from _template(pg_admin_url, "vt_tplfc", complete_for_real, file_migrating_template)


@dataclass
class ShopDb:
    url: str
    state: str  # "migrating" | "completed", "file_" before it when migrated by plans/villager.toml

    def scalar(self, query: str, params: Any = None) -> Any:
        with psycopg.connect(self.url, autocommit=True) as conn:
            row = conn.execute(query.encode(), params).fetchone()
            return row[0] if row else None

    def rows(self, query: str, params: Any = None) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.url, autocommit=True) as conn:
            return conn.execute(query.encode(), params).fetchall()

    def execute(self, query: str, params: Any = None) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(query.encode(), params)

    def has_legacy_columns(self) -> bool:
        return self.state.endswith("migrating")

    def quarantined(self, table: str, row_id: uuid.UUID) -> set[str]:
        """The reasons the row is quarantined for, in the quarantine table of the plan that migrated it."""
        with psycopg.connect(self.url, autocommit=True) as conn:
            return quarantined(conn, table, row_id)


def _copy(pg_admin_url: str, template: str, state: str) -> Iterator[ShopDb]:
    name = _new_name()
    url = create_database(pg_admin_url, name, template=template)
    try:
        yield ShopDb(url, state)
    finally:
        drop_database(pg_admin_url, name)


@pytest.fixture
def shop_db(pg_admin_url: str, file_migrating_template: str) -> Iterator[ShopDb]:
    """A database of this test's own, mid-migration by the default plan (plans/villager.toml)."""
    yield from _copy(pg_admin_url, file_migrating_template, "file_migrating")


@pytest.fixture(params=["migrating", "completed", "file_migrating", "file_completed"])
def any_shop_db(request: pytest.FixtureRequest, pg_admin_url: str) -> Iterator[ShopDb]:
    """The test runs four times: mid-migration and after `migrate complete`, of the built-in plan and
    of plans/villager.toml."""
    template = request.getfixturevalue(f"{request.param}_template")
    yield from _copy(pg_admin_url, template, request.param)


def make_config(db_url: str, redis: str | None, **overrides: Any) -> ServiceConfig:
    config = ServiceConfig(database_url=db_url, redis_url=redis, jwt_secret="t" * 48,
                           cache_prefix=f"vtest:{uuid.uuid4().hex[:10]}", db_pool_min=1, db_pool_max=8,
                           redis_timeout_ms=100, redis_breaker_s=2.0, cache_warm=0)
    return config.model_copy(update=overrides)


@dataclass
class Api:
    app: FastAPI
    client: httpx.AsyncClient
    config: ServiceConfig

    async def token(self, login: str, password: str = PASSWORD) -> str:
        r = await self.client.post("/api/auth/token", data={"username": login, "password": password})
        assert r.status_code == 200, r.text
        return str(r.json()["access_token"])

    async def auth(self, login: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {await self.token(login)}"}


async def start_api(config: ServiceConfig) -> AsyncIterator[Api]:
    app = create_app(config)
    try:
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://shop.test", timeout=30) as client:
            yield Api(app, client, config)
    finally:
        forget_keys(config)


def forget_keys(config: ServiceConfig) -> None:
    """Leave nothing of this test in a shared Redis (generation keys have no TTL)."""
    if not config.redis_url:
        return
    try:
        with redis.Redis.from_url(config.redis_url, socket_timeout=2) as r:
            for key in r.scan_iter(match=f"{config.cache_prefix}:*", count=500):
                r.delete(key)
    except redis.RedisError:
        pass  # a test that stopped its own Redis


@pytest.fixture
async def api(any_shop_db: ShopDb, redis_url: str) -> AsyncIterator[Api]:
    """The app on a database in either state, cache on."""
    async for a in start_api(make_config(any_shop_db.url, redis_url)):
        yield a


@pytest.fixture
async def api_migrating(shop_db: ShopDb, redis_url: str) -> AsyncIterator[Api]:
    async for a in start_api(make_config(shop_db.url, redis_url)):
        yield a


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Give each operation schemathesis fuzzes an id of its own. Its items are named
    `test[GET /api/products]`, but under pytest 9.2 their id is built from the bare test name, so every
    operation shares one id: pytest's progress counts them as a single test (a whole run ended at
    93 %), and --durations, -rA or a failure could not tell one operation from another."""
    for item in items:
        label = getattr(item, "operation_label", None)
        node_id = getattr(item, "_id", None)
        if label and node_id is not None and getattr(node_id, "params", "") is None:
            item._id = node_id.with_params(label)
