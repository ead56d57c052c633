"""The service through a real PgBouncer in transaction mode (tests/pgbouncer.py, 4 server
connections per database): every request works, the statement and lock timeouts hold in every
transaction and are never left on a server connection the next client gets, and the catalog
listener LISTENs on the server itself (DATABASE_DIRECT_URL), or is off, and says so, when only the
pooler is given."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.api.conftest import (
    ASHA,
    BALA,
    MANGO,
    PASSWORD,
    RADIO,
    SHOP_ASHA,
    ShopDb,
    forget_keys,
    make_config,
    start_api,
)
from tests.helpers import ROOT, cli_env, run_cli, stop_process, wait_ready
from tests.pgbouncer import PgBouncer

SETTINGS = ("statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout", "TimeZone")
SESSION_STATE = f"""
SELECT pg_backend_pid(), {", ".join(f"current_setting('{s}')" for s in SETTINGS)},
       coalesce(current_setting('villager.invalidates_cache', true), ''),
       (SELECT count(*) FROM pg_prepared_statements)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve(db_url: str, redis_url: str, tmp_path: Path, **env: str) -> Iterator[tuple[str, Path]]:
    """`villager-shop serve` (1 worker, 8 pool connections: twice the pooler's server connections)."""
    port = _free_port()
    prefix = f"vtest:{port}"
    environment = cli_env(db_url, redis_url, VILLAGER_DATA_DIR=str(tmp_path), VILLAGER_CACHE_PREFIX=prefix, **env)
    if "DATABASE_DIRECT_URL" not in env:
        environment.pop("DATABASE_DIRECT_URL", None)
    log = tmp_path / "serve.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "villager_shop", "serve", "--port", str(port),
                                 "--db-connections", "8"], env=environment, cwd=ROOT, stdout=out, stderr=out)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, proc)
        yield base, log
    finally:
        stop_process(proc)
        forget_keys(make_config(db_url, redis_url, cache_prefix=prefix))


def server_sessions(pooled_url: str, clients: int) -> list[tuple[Any, ...]]:
    """SESSION_STATE of `clients` server connections behind the pooler: each client holds its
    transaction open, so each is given a server connection of its own."""
    conns = [psycopg.connect(pooled_url, prepare_threshold=None, connect_timeout=5) for _ in range(clients)]
    try:
        return [conn.execute(SESSION_STATE.encode()).fetchone() or () for conn in conns]
    finally:
        for conn in conns:
            conn.close()


def price(base: str, product: uuid.UUID) -> Any:
    return httpx.get(f"{base}/api/products/{product}", timeout=5).json()["variants"][0]["price"]


def test_serve_through_a_transaction_pooler_answers_every_request_and_leaves_no_session_behind(
        shop_db: ShopDb, redis_url: str, pgbouncer: PgBouncer, tmp_path: Path) -> None:
    """200 requests from 16 threads (listings, product pages, categories, a shop, orders by a
    logged-in customer) through 8 client connections sharing 4 server connections: none fails
    (named prepared statements or lost settings would). A price changed by SQL is served fresh
    at once (the listener LISTENs on DATABASE_DIRECT_URL). Afterwards every server connection
    of the pooler shows the server's defaults and no prepared statement."""
    pooled = pgbouncer.pooled(shop_db.url)
    defaults = server_sessions(shop_db.url, 1)[0][1:]
    variant = shop_db.scalar("SELECT id FROM product_variants WHERE product_id = %s AND is_default", (MANGO,))
    shop_db.execute("UPDATE product_variants SET stock = 10000 WHERE id = %s", (variant,))
    products = [r[0] for r in shop_db.rows(
        "SELECT p.id FROM products p WHERE p.is_available AND EXISTS (SELECT 1 FROM product_variants v"
        " WHERE v.product_id = p.id AND v.is_active) ORDER BY p.id LIMIT 60")]
    with serve(pooled, redis_url, tmp_path, DATABASE_DIRECT_URL=shop_db.url) as (base, log):
        token = httpx.post(f"{base}/api/auth/token", data={"username": BALA, "password": PASSWORD},
                           timeout=10).json()["access_token"]
        auth = {"Authorization": f"Bearer {token}"}
        local = threading.local()
        clients: list[httpx.Client] = []

        def call(i: int) -> tuple[str, int, str]:
            client: httpx.Client | None = getattr(local, "client", None)
            if client is None:
                client = local.client = httpx.Client(base_url=base, timeout=15)
                clients.append(client)
            kind = i % 6
            if kind == 0:
                r = client.get("/api/products", params={"limit": 1 + i % 40})
            elif kind == 1:
                r = client.get(f"/api/products/{products[i % len(products)]}")
            elif kind == 2:
                r = client.get("/api/categories")
            elif kind == 3:
                r = client.get(f"/api/shops/{SHOP_ASHA}")
            elif kind == 4:
                r = client.post("/api/orders", headers=auth,
                                json={"items": [{"variant_id": str(variant), "quantity": 1}]})
            else:
                r = client.get("/api/orders", headers=auth, params={"limit": 5})
            return f"{r.request.method} {r.request.url.path}", r.status_code, r.text[:200]

        try:
            with ThreadPoolExecutor(16) as pool:
                answers = list(pool.map(call, range(200)))
        finally:
            for client in clients:
                client.close()
        failed = [a for a in answers if a[1] not in (200, 201)]
        assert not failed, failed
        assert sum(a[1] == 201 for a in answers) == 33  # every order placed

        ready = httpx.get(f"{base}/health/ready", timeout=5).json()
        assert ready["catalog_invalidation"] == "listening", ready
        old = price(base, RADIO)
        assert price(base, RADIO) == old  # cached
        with psycopg.connect(shop_db.url, autocommit=True) as conn:
            conn.execute("UPDATE products SET price = %s WHERE id = %s", (old + 7, RADIO))
        changed = time.monotonic()
        while price(base, RADIO) != old + 7:
            assert time.monotonic() - changed < 1.0, "a price changed by SQL was still served stale after 1 s"
            time.sleep(0.02)
    assert "Traceback" not in log.read_text()

    sessions = server_sessions(pooled, pgbouncer.pool_size)
    assert len({s[0] for s in sessions}) == pgbouncer.pool_size  # every server connection of the pool
    for session in sessions:
        assert session[1:] == (*defaults[:len(SETTINGS)], "", 0), session


