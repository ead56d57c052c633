"""Catalog writes by shopkeepers (their own shops) and admins. Only the normalized columns are
written (category_id, base_price, product_variants): mid-migration the sync triggers carry them to
the legacy columns; after `migrate complete` nothing else needs to happen. Every write invalidates
the catalog cache after it commits."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import tuple_row

from villager_shop.api.cache.keys import CATALOG
from villager_shop.api.cache.store import Cache
from villager_shop.api.database import ShopPool, committed
from villager_shop.api.errors import Conflict, Forbidden, Invalid, NotFound
from villager_shop.api.services.accounts import User
from villager_shop.api.services.catalog import catalog_parts, shown_changed, shown_parts

UPSERT_DEFAULT_VARIANT = """
INSERT INTO public.product_variants AS v (product_id, sku, name, price, stock, is_default, is_active, sort_order)
VALUES (%(product_id)s, %(sku)s, %(name)s, %(price)s, %(stock)s, true, true, 0)
ON CONFLICT (product_id) WHERE is_default DO UPDATE
   SET name = EXCLUDED.name, price = EXCLUDED.price, stock = EXCLUDED.stock, is_active = true,
       updated_at = now()
RETURNING v.id
"""

# Items ordered while the product had no variant get its first (default) one, and leave the
# quarantine unless their quantity keeps them there. While the legacy columns live, the sync
# triggers have done this already (nothing is left to link); after `complete` no trigger does.
_LINK = """
WITH linked AS (
    UPDATE public.order_items SET variant_id = %(variant)s
     WHERE product_id = %(product)s AND variant_id IS NULL
    RETURNING id, quantity),
cleared AS (
    DELETE FROM villager_migration.quarantine q USING linked l
     WHERE q.table_name = 'order_items' AND q.row_id = l.id AND l.quantity > 0),
requeued AS (
    UPDATE villager_migration.quarantine q
       SET reason = 'non_positive_quantity', quarantined_at = now()
      FROM linked l
     WHERE q.table_name = 'order_items' AND q.row_id = l.id AND NOT l.quantity > 0
       AND q.reason IS DISTINCT FROM 'non_positive_quantity')"""
LINK_WAITING_ITEMS = _LINK + "\nSELECT count(*) FROM linked"
# A database migrated by plans/villager.toml records one quarantine row per rule (its quantity rule
# keeps its own row): only the wait for a variant ends.
LINK_WAITING_ITEMS_PLAN_FILE = _LINK + """,
waited AS (
    DELETE FROM villager_migration.plan_quarantine q USING linked l
     WHERE q.table_name = 'order_items' AND q.row_key = l.id::text AND q.reason = 'product_without_variant')
SELECT count(*) FROM linked"""


def can_manage_shop(user: User, owner_id: uuid.UUID) -> bool:
    return user.is_admin or (user.role == "shopkeeper" and user.id == owner_id)


async def _shop_owner(conn: AsyncConnection[Any], shop_id: uuid.UUID) -> uuid.UUID | None:
    cur = conn.cursor(row_factory=tuple_row)
    await cur.execute("SELECT owner_id FROM public.shops WHERE id = %s", (shop_id,))
    row = await cur.fetchone()
    return row[0] if row else None


async def _category_id(conn: AsyncConnection[Any], slug: str) -> uuid.UUID:
    cur = conn.cursor(row_factory=tuple_row)
    await cur.execute("SELECT id FROM public.product_categories WHERE slug = %s AND is_active", (slug,))
    row = await cur.fetchone()
    if row is None:
        raise Invalid(f"no active category with slug {slug!r}")
    category_id: uuid.UUID = row[0]
    return category_id


async def _lock_product(conn: AsyncConnection[Any], user: User, product_id: uuid.UUID) -> str | None:
    """Lock the product row (the same order as the legacy app: product, then its variants) and
    check that the user may manage its shop; returns its category's slug."""
    cur = conn.cursor(row_factory=tuple_row)
    await cur.execute(
        """SELECT s.owner_id, c.slug FROM public.products p JOIN public.shops s ON s.id = p.shop_id
             LEFT JOIN public.product_categories c ON c.id = p.category_id
            WHERE p.id = %s FOR NO KEY UPDATE OF p""", (product_id,))
    row = await cur.fetchone()
    if row is None:
        raise NotFound("product not found")
    if not can_manage_shop(user, row[0]):
        raise Forbidden("you may only manage the products of your own shops")
    slug: str | None = row[1]
    return slug


