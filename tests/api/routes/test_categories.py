"""GET /api/categories: the order a reader expects."""

from __future__ import annotations

import pytest

from tests.api.conftest import Api, ShopDb

pytestmark = pytest.mark.anyio


async def test_categories_with_letters_come_first_by_name_ignoring_case(api_migrating: Api, shop_db: ShopDb) -> None:
    for name, slug in (("---", "dashes"), ("...", "dots"), ("42", "forty-two"), ("apples", "apples"),
                       ("Zebra toys", "zebra-toys"), ("éclairs", "eclairs")):
        shop_db.execute("INSERT INTO product_categories (name, slug) VALUES (%s, %s)", (name, slug))
    names = [c["name"] for c in (await api_migrating.client.get("/api/categories")).json()]
    with_letters = [n for n in names if any(ch.isalpha() for ch in n)]
    without = [n for n in names if not any(ch.isalpha() for ch in n)]
    assert {"!!!", "---", "...", "42", "apples", "Dairy", "Zebra toys", "éclairs", "मिठाई"} <= set(names)
    assert names == with_letters + without, names
    assert with_letters == sorted(with_letters, key=lambda n: (n.lower(), n)), with_letters
    assert without == sorted(without), without
    assert names.index("apples") < names.index("Dairy") < names.index("Zebra toys")
