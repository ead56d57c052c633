"""Orders: customers place and read their own; shopkeepers read and progress their shops'."""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Response

from villager_shop.api.deps import CurrentUser, Services
from villager_shop.api.errors import Invalid
from villager_shop.api.models import ErrorOut, OrderCreate, OrderOut, OrderPage, OrderStatusUpdate
from villager_shop.api.routes._json import raw_json

router = APIRouter(prefix="/api/orders", tags=["orders"])

ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorOut} for status in (400, 401, 403, 404, 409, 422)}


@router.post("", status_code=201, response_model=OrderOut, responses=ERRORS)
async def place_order(
    svc: Services, user: CurrentUser, body: OrderCreate,
    idempotency_key: Annotated[str | None, Header(max_length=200, description="retry-safe key")] = None,
) -> Response:
    """Place an order (all items of one shop). Prices and totals come from the database; stock is
    reserved atomically (409 when short). A retry with the same Idempotency-Key returns the same order."""
    if idempotency_key is not None and (not idempotency_key.strip() or not idempotency_key.isprintable()):
        raise Invalid("Idempotency-Key must be printable text")
    order, replayed = await svc.orders.place(user, [(i.variant_id, i.quantity) for i in body.items],
                                             idempotency_key)
    return raw_json(order, 201, headers={"Idempotent-Replayed": "true"} if replayed else None)


@router.get("", response_model=OrderPage, responses=ERRORS)
async def list_orders(
    svc: Services, user: CurrentUser,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    status: Annotated[Literal["pending", "confirmed", "delivered", "cancelled"] | None, Query()] = None,
) -> Response:
    """Customers: their orders. Shopkeepers: their shops' orders. Admins: all. Newest first."""
    return raw_json(await svc.orders.list(user, limit=limit, cursor=cursor, status=status))


@router.get("/{order_id}", response_model=OrderOut, responses=ERRORS)
async def get_order(svc: Services, user: CurrentUser, order_id: uuid.UUID) -> Response:
    return raw_json(await svc.orders.get(user, order_id))


@router.patch("/{order_id}", response_model=OrderOut, responses=ERRORS)
async def update_order(svc: Services, user: CurrentUser, order_id: uuid.UUID, body: OrderStatusUpdate) -> Response:
    """pending -> confirmed -> delivered, or -> cancelled (stock returned); by the shop's keeper or an admin."""
    return raw_json(await svc.orders.set_status(user, order_id, body.status))
