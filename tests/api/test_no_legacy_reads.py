"""The shop service is the new application: nothing it runs reads a legacy column, so `migrate
complete` never waits for it. Checked on what the server itself counted (pg_stat_statements) after
the service listed, showed, created and ordered on a migrated database."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from tests.api.conftest import ASHA, BALA, RADIO, SHOP_ASHA, Api, ShopDb
from villager_shop.migration.plan import legacy_columns
from villager_shop.migration.readers import analyze

pytestmark = pytest.mark.anyio


def statements(url: str) -> tuple[list[str], dict[str, set[str]]]:
    """This database's statements as pg_stat_statements keeps them, and the relations of public."""
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        rows = [str(r[0]) for r in c.execute(
            "SELECT query FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database"
            " WHERE datname = current_database()) AND strpos(query, 'villager_migration') = 0")]
        catalog: dict[str, set[str]] = {}
        for rel, col in c.execute("SELECT c.relname, a.attname FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid"
                                  " WHERE c.relnamespace = 'public'::regnamespace AND a.attnum > 0"):
            catalog.setdefault(str(rel), set()).add(str(col))
    return rows, catalog


async def test_nothing_the_shop_service_runs_reads_a_legacy_column(api_migrating: Api, shop_db: ShopDb) -> None:
    with psycopg.connect(shop_db.url, autocommit=True) as c:
        if "pg_stat_statements" not in str(c.execute("SHOW shared_preload_libraries").fetchone()[0]):  # type: ignore[index]
            pytest.skip("pg_stat_statements is not preloaded on this server (the embedded PostgreSQL 18 preloads it)")
    api = api_migrating
    before = len(statements(shop_db.url)[0])
    client = api.client
    categories = (await client.get("/api/categories")).json()
    for params in ({}, {"category": categories[0]["slug"]}, {"q": "a", "limit": 5}, {"shop": str(SHOP_ASHA)}):
        assert (await client.get("/api/products", params=params)).status_code == 200
    page = (await client.get(f"/api/products/{RADIO}")).json()
    assert (await client.get(f"/api/shops/{SHOP_ASHA}")).status_code == 200
    keeper, buyer = await api.auth(ASHA), await api.auth(BALA)
    made = await client.post("/api/products", headers=keeper, json={"shop_id": str(SHOP_ASHA), "name": "Lantern",
                                                                    "price": 80, "stock": 3})
    assert made.status_code == 201, made.text
    body: dict[str, Any] = made.json()
    added = await client.post(f"/api/products/{body['id']}/variants", headers=keeper,
                              json={"name": "Large", "price": 95, "stock": 2})
    assert added.status_code == 201, added.text
    variant = next(v for v in page["variants"] if v["is_default"])
    assert (await client.patch(f"/api/variants/{variant['id']}", headers=keeper, json={"stock": 9})).status_code == 200
    order = await client.post("/api/orders", headers=buyer, json={"items": [{"variant_id": variant["id"], "quantity": 1}]})
    assert order.status_code == 201, order.text
    assert (await client.get("/api/orders", headers=buyer)).status_code == 200
    assert (await client.patch(f"/api/orders/{order.json()['id']}", headers=keeper,
                               json={"status": "cancelled"})).status_code == 200

    queries, catalog = statements(shop_db.url)
    assert len(queries) - before >= 10  # the service's statements are there
    reads = {q: analyze(q, legacy_columns(), catalog) for q in queries}
    assert {q: r for q, r in reads.items() if r} == {}
    # The same check does see a reader when there is one.
    with psycopg.connect(shop_db.url, autocommit=True) as c:
        c.execute("SELECT stock FROM products WHERE id = %s", (RADIO,))
    assert any(analyze(q, legacy_columns(), catalog) == {"products.stock"} for q in statements(shop_db.url)[0])