@pytest.mark.anyio
async def test_the_timeouts_hold_in_every_transaction_through_a_transaction_pooler(
        shop_db: ShopDb, redis_url: str, pgbouncer: PgBouncer) -> None:
    """Through the pooler the connections carry no settings: each transaction sets its own. A
    statement longer than the statement timeout is cancelled (in a read and in a write
    transaction), a request waiting for a lock another program holds gets 503 after the lock
    timeout, and the service's writes are marked as invalidating the cache themselves."""
    config = make_config(pgbouncer.pooled(shop_db.url), redis_url, database_direct_url=shop_db.url,
                         statement_timeout_ms=300)
    async for api in start_api(config):
        pool = api.app.state.services.pool
        for block in (pool.connection, pool.transaction):
            started = time.monotonic()
            with pytest.raises(psycopg.errors.QueryCanceled):
                async with block() as conn:
                    await conn.execute("SELECT pg_sleep(3)")
            assert time.monotonic() - started < 2.0
            async with block() as conn:
                cur = await conn.execute("SELECT current_setting('lock_timeout'),"
                                         " current_setting('villager.invalidates_cache', true)")
                assert await cur.fetchone() == ("300ms", "on")

        headers = await api.auth(ASHA)
        variant = shop_db.scalar("SELECT id FROM product_variants WHERE product_id = %s AND is_default", (RADIO,))
        with psycopg.connect(shop_db.url) as other:  # another program holds the product's row
            other.execute("SELECT 1 FROM products WHERE id = %s FOR UPDATE", (RADIO,))
            started = time.monotonic()
            r = await api.client.patch(f"/api/variants/{variant}", headers=headers, json={"stock": 7})
            assert r.status_code == 503 and r.json()["detail"] == "database timeout", r.text
            assert time.monotonic() - started < 2.0
        r = await api.client.patch(f"/api/variants/{variant}", headers=headers, json={"stock": 7})
        assert r.status_code == 200, r.text


def test_serve_with_only_a_transaction_pooler_works_without_the_listener_and_says_so(
        shop_db: ShopDb, redis_url: str, pgbouncer: PgBouncer, tmp_path: Path) -> None:
    """DATABASE_URL a pooler, DATABASE_DIRECT_URL unset: it serves (ready, requests answered), says
    at start and on /health/ready that other programs' changes are not invalidated, and opens no
    LISTEN session (through the pooler it would be deaf, or steal other clients' notifications)."""
    with serve(pgbouncer.pooled(shop_db.url), redis_url, tmp_path) as (base, log):
        ready = httpx.get(f"{base}/health/ready", timeout=5)
        assert ready.status_code == 200
        assert ready.json()["catalog_invalidation"] == ("off: DATABASE_URL is a transaction pooler and"
                                                        " DATABASE_DIRECT_URL is unset")
        for path in ("/api/products?limit=5", f"/api/products/{RADIO}", "/api/categories"):
            assert httpx.get(base + path, timeout=5).status_code == 200, path
        listeners = shop_db.scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                                   " AND application_name = 'villager-shop cache listener'")
        assert listeners == 0
    said = [ln for ln in log.read_text().splitlines() if "DATABASE_DIRECT_URL" in ln]
    assert len(said) == 1 and "not invalidated" in said[0] and "stale" in said[0], said


def test_serve_refuses_a_direct_url_that_is_a_transaction_pooler(
        shop_db: ShopDb, redis_url: str, pgbouncer: PgBouncer, tmp_path: Path) -> None:
    pooled = pgbouncer.pooled(shop_db.url)
    done = run_cli("serve", "--port", str(_free_port()), database_url=pooled, redis=redis_url,
                   DATABASE_DIRECT_URL=pooled, VILLAGER_DATA_DIR=str(tmp_path), timeout=60)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        "error: DATABASE_DIRECT_URL is a transaction pooler (its server connections are shared between clients):"
        " set it to the server itself, or a session-mode pool"]
