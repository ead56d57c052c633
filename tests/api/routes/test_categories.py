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
    # Which non-ASCII letters count is the database's locale's word (C on some servers): check the
    # order of the names that are letters or not in every locale.
    ascii_letters = [i for i, n in enumerate(names) if any("a" <= ch.lower() <= "z" for ch in n)]
    no_letters = [i for i, n in enumerate(names) if not any(ch.isalpha() for ch in n)]
    assert max(ascii_letters) < min(no_letters), names
    assert {"!!!", "---", "...", "42", "apples", "Dairy", "Zebra toys", "éclairs", "मिठाई"} <= set(names)
    plain = [names[i] for i in ascii_letters if names[i].isascii()]
    assert plain == sorted(plain, key=lambda n: (n.lower(), n)), plain
    without = [names[i] for i in no_letters]
    assert without == sorted(without), without
    assert names.index("apples") < names.index("Dairy") < names.index("Zebra toys")
