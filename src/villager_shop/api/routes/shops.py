"""Categories and shops."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Response

from villager_shop.api.deps import Services
from villager_shop.api.errors import NotFound
from villager_shop.api.models import CategoryOut, ErrorOut, ShopOut
from villager_shop.api.routes._json import raw_json

router = APIRouter(prefix="/api", tags=["catalog"])


@router.get("/categories", response_model=list[CategoryOut])
async def list_categories(svc: Services) -> Response:
    """Active categories: names with a letter first, by name ignoring case, then names without one."""
    return raw_json(await svc.catalog.categories())


@router.get("/shops/{shop_id}", response_model=ShopOut, responses={404: {"model": ErrorOut}})
async def get_shop(svc: Services, shop_id: uuid.UUID) -> Response:
    """A shop with its address and how many products it lists."""
    body = await svc.catalog.shop(shop_id)
    if body is None:
        raise NotFound("shop not found")
    return raw_json(body)
