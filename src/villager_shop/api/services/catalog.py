"""Catalog reads: listings, product pages, categories, shops. PostgreSQL builds the JSON; the
listing and the product pages go through the cache (scope `catalog`)."""

from __future__ import annotations

import base64
import binascii
import functools
import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import tuple_row

from villager_shop.api.cache.keys import CATALOG, params_digest
from villager_shop.api.cache.store import Cache
from villager_shop.api.errors import BadRequest, clean_text
from villager_shop.api.queries import load, sections
from villager_shop.api.replicas import Reads
from villager_shop.monitoring.metrics import DB_QUERIES

MAX_LIMIT = 100
INT32 = 2**31 - 1


@dataclass(frozen=True)
class ListingCursor:
    rating: Decimal
    order_count: int
    id: uuid.UUID


def decode_cursor(raw: str) -> ListingCursor:
    """Parse an opaque listing cursor (base64url of 'rating:order_count:id'); BadRequest if invalid."""
    try:
        if len(raw) > 200:
            raise ValueError("too long")
        text = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode("ascii")
        rating_s, count_s, id_s = text.split(":")
        rating = Decimal(rating_s)
        count = int(count_s)
        # Ratings have one decimal; a tiny exponent (1E-1000000) is in range but not a PostgreSQL numeric.
        if (not rating.is_finite() or not Decimal(-10) < rating < Decimal(10) or int(rating.as_tuple().exponent) < -6
                or not -INT32 <= count <= INT32):
            raise ValueError("out of range")
        return ListingCursor(rating, count, uuid.UUID(id_s))
    except (ValueError, UnicodeDecodeError, binascii.Error, InvalidOperation):
        raise BadRequest("invalid cursor") from None


def encode_cursor(c: ListingCursor) -> str:
    """The same encoding list_products.sql produces (for tests and clients that build one)."""
    return base64.urlsafe_b64encode(f"{c.rating}:{c.order_count}:{c.id}".encode()).decode().rstrip("=")


def like_pattern(q: str) -> str:
    escaped = q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


@functools.cache
def listing_sql(*, category: bool, shop: bool, q: bool, cursor: bool) -> str:
    parts = sections("list_products_filters.sql")
    filters = [parts[name] for name, used in (("category", category), ("shop", shop), ("q", q),
                                              ("cursor", cursor)) if used]
    return load("list_products.sql").replace("/*FILTERS*/", "\n".join(f.strip() for f in filters) or "")


# The finer generations of the catalog scope (cache.Cache.invalidate): a listing filtered by
# category depends on that category's, any other listing on the all-products one, a product page on
# its product's. A change to products bumps those of the products it touched (catalog_parts); the
# rest (categories, shops, writes by other programs) bumps the whole scope.
ALL_PRODUCTS = "all"


def category_part(slug: str) -> str:
    return "category:" + slug


def product_part(product_id: uuid.UUID) -> str:
    return f"product:{product_id}"


def shown_parts(products: Iterable[uuid.UUID]) -> set[str]:
    """The parts a change to only what is shown of `products` (stock, prices, a variant's name or
    sort order: never which products a listing holds, nor their order) invalidates: their pages;
    the listings that show them follow `shown_changed`."""
    return {product_part(p) for p in products}


def listed_products(body: bytes) -> list[str]:
    """The ids of the products a listing page shows (its entry depends on what is shown of them:
    an order or a price change of one of them rebuilds the page, not its whole category)."""
    return [str(item["id"]) for item in json.loads(body)["items"]]


def shown_changed(products: Iterable[uuid.UUID]) -> list[str]:
    """`Cache.invalidate(shown=...)` of a change to what is shown of `products`."""
    return [str(p) for p in products]


def listing_parts(category: str | None) -> tuple[str]:
    return (ALL_PRODUCTS,) if category is None else (category_part(category),)


def catalog_parts(products: dict[uuid.UUID, set[str | None]]) -> set[str]:
    """The parts a change to `products` (id → its category slugs before and after) invalidates
    when it may change which products a listing holds or their order (availability, active
    variants, category, name, a new product)."""
    parts = {ALL_PRODUCTS}
    for product_id, slugs in products.items():
        parts.add(product_part(product_id))
        parts.update(category_part(s) for s in slugs if s is not None)
    return parts


