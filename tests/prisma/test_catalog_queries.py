"""The guide's Phase 3 and Phase 4 Prisma queries on a migrated database answer what the shop's
GET /api/products?category=<slug> answers: the same products in the same order with the same prices
and stock, once Phase 4 breaks its ties by id and leaves out products with nothing to sell. What the
guide's queries return as written, and where it differs, is pinned down too."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.api.conftest import make_config, start_api
from tests.prisma import node
from villager_shop.core.db import create_database, drop_database

# (database state, Prisma client): the migrating client while migrated; the normalized one in both states.
CASES = [("migrating", "migrating"), ("migrating", "normalized"), ("completed", "normalized")]


def api_listing(url: str, redis_url: str, slug: str) -> list[dict[str, Any]]:
    """Every page of GET /api/products?category=slug, from the app in-process (lifespan running)."""
    async def walk() -> list[dict[str, Any]]:
        app = start_api(make_config(url, redis_url))
        api = await app.__anext__()
        try:
            items: list[dict[str, Any]] = []
            cursor = None
            while True:
                params = {"category": slug, "limit": 100, **({"cursor": cursor} if cursor else {})}
                r = await api.client.get("/api/products", params=params)
                assert r.status_code == 200, r.text
                page = json.loads(r.text, parse_float=Decimal)
                items += page["items"]
                cursor = page["next_cursor"]
                if cursor is None:
                    return items
        finally:
            await app.aclose()
    return asyncio.run(walk())


def from_api(p: dict[str, Any]) -> dict[str, Any]:
    return {"id": p["id"], "name": p["name"],
            "base_price": Decimal(str(p["base_price"])) if p["base_price"] is not None else None,
            "rating": Decimal(str(p["rating"])), "order_count": p["order_count"], "category": p["category"]["slug"],
            "shop": (p["shop"]["id"], p["shop"]["name"], Decimal(str(p["shop"]["rating"]))),
            "variants": [(v["id"], v["sku"], Decimal(str(v["price"])), int(v["stock"]), v["is_default"],
                          int(v["sort_order"])) for v in p["variants"]]}


def from_prisma(p: dict[str, Any], slug: str) -> dict[str, Any]:
    return {"id": p["id"], "name": p["name"], "base_price": Decimal(p["basePrice"]) if p["basePrice"] else None,
            "rating": Decimal(p["rating"]), "order_count": p["orderCount"],
            "category": p["category"]["slug"] if "category" in p else slug,
            "shop": (p["shop"]["id"], p["shop"]["name"], Decimal(p["shop"]["rating"])),
            "variants": [(v["id"], v["sku"], Decimal(v["price"]), int(v["stock"]), v["isDefault"], int(v["sortOrder"]))
                         for v in p["variants"]]}


@pytest.fixture
def catalog_db(request: pytest.FixtureRequest, pg_admin_url: str) -> Iterator[tuple[str, str]]:
    """A copy of the service tests' database in the state asked for, with the category of the most
    products made to show every difference: a product with an inactive and an extra variant, one
    not available, one whose only variant is inactive. Yields (url, category slug)."""
    state = request.param
    template = request.getfixturevalue(f"file_{state}_template")  # migrated by the default plan
    name = f"vt_{uuid.uuid4().hex[:12]}"
    url = create_database(pg_admin_url, name, template=template)
    try:
        with psycopg.connect(url, autocommit=True) as c:
            slug = c.execute("SELECT c.slug FROM product_categories c JOIN products p ON p.category_id = c.id"
                             " WHERE p.is_available GROUP BY c.slug ORDER BY count(*) DESC, c.slug LIMIT 1").fetchone()[0]  # type: ignore[index]
            a, b, d = (r[0] for r in c.execute(
                "SELECT p.id FROM products p JOIN product_categories c ON c.id = p.category_id WHERE c.slug = %s"
                " AND p.is_available AND EXISTS (SELECT 1 FROM product_variants v WHERE v.product_id = p.id"
                " AND v.is_active) ORDER BY p.id LIMIT 3", (slug,)).fetchall())
            for sku, price, active, order in (("extra", "7.25", True, 2), ("retired", "9.99", False, 1)):
                c.execute("INSERT INTO product_variants (product_id, sku, name, price, stock, is_active, sort_order)"
                          " VALUES (%s, %s, %s, %s, 3, %s, %s)", (a, f"{a}-{sku}", sku, price, active, order))
            c.execute("UPDATE products SET is_available = false WHERE id = %s", (b,))
            c.execute("UPDATE product_variants SET is_active = false WHERE product_id = %s", (d,))
        yield url, slug
    finally:
        drop_database(pg_admin_url, name)


@pytest.mark.parametrize(("catalog_db", "client"), CASES, indirect=["catalog_db"])
def test_the_guides_phase_3_and_4_queries_return_what_the_api_lists(
        catalog_db: tuple[str, str], client: str, prisma_project: Path, redis_url: str) -> None:
    url, slug = catalog_db
    api = [from_api(p) for p in api_listing(url, redis_url, slug)]
    assert len(api) >= 10
    out = node.tsx_json("catalog.ts", client, slug, database_url=url)

    # The listing (Phase 4, ties broken by id, only what can be sold) is the API's, item for item.
    listing = [from_prisma(p, slug) for p in out["listing"]]
    assert listing == api

    # Phase 4 as the guide writes it: the same order of ratings and order counts, and besides the API's
    # products only the available ones without an active variant (which the shop cannot sell).
    phase4 = [from_prisma(p, slug) for p in out["phase4"]]
    api_ids = {p["id"] for p in api}
    assert [(p["rating"], p["order_count"]) for p in phase4 if p["id"] in api_ids] == \
        [(p["rating"], p["order_count"]) for p in api]
    unsellable = [p for p in phase4 if p["id"] not in api_ids]
    assert unsellable and all(p["variants"] == [] for p in unsellable), unsellable
    by_id = {p["id"]: p for p in api}
    for p in phase4:
        if p["id"] in by_id:  # the same active variants, in sort order (ties among them in no order)
            assert sorted(p["variants"]) == sorted(by_id[p["id"]]["variants"])

    # Phase 3 as the guide writes it: every product of the category, with every variant and the
    # shop's address; the API's products among them with the same prices and stock.
    phase3 = {p["id"]: p for p in out["phase3"]}
    with psycopg.connect(url) as c:
        in_category = {r[0]: r[1] for r in c.execute(
            "SELECT p.id::text, a.house_number FROM products p JOIN product_categories pc ON pc.id = p.category_id"
            " JOIN shops s ON s.id = p.shop_id LEFT JOIN addresses a ON a.id = s.address_id WHERE pc.slug = %s", (slug,))}
    assert set(phase3) == set(in_category)
    assert any(not p["isAvailable"] for p in phase3.values())
    for pid, p in phase3.items():
        assert (p["shop"]["address"] or {}).get("houseNumber") == in_category[pid]
        if pid in by_id:
            active = [v for v in from_prisma(p, slug)["variants"]
                      if next(x for x in p["variants"] if x["id"] == v[0])["isActive"]]
            assert sorted(active) == sorted(by_id[pid]["variants"])
            assert from_prisma(p, slug)["base_price"] == by_id[pid]["base_price"]
    assert any(len(p["variants"]) == 3 for p in phase3.values())  # the inactive variant is Phase 3's too
