"""Orders: placed by customers, listed by who may see them, moved along their status by the shop's
keeper. Prices come from the database; stock is decremented in the same transaction.

Locks, always in this order (the order the legacy application and the sync triggers take them, so
no deadlock): the products of the order sorted by id, then their variants sorted by id (FOR NO KEY
UPDATE, which does not block the foreign-key checks of concurrent order items). A variant short of
stock is seen under the lock, so two orders can never both take the last unit (no oversell)."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
import uuid
from collections import OrderedDict
from decimal import Decimal
from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg.rows import tuple_row

from villager_shop.api.cache.keys import CATALOG
from villager_shop.api.cache.store import Cache
from villager_shop.api.database import ShopPool, committed
from villager_shop.api.errors import BadRequest, Conflict, Forbidden, Invalid, NotFound
from villager_shop.api.queries import sections
from villager_shop.api.services.accounts import User
from villager_shop.api.services.catalog import shown_changed, shown_parts
from villager_shop.monitoring.metrics import ORDERS, REVENUE

STATUSES = ("pending", "confirmed", "delivered", "cancelled")
TRANSITIONS = {"pending": {"confirmed", "cancelled"}, "confirmed": {"delivered", "cancelled"}}
DEADLOCK_RETRIES = 3


def _with_order_json(query: str, items: str = "public.order_items") -> str:
    """`query` with the order JSON in place of /*ORDER_JSON*/, its items read from `items`."""
    return query.replace("/*ORDER_JSON*/", sections("orders.sql")["order_json"]).replace("/*ITEMS*/", items)


def _sql(name: str) -> bytes:
    items = "new_items" if name == "place" else "public.order_items"  # see orders.sql, place
    return _with_order_json(sections("orders.sql")[name], items).encode()


def request_hash(items: dict[uuid.UUID, int]) -> str:
    canonical = json.dumps(sorted((str(k), v) for k, v in items.items()))
    return hashlib.sha256(canonical.encode()).hexdigest()


def decode_order_cursor(raw: str) -> tuple[str, uuid.UUID]:
    try:
        if len(raw) > 200:
            raise ValueError("too long")
        text = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode("ascii")
        at, _, id_s = text.partition("_")
        dt.datetime.strptime(at, "%Y-%m-%dT%H:%M:%S.%f")
        return at, uuid.UUID(id_s)
    except (ValueError, UnicodeDecodeError, binascii.Error):
        raise BadRequest("invalid cursor") from None


def encode_order_cursor(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


async def _order_json(conn: AsyncConnection[Any], order_id: uuid.UUID) -> bytes | None:
    cur = conn.cursor(row_factory=tuple_row)
    await cur.execute(_sql("order"), {"id": order_id})
    row = await cur.fetchone()
    return str(row[0]).encode() if row else None


async def _lock_stock(conn: AsyncConnection[Any], variant_ids: list[uuid.UUID]) -> dict[uuid.UUID, tuple[Any, ...]]:
    """Lock the products, then the variants, each sorted by id; return the variants' rows."""
    cur = conn.cursor(row_factory=tuple_row)
    await cur.execute(
        """SELECT p.id FROM public.products p
            WHERE p.id IN (SELECT v.product_id FROM public.product_variants v WHERE v.id = ANY(%s))
            ORDER BY p.id FOR NO KEY UPDATE""", (variant_ids,))
    await cur.fetchall()
    await cur.execute(
        """SELECT v.id, v.product_id, v.price, v.stock, v.is_active, p.is_available, p.shop_id, s.is_open, c.slug
             FROM public.product_variants v
             JOIN public.products p ON p.id = v.product_id
             JOIN public.shops s ON s.id = p.shop_id
             LEFT JOIN public.product_categories c ON c.id = p.category_id
            WHERE v.id = ANY(%s)
            ORDER BY v.id
              FOR NO KEY UPDATE OF v""", (sorted(variant_ids),))
    return {r[0]: r for r in await cur.fetchall()}


def _touched(rows: dict[uuid.UUID, tuple[Any, ...]]) -> set[uuid.UUID]:
    """The products of `_lock_stock`'s rows: an order or a cancellation changes only their stock,
    which is shown, but never changes which products a listing holds nor their order."""
    return {r[1] for r in rows.values()}