def listing_key(category: str | None, shop: uuid.UUID | None, q: str | None, limit: int,
                cursor: str | None) -> tuple[str, ListingCursor | None, str | None]:
    """Validate a listing request: its cache name, decoded cursor and stripped text filter."""
    clean_text(category, "category")
    clean_text(q, "q")
    if not 1 <= limit <= MAX_LIMIT:
        raise BadRequest(f"limit must be between 1 and {MAX_LIMIT}")
    after = decode_cursor(cursor) if cursor else None
    q = q.strip() if q else None
    return "products:" + params_digest(category, shop, q, limit, cursor), after, q


class Catalog:
    """The catalog's reads run where `reads` sends them: a recent enough standby, or the primary
    (api.replicas); what the cache rebuilds after an invalidation includes it (api.cache.rebuild)."""

    def __init__(self, reads: Reads, cache: Cache) -> None:
        self.reads = reads
        self.cache = cache

    async def _json(self, query_name: str, sql: str, params: dict[str, Any]) -> bytes | None:
        DB_QUERIES.labels(query_name).inc()

        async def query(conn: AsyncConnection[Any]) -> tuple[Any, ...] | None:
            cur = conn.cursor(row_factory=tuple_row)
            await cur.execute(sql.encode(), params)
            return await cur.fetchone()

        row = await self.reads.read(query)
        if row is None or row[0] is None:
            return None
        return str(row[0]).encode()

    def listing_entry(self, *, category: str | None = None, q: str | None = None, limit: int = 20,
                      cursor: str | None = None) -> tuple[str, tuple[str, ...]]:
        """The cache entry (name, parts) of a listing without a shop filter; raises like
        list_products on invalid input."""
        name, _, _ = listing_key(category, None, q, limit, cursor)
        return name, listing_parts(category)

    async def cached(self, name: str, parts: tuple[str, ...]) -> bytes | None:
        """A listing if the cache holds it (the hot path below FastAPI, api.fast_listing); None
        otherwise (list_products then answers)."""
        return await self.cache.get_cached(CATALOG, name, parts)

    async def cached_listing(self, *, category: str | None = None, q: str | None = None, limit: int = 20,
                             cursor: str | None = None) -> bytes | None:
        """The listing if the cache holds it; None otherwise. Raises like list_products on invalid input."""
        return await self.cached(*self.listing_entry(category=category, q=q, limit=limit, cursor=cursor))

    async def list_products(self, *, category: str | None = None, shop: uuid.UUID | None = None,
                            q: str | None = None, limit: int = 20, cursor: str | None = None) -> bytes:
        name, after, q = listing_key(category, shop, q, limit, cursor)

        async def load_page() -> bytes:  # only on a miss
            params: dict[str, Any] = {"limit": limit, "category": category, "shop": shop,
                                      "q": like_pattern(q) if q else None}
            if after:
                params.update(c_rating=after.rating, c_count=after.order_count, c_id=after.id)
            sql = listing_sql(category=category is not None, shop=shop is not None, q=bool(q),
                              cursor=after is not None)
            body = await self._json("list_products", sql, params)
            assert body is not None  # an aggregate always returns one row
            return body

        return await self.cache.get_or_load(CATALOG, name, load_page, listing_parts(category), shows=listed_products)

    async def cached_product(self, product_id: uuid.UUID) -> bytes | None:
        """The public product page if the cache holds it (api.fast_listing), else None."""
        body = await self.cache.get_cached(CATALOG, f"product:{product_id}", (product_part(product_id),))
        return None if body == b"null" else body

    async def product(self, product_id: uuid.UUID, *, include_hidden: bool = False) -> bytes | None:
        """The product page (None when not found or not listed)."""
        params = {"id": product_id, "include_hidden": include_hidden}
        if include_hidden:  # owners' views are not cached
            return await self._json("product_detail", load("product_detail.sql"), params)

        async def load_page() -> bytes:
            return await self._json("product_detail", load("product_detail.sql"), params) or b"null"

        body = await self.cache.get_or_load(CATALOG, f"product:{product_id}", load_page,
                                            (product_part(product_id),))
        return None if body == b"null" else body

    async def categories(self) -> bytes:
        async def load_all() -> bytes:
            return await self._json("categories", load("categories.sql"), {}) or b"[]"

        return await self.cache.get_or_load(CATALOG, "categories", load_all)

    async def shop(self, shop_id: uuid.UUID) -> bytes | None:
        return await self._json("shop", load("shop.sql"), {"id": shop_id})
