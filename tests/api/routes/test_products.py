"""GET /api/products and product pages, and the shopkeepers' product/variant edits, in both states
of the schema (mid-migration and after `migrate complete`)."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest

from tests.api.conftest import (
    ASHA,
    BALA,
    FARID,
    FREE_SAMPLE,
    GITA,
    RADIO,
    REFUND,
    SHOP_ASHA,
    SHOP_FARID_VEG,
    VASE,
    Api,
    ShopDb,
)
from villager_shop.api.services.catalog import listing_sql

pytestmark = pytest.mark.anyio

VISIBLE = """SELECT p.id::text FROM products p
              WHERE p.is_available
                AND EXISTS (SELECT 1 FROM product_variants v WHERE v.product_id = p.id AND v.is_active)
                {extra}
              ORDER BY p.rating DESC, p.order_count DESC, p.id"""


async def walk(api: Api, limit: int, **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    for _ in range(10_000):
        query = {k: v for k, v in {**params, "limit": limit, "cursor": cursor}.items() if v is not None}
        r = await api.client.get("/api/products", params=query)
        assert r.status_code == 200, r.text
        page = r.json()
        assert len(page["items"]) <= limit
        items.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return items
        assert len(page["items"]) == limit
    raise AssertionError("pagination does not end")


async def test_listing_matches_sql_and_pages_have_no_gaps_or_duplicates(api: Api, any_shop_db: ShopDb) -> None:
    expected = [r[0] for r in any_shop_db.rows(VISIBLE.format(extra=""))]
    assert len(expected) > 1000
    got = await walk(api, 97)
    ids = [p["id"] for p in got]
    assert len(ids) == len(set(ids)), "duplicates across pages"
    assert ids == expected

    dairy = [r[0] for r in any_shop_db.rows(VISIBLE.format(
        extra="AND p.category_id = (SELECT id FROM product_categories WHERE slug = 'dairy')"))]
    assert [p["id"] for p in await walk(api, 23, category="dairy")] == dairy
    assert all(p["category"]["slug"] == "dairy" for p in await walk(api, 100, category="dairy"))

    shop = [r[0] for r in any_shop_db.rows(VISIBLE.format(extra=f"AND p.shop_id = '{SHOP_FARID_VEG}'"))]
    assert [p["id"] for p in await walk(api, 1, shop=str(SHOP_FARID_VEG))] == shop

    named = [r[0] for r in any_shop_db.rows(VISIBLE.format(extra="AND p.name ILIKE '%product 12%'"))]
    assert [p["id"] for p in await walk(api, 5, q="product 12")] == named
    assert await walk(api, 5, q="100%_") == []  # LIKE wildcards are literal
    assert await walk(api, 5, category="no-such-category") == []


async def test_listing_items_carry_category_variants_and_shop(api: Api, any_shop_db: ShopDb) -> None:
    extra_variant = any_shop_db.scalar(
        "INSERT INTO product_variants (product_id, sku, name, price, stock, sort_order)"
        " VALUES (%s, 'radio-xl', 'XL', 599, 2, -1) RETURNING id::text", (RADIO,))
    any_shop_db.execute("INSERT INTO product_variants (product_id, sku, name, price, stock, is_active, sort_order)"
                        " VALUES (%s, 'radio-old', 'Old', 399, 2, false, 5)", (RADIO,))
    radio = next(p for p in await walk(api, 100, category="electronics") if p["id"] == str(RADIO))
    assert radio["category"] == {"id": radio["category"]["id"], "name": "Electronics", "slug": "electronics"}
    assert radio["shop"] == {"id": str(SHOP_ASHA), "name": "Asha Kirana", "rating": 4.5}
    assert [v["name"] for v in radio["variants"]] == ["XL", "Default"]  # active only, in sort order
    assert radio["variants"][0]["id"] == extra_variant
    assert radio["variants"][1]["price"] == 499 and radio["variants"][1]["is_default"] is True
    assert radio["base_price"] == 499


async def test_a_category_with_a_long_slug_can_be_listed(api: Api, any_shop_db: ShopDb) -> None:
    """A slug follows its name: a name of 150 characters has a slug as long (migration rules)."""
    slug = "long-" + "x" * 150
    any_shop_db.execute("INSERT INTO product_categories (name, slug) VALUES (%s, %s)", ("Long " + "X" * 150, slug))
    any_shop_db.execute("UPDATE products SET category_id = (SELECT id FROM product_categories WHERE slug = %s)"
                        " WHERE id = %s", (slug, RADIO))
    assert [p["id"] for p in await walk(api, 10, category=slug)] == [str(RADIO)]


async def test_unlisted_products_are_hidden(api: Api) -> None:
    ids = {p["id"] for p in await walk(api, 100)}
    for hidden in (VASE, FREE_SAMPLE, REFUND):  # not available; price 0 and -5 (quarantined, no active variant)
        assert str(hidden) not in ids
        assert (await api.client.get(f"/api/products/{hidden}")).status_code == 404
    assert (await api.client.get(f"/api/products/{uuid.uuid4()}")).status_code == 404


async def test_bad_parameters_are_client_errors(api: Api) -> None:
    for query in ("cursor=zzz", "cursor=%00", "cursor=" + "A" * 300, "limit=0", "limit=101", "limit=x",
                  "shop=not-a-uuid", "q=%00", "cursor=OjE6Mg", "cursor=NC41OjE6bm90LWEtdXVpZA"):
        r = await api.client.get(f"/api/products?{query}")
        assert r.status_code in (400, 422), (query, r.status_code, r.text)
    assert (await api.client.get("/api/products/not-a-uuid")).status_code == 422
    assert (await api.client.get("/api/shops/not-a-uuid")).status_code == 422
    # A cursor is ours or invalid (400), even when its rating parses: 1E-1000000 reached PostgreSQL (422).
    tiny = "MUUtMTAwMDAwMDoxOjAwMDAwMDAwLTAwMDAtMDAwMC0wMDAwLTAwMDAwMDAwMDAwMQ"  # 1E-1000000:1:<uuid>
    r = await api.client.get(f"/api/products?cursor={tiny}")
    assert r.status_code == 400 and "invalid cursor" in r.text


async def test_product_page_shows_shop_and_its_address(api: Api) -> None:
    r = await api.client.get(f"/api/products/{RADIO}")
    assert r.status_code == 200
    page = r.json()
    assert page["shop"]["address"]["house_number"] == "12A"
    assert page["category"]["slug"] == "electronics"
    assert [v["price"] for v in page["variants"]] == [499]
    shop = (await api.client.get(f"/api/shops/{SHOP_ASHA}")).json()
    assert shop["address"]["house_number"] == "12A" and shop["product_count"] >= 3
    categories = (await api.client.get("/api/categories")).json()
    assert {"electronics", "dairy", "मिठाई"} <= {c["slug"] for c in categories}


@pytest.mark.parametrize("state", ["migrating", "completed"])
async def test_listing_uses_the_rating_indexes(state: str, request: pytest.FixtureRequest, pg_admin_url: str) -> None:
    from villager_shop.core.urls import with_dbname

    url = with_dbname(pg_admin_url, request.getfixturevalue(f"{state}_template"))
    cases = [
        (dict(category=True, shop=False, q=False, cursor=False), {"category": "dairy"},
         "idx_products_category_rating"),
        (dict(category=True, shop=False, q=False, cursor=True),
         {"category": "dairy", "c_rating": 2.5, "c_count": 3, "c_id": uuid.uuid4()}, "idx_products_category_rating"),
        (dict(category=False, shop=False, q=False, cursor=False), {}, "idx_products_available_rating"),
        (dict(category=False, shop=False, q=False, cursor=True),
         {"c_rating": 2.5, "c_count": 3, "c_id": uuid.uuid4()}, "idx_products_available_rating"),
    ]
    with psycopg.connect(url) as conn:
        for flags, params, index in cases:
            sql = "EXPLAIN " + listing_sql(**flags)
            plan = "\n".join(r[0] for r in conn.execute(sql.encode(), {"limit": 20, **params}).fetchall())
            assert index in plan, plan
            assert "Seq Scan on products" not in plan, plan
    # the per-test copies are made from this template: leave no connection behind
    conn.close()


async def test_shopkeeper_creates_and_edits_own_product(api: Api, any_shop_db: ShopDb) -> None:
    asha = await api.auth(ASHA)
    r = await api.client.post("/api/products", headers=asha, json={
        "shop_id": str(SHOP_ASHA), "name": "Solar lamp", "description": "bright", "category": "electronics",
        "price": "350.50", "stock": 7})
    assert r.status_code == 201, r.text
    product = r.json()
    pid = product["id"]
    assert product["base_price"] == 350.5 and product["category"]["slug"] == "electronics"
    [default] = product["variants"]
    assert default["is_default"] and default["price"] == 350.5 and default["stock"] == 7
    listed = await walk(api, 100, q="Solar lamp")
    assert [p["id"] for p in listed] == [pid]

    r = await api.client.patch(f"/api/variants/{default['id']}", headers=asha, json={"price": "299.99", "stock": 3})
    assert r.status_code == 200, r.text
    assert r.json()["base_price"] == 299.99
    [row] = any_shop_db.rows("SELECT p.base_price, v.price, v.stock FROM products p JOIN product_variants v"
                             " ON v.product_id = p.id AND v.is_default WHERE p.id = %s", (pid,))
    assert row == (row[1], row[1], 3) and float(row[0]) == 299.99
    if any_shop_db.has_legacy_columns():  # the old application still sees the same price and stock
        assert any_shop_db.rows("SELECT price::float, stock FROM products WHERE id = %s", (pid,)) == [(299.99, 3)]

    r = await api.client.post(f"/api/products/{pid}/variants", headers=asha,
                              json={"name": "Big", "price": "499", "stock": 1, "sort_order": 1})
    assert r.status_code == 201, r.text
    assert [v["name"] for v in r.json()["variants"]] == ["Default", "Big"]

    r = await api.client.patch(f"/api/products/{pid}", headers=asha,
                               json={"name": "Solar lamp v2", "category": None, "is_available": False})
    assert r.status_code == 200, r.text
    assert r.json()["category"] is None and r.json()["is_available"] is False
    assert (await api.client.get(f"/api/products/{pid}")).status_code == 404
    assert await walk(api, 100, q="Solar lamp") == []
    assert any_shop_db.scalar("SELECT count(*) FROM check_data_integrity()") == 0


async def test_a_product_without_a_valid_price_is_priced_by_its_first_variant(api: Api, any_shop_db: ShopDb) -> None:
    """Free sample's legacy price is 0: quarantined, no default variant, an order item waiting. The
    first variant the shopkeeper adds becomes its default and its price, on both sides (was: an
    extra variant that sold the product while the old application saw it at 0, still quarantined)."""
    farid = await api.auth(FARID)
    r = await api.client.post(f"/api/products/{FREE_SAMPLE}/variants", headers=farid,
                              json={"name": "Pack", "price": "12.50", "stock": 4, "is_active": False})
    assert r.status_code == 422 and "must be active" in r.text  # it would price the product
    r = await api.client.post(f"/api/products/{FREE_SAMPLE}/variants", headers=farid,
                              json={"name": "Pack", "price": "12.50", "stock": 4})
    assert r.status_code == 201, r.text
    [variant] = r.json()["variants"]
    assert variant["is_default"] and variant["price"] == 12.5 and r.json()["base_price"] == 12.5
    assert (await api.client.get(f"/api/products/{FREE_SAMPLE}")).status_code == 200
    # The item ordered meanwhile has the variant now, and left the quarantine (after `complete` too).
    item = uuid.UUID("40000000-0000-0000-0000-000000000004")
    assert any_shop_db.rows("SELECT DISTINCT variant_id FROM order_items WHERE product_id = %s",
                            (FREE_SAMPLE,)) == [(uuid.UUID(variant["id"]),)]
    assert any_shop_db.scalar("SELECT product_id FROM order_items WHERE id = %s", (item,)) == FREE_SAMPLE
    assert any_shop_db.quarantined("order_items", item) == set()
    assert any_shop_db.scalar("SELECT count(*) FROM check_data_integrity()") == 0
    if any_shop_db.has_legacy_columns():  # priced on both sides, so out of the quarantine
        assert any_shop_db.rows("SELECT price::float, stock FROM products WHERE id = %s",
                                (FREE_SAMPLE,)) == [(12.5, 4)]
        assert any_shop_db.quarantined("products", FREE_SAMPLE) == set()


async def test_no_extra_variant_for_a_product_whose_default_has_no_valid_price(api_migrating: Api,
                                                                               shop_db: ShopDb) -> None:
    """The old application sets Radio's price to 0: its default variant is deactivated and it has no
    valid price. An extra variant would sell it anyway: refused, naming the way out."""
    shop_db.execute("UPDATE products SET price = 0 WHERE id = %s", (RADIO,))
    asha = await api_migrating.auth(ASHA)
    r = await api_migrating.client.post(f"/api/products/{RADIO}/variants", headers=asha,
                                        json={"name": "Big", "price": "600", "stock": 1})
    assert r.status_code == 409, r.text
    default = shop_db.scalar("SELECT id FROM product_variants WHERE product_id = %s AND is_default", (RADIO,))
    assert f"/api/variants/{default}" in r.text
    assert shop_db.scalar("SELECT count(*) FROM product_variants WHERE product_id = %s", (RADIO,)) == 1
    r = await api_migrating.client.patch(f"/api/variants/{default}", headers=asha, json={"price": "450"})
    assert r.status_code == 200, r.text
    assert r.json()["base_price"] == 450 and shop_db.scalar("SELECT price FROM products WHERE id = %s", (RADIO,)) == 450
    r = await api_migrating.client.post(f"/api/products/{RADIO}/variants", headers=asha,
                                        json={"name": "Big", "price": "600", "stock": 1})
    assert r.status_code == 201, r.text


async def test_only_the_shops_keeper_or_an_admin_edits_its_products(api: Api) -> None:
    farid, bala, gita = await api.auth(FARID), await api.auth(BALA), await api.auth(GITA)
    radio = (await api.client.get(f"/api/products/{RADIO}")).json()
    variant = radio["variants"][0]["id"]
    assert (await api.client.patch(f"/api/products/{RADIO}", headers=farid, json={"name": "x"})).status_code == 403
    assert (await api.client.patch(f"/api/variants/{variant}", headers=farid, json={"stock": 0})).status_code == 403
    assert (await api.client.post("/api/products", headers=farid, json={
        "shop_id": str(SHOP_ASHA), "name": "x", "price": 1})).status_code == 403
    assert (await api.client.patch(f"/api/products/{RADIO}", headers=bala, json={"name": "x"})).status_code == 403
    r = await api.client.patch(f"/api/variants/{variant}", headers=gita, json={"stock": 9})
    assert r.status_code == 200 and r.json()["variants"][0]["stock"] == 9
    assert (await api.client.patch(f"/api/variants/{variant}", headers=gita, json={"price": None})).status_code == 422
    assert (await api.client.patch(f"/api/variants/{variant}", headers=gita, json={"price": 0})).status_code == 422
    for invisible in ("\u200b", " \u2060 ", "\u00a0", "\t"):  # a name must show something
        r = await api.client.patch(f"/api/products/{RADIO}", headers=gita, json={"name": invisible})
        assert r.status_code == 422 and "visible" in r.text, (invisible, r.text)
    assert (await api.client.patch(f"/api/products/{RADIO}", headers=gita, json={"name": "\u200bRadio"})).status_code == 200
    assert (await api.client.patch(f"/api/variants/{uuid.uuid4()}", headers=gita, json={"stock": 1})).status_code == 404


async def test_anonymous_and_forged_tokens_get_401(api: Api) -> None:
    for method, path, body in (("POST", "/api/products", {}), ("PATCH", f"/api/products/{RADIO}", {}),
                               ("PATCH", f"/api/variants/{uuid.uuid4()}", {}), ("POST", "/api/orders", {}),
                               ("GET", "/api/orders", None), ("PATCH", f"/api/orders/{uuid.uuid4()}", {})):
        for headers in ({}, {"Authorization": "Bearer not.a.token"}):
            r = await api.client.request(method, path, json=body, headers=headers)
            assert r.status_code == 401, (method, path, r.status_code)
            assert r.headers["www-authenticate"] == "Bearer"