class Orders:
    def __init__(self, pool: ShopPool, cache: Cache, delivery_fee: Decimal) -> None:
        self.pool = pool
        self.cache = cache
        self.delivery_fee = delivery_fee

    async def place(self, user: User, items: list[tuple[uuid.UUID, int]],
                    idempotency_key: str | None) -> tuple[bytes, bool]:
        """Create an order; returns (order JSON, replayed). Replayed = an earlier request with the
        same Idempotency-Key created it."""
        if user.role not in ("customer", "admin"):
            raise Forbidden("only customers place orders")
        merged: OrderedDict[uuid.UUID, int] = OrderedDict()
        for variant_id, quantity in items:
            merged[variant_id] = merged.get(variant_id, 0) + quantity
        for attempt in range(DEADLOCK_RETRIES):
            try:
                body, replayed = await self._place_once(user, merged, idempotency_key)
                if replayed:  # committed by the first request, whose answer this client may have lost
                    await committed(self.pool)
                return body, replayed
            except psycopg.errors.DeadlockDetected:
                if attempt == DEADLOCK_RETRIES - 1:
                    raise
        raise AssertionError("unreachable")

    async def _place_once(self, user: User, items: dict[uuid.UUID, int],
                          idempotency_key: str | None) -> tuple[bytes, bool]:
        digest = request_hash(items)
        async with self.pool.transaction() as conn:
            cur = conn.cursor(row_factory=tuple_row)
            if idempotency_key is not None:
                # A concurrent request with the same key waits here until the first commits
                # (then finds its order) or rolls back (then proceeds itself).
                await cur.execute(
                    """INSERT INTO villager_service.idempotency_keys (user_id, key, request_hash)
                           VALUES (%s, %s, %s) ON CONFLICT DO NOTHING RETURNING 1""",
                    (user.id, idempotency_key, digest))
                if await cur.fetchone() is None:
                    await cur.execute(
                        """SELECT order_id, request_hash FROM villager_service.idempotency_keys
                                WHERE user_id = %s AND key = %s""", (user.id, idempotency_key))
                    prior = await cur.fetchone()
                    if prior is None or prior[0] is None:
                        raise Conflict("a request with this Idempotency-Key is still in progress")
                    if prior[1] != digest:
                        raise Invalid("Idempotency-Key was already used with a different request")
                    body = await _order_json(conn, prior[0])
                    if body is None:
                        raise Conflict("the order of this Idempotency-Key no longer exists")
                    return body, True
            rows = await _lock_stock(conn, list(items))
            missing = [str(v) for v in items if v not in rows]
            if missing:
                raise Invalid({"message": "unknown variants", "variant_ids": missing})
            shops = {r[6] for r in rows.values()}
            if len(shops) > 1:
                raise Invalid("all items of an order must come from one shop")
            unavailable = [str(v) for v, r in rows.items() if not (r[4] and r[5])]
            if unavailable:
                raise Conflict({"message": "not available", "variant_ids": unavailable})
            if not all(r[7] for r in rows.values()):
                raise Conflict("the shop is closed")
            short = [{"variant_id": str(v), "requested": q, "available": rows[v][3]}
                     for v, q in items.items() if rows[v][3] < q]
            if short:
                raise Conflict({"message": "insufficient stock", "items": short})
            subtotal = sum((rows[v][2] * q for v, q in items.items()), Decimal(0))
            ids = list(items)
            await cur.execute(_sql("place"), {
                "customer": user.id, "shop": shops.pop(), "subtotal": subtotal, "fee": self.delivery_fee,
                "total": subtotal + self.delivery_fee, "ids": ids, "quantities": [items[i] for i in ids],
                "key": idempotency_key})
            placed = await cur.fetchone()
            assert placed is not None and placed[2] == len(ids) and placed[3] == (idempotency_key is not None)
            body = str(placed[1]).encode()
        ORDERS.labels("created").inc()  # committed (a replay returned above and is not counted)
        REVENUE.labels("created").inc(float(subtotal + self.delivery_fee))
        # stock changed: after the commit, the listings and pages of those products only
        lsn = await committed(self.pool)
        touched = _touched(rows)
        await self.cache.invalidate(CATALOG, shown_parts(touched), shown=shown_changed(touched), lsn=lsn)
        return body, False

    async def get(self, user: User, order_id: uuid.UUID) -> bytes:
        async with self.pool.connection() as conn:
            cur = conn.cursor(row_factory=tuple_row)
            await cur.execute(
                """SELECT o.customer_id, s.owner_id FROM public.orders o JOIN public.shops s ON s.id = o.shop_id
                    WHERE o.id = %s""", (order_id,))
            row = await cur.fetchone()
            if row is None:
                raise NotFound("order not found")
            if not (user.is_admin or row[0] == user.id or (user.role == "shopkeeper" and row[1] == user.id)):
                raise Forbidden("not your order")
            body = await _order_json(conn, order_id)
        if body is None:
            raise NotFound("order not found")
        return body

    async def list(self, user: User, *, limit: int, cursor: str | None, status: str | None) -> bytes:
        parts = sections("orders.sql")
        params: dict[str, Any] = {"limit": limit, "user_id": user.id, "status": status}
        if user.is_admin:
            scope = ""
        elif user.role == "shopkeeper":
            scope = parts["scope_shopkeeper"]
        else:
            scope = parts["scope_customer"]
        if status is not None:
            scope += "\n" + parts["scope_status"]
        cursor_sql = ""
        if cursor:
            params["c_at"], params["c_id"] = decode_order_cursor(cursor)
            cursor_sql = parts["cursor"]
        query = _with_order_json(parts["list"].replace("/*SCOPE*/", scope).replace("/*CURSOR*/", cursor_sql))
        async with self.pool.connection() as conn:
            cur = conn.cursor(row_factory=tuple_row)
            await cur.execute(query.encode(), params)
            row = await cur.fetchone()
        assert row is not None
        page = json.loads(row[0])
        if page["next_cursor"]:
            page["next_cursor"] = encode_order_cursor(page["next_cursor"])
        return json.dumps(page, separators=(",", ":")).encode()

    async def set_status(self, user: User, order_id: uuid.UUID, status: str) -> bytes:
        for attempt in range(DEADLOCK_RETRIES):
            try:
                return await self._set_status_once(user, order_id, status)
            except psycopg.errors.DeadlockDetected:
                if attempt == DEADLOCK_RETRIES - 1:
                    raise
        raise AssertionError("unreachable")

    async def _set_status_once(self, user: User, order_id: uuid.UUID, status: str) -> bytes:
        restocked = cancelled = changed = False
        touched: set[uuid.UUID] = set()
        async with self.pool.transaction() as conn:
            cur = conn.cursor(row_factory=tuple_row)
            await cur.execute(
                """SELECT o.status, s.owner_id, o.total FROM public.orders o JOIN public.shops s ON s.id = o.shop_id
                        WHERE o.id = %s FOR NO KEY UPDATE OF o""", (order_id,))
            row = await cur.fetchone()
            if row is None:
                raise NotFound("order not found")
            current, owner, total = row
            if not (user.is_admin or (user.role == "shopkeeper" and owner == user.id)):
                raise Forbidden("only the shop's keeper or an admin can change an order")
            if status != current:
                if status not in TRANSITIONS.get(current, set()):
                    raise Conflict(f"an order that is {current} cannot become {status}")
                if status == "cancelled":
                    await cur.execute(
                        """SELECT variant_id, sum(quantity)::integer FROM public.order_items
                                WHERE order_id = %s AND variant_id IS NOT NULL AND quantity > 0
                                GROUP BY variant_id""", (order_id,))
                    back = {r[0]: r[1] for r in await cur.fetchall()}
                    if back:
                        touched = _touched(await _lock_stock(conn, list(back)))
                        ids = sorted(back)
                        await cur.execute(
                            """UPDATE public.product_variants v SET stock = v.stock + x.quantity,
                                          updated_at = now()
                                     FROM unnest(%s::uuid[], %s::integer[]) AS x(variant_id, quantity)
                                    WHERE v.id = x.variant_id""", (ids, [back[i] for i in ids]))
                        restocked = True
                await cur.execute("UPDATE public.orders SET status = %s, updated_at = now() WHERE id = %s",
                                  (status, order_id))
                cancelled = status == "cancelled"
                changed = True
            body = await _order_json(conn, order_id)
            assert body is not None
        if cancelled:  # committed
            ORDERS.labels("cancelled").inc()
            REVENUE.labels("cancelled").inc(float(total))
        lsn = await committed(self.pool) if changed else None
        if restocked:
            await self.cache.invalidate(CATALOG, shown_parts(touched), shown=shown_changed(touched), lsn=lsn)
        return body