class Products:
    def __init__(self, pool: ShopPool, cache: Cache) -> None:
        self.pool = pool
        self.cache = cache

    async def create(self, user: User, *, shop_id: uuid.UUID, name: str, description: str | None,
                     category: str | None, price: Decimal, stock: int, is_available: bool,
                     variant_name: str = "Default") -> uuid.UUID:
        async with self.pool.transaction() as conn:
            owner = await _shop_owner(conn, shop_id)
            if owner is None:
                raise Invalid("no such shop")
            if not can_manage_shop(user, owner):
                raise Forbidden("you may only add products to your own shops")
            category_id = await _category_id(conn, category) if category else None
            cur = conn.cursor(row_factory=tuple_row)
            await cur.execute(
                """INSERT INTO public.products (shop_id, name, description, category_id, base_price, is_available)
                   VALUES (%s, %s, %s, %s, %s, %s) RETURNING id""",
                (shop_id, name, description, category_id, price, is_available))
            row = await cur.fetchone()
            assert row is not None
            product_id: uuid.UUID = row[0]
            await conn.execute(UPSERT_DEFAULT_VARIANT.encode(), {
                "product_id": product_id, "sku": f"{product_id}-default", "name": variant_name,
                "price": price, "stock": stock})
        lsn = await committed(self.pool)
        await self.cache.invalidate(CATALOG, catalog_parts({product_id: {category}}), shown=shown_changed([product_id]),
                                    lsn=lsn)
        return product_id

    async def update(self, user: User, product_id: uuid.UUID, changes: dict[str, Any]) -> None:
        async with self.pool.transaction() as conn:
            slugs = {await _lock_product(conn, user, product_id)}
            sets: list[str] = []
            params: dict[str, Any] = {"id": product_id}
            for column in ("name", "description", "is_available"):
                if column in changes:
                    sets.append(f"{column} = %({column})s")
                    params[column] = changes[column]
            if "category" in changes:
                sets.append("category_id = %(category_id)s")
                slug = changes["category"]
                params["category_id"] = await _category_id(conn, slug) if slug else None
                slugs.add(slug)
            if sets:
                await conn.execute(
                    f"UPDATE public.products SET {', '.join(sets)}, updated_at = now() WHERE id = %(id)s".encode(),
                    params)
        lsn = await committed(self.pool)
        await self.cache.invalidate(CATALOG, catalog_parts({product_id: slugs}), shown=shown_changed([product_id]), lsn=lsn)

    async def add_variant(self, user: User, product_id: uuid.UUID, *, name: str, price: Decimal, stock: int,
                          sku: str | None, sort_order: int, is_active: bool) -> uuid.UUID:
        """A product without a default variant (its legacy price was not positive, so it has no
        valid price and is quarantined) gets this one as its default: its price becomes the
        product's, on both sides. A product whose default variant exists but has no valid price
        takes no extra variant: that would sell it while the old application sees it unpriced."""
        async with self.pool.transaction() as conn:
            slug = await _lock_product(conn, user, product_id)
            cur = conn.cursor(row_factory=tuple_row)
            await cur.execute(
                """SELECT p.base_price, (SELECT v.id FROM public.product_variants v
                                          WHERE v.product_id = p.id AND v.is_default)
                     FROM public.products p WHERE p.id = %s""", (product_id,))
            priced = await cur.fetchone()
            assert priced is not None  # locked above
            default = priced[1] is None
            if not default and priced[0] is None:
                raise Conflict(f"product {product_id} has no valid price (quarantined by the migration); set its"
                               f" default variant's price first: PATCH /api/variants/{priced[1]}")
            if default and not is_active:
                raise Invalid(f"product {product_id} has no price yet: its first variant becomes its default and"
                              " gives it its price, so it must be active")
            variant_id = uuid.uuid4()
            await cur.execute(
                """INSERT INTO public.product_variants
                          (id, product_id, sku, name, price, stock, is_default, is_active, sort_order)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
                   ON CONFLICT (sku) DO NOTHING RETURNING id""",
                (variant_id, product_id, sku or f"{product_id}-{variant_id.hex[:8]}", name, price, stock,
                 default, is_active, sort_order))
            if await cur.fetchone() is None:
                raise Invalid(f"sku {sku!r} is already used")
            if default:
                await conn.execute(
                    """UPDATE public.products SET base_price = %s, updated_at = now()
                        WHERE id = %s AND base_price IS DISTINCT FROM %s""", (price, product_id, price))
                await cur.execute("SELECT to_regclass('villager_migration.plan_quarantine') IS NOT NULL")
                plan_file = await cur.fetchone()
                await conn.execute(LINK_WAITING_ITEMS_PLAN_FILE if plan_file and plan_file[0] else LINK_WAITING_ITEMS,
                                   {"variant": variant_id, "product": product_id})
        lsn = await committed(self.pool)
        await self.cache.invalidate(CATALOG, catalog_parts({product_id: {slug}}), shown=shown_changed([product_id]), lsn=lsn)
        return variant_id

    async def update_variant(self, user: User, variant_id: uuid.UUID, changes: dict[str, Any]) -> uuid.UUID:
        """Change price/stock/is_active/name/sort_order; returns the product id. A default variant's
        price is also the product's base_price."""
        async with self.pool.transaction() as conn:
            cur = conn.cursor(row_factory=tuple_row)
            await cur.execute("SELECT product_id FROM public.product_variants WHERE id = %s", (variant_id,))
            row = await cur.fetchone()
            if row is None:
                raise NotFound("variant not found")
            product_id: uuid.UUID = row[0]
            slug = await _lock_product(conn, user, product_id)
            sets = [f"{c} = %({c})s" for c in ("price", "stock", "is_active", "name", "sort_order") if c in changes]
            if sets:
                await cur.execute(
                    f"""UPDATE public.product_variants SET {', '.join(sets)}, updated_at = now()
                         WHERE id = %(id)s AND product_id = %(product_id)s
                        RETURNING is_default, price""".encode(),
                    {**changes, "id": variant_id, "product_id": product_id})
                updated = await cur.fetchone()
                if updated is None:  # moved to another product between the two statements: impossible
                    raise NotFound("variant not found")
                if updated[0] and "price" in changes:
                    await conn.execute(
                        """UPDATE public.products SET base_price = %s, updated_at = now()
                            WHERE id = %s AND base_price IS DISTINCT FROM %s""",
                        (updated[1], product_id, updated[1]))
        lsn = await committed(self.pool)
        if "is_active" in changes:  # may change which products a listing holds
            await self.cache.invalidate(CATALOG, catalog_parts({product_id: {slug}}), shown=shown_changed([product_id]),
                                        lsn=lsn)
        else:  # price, stock, name, sort order: only what is shown of the product
            await self.cache.invalidate(CATALOG, shown_parts([product_id]), shown=shown_changed([product_id]), lsn=lsn)
        return product_id
