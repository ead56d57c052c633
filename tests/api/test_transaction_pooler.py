"""The service through a real PgBouncer in transaction mode (tests/pgbouncer.py, 4 server
connections per database): the statement and lock timeouts hold in every transaction."""

from __future__ import annotations

import time

import psycopg
import pytest

from tests.api.conftest import ASHA, RADIO, ShopDb, make_config, start_api
from tests.pgbouncer import PgBouncer


@pytest.mark.anyio
async def test_the_timeouts_hold_in_every_transaction_through_a_transaction_pooler(
        shop_db: ShopDb, redis_url: str, pgbouncer: PgBouncer) -> None:
    """Through the pooler the connections carry no settings: each transaction sets its own. A
    statement longer than the statement timeout is cancelled (in a read and in a write
    transaction), a request waiting for a lock another program holds gets 503 after the lock
    timeout, and the service's writes are marked as invalidating the cache themselves."""
    config = make_config(pgbouncer.pooled(shop_db.url), redis_url, statement_timeout_ms=300)
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
