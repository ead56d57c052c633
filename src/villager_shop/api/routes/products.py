"""The catalog: listing, product pages, and the shopkeepers' product and variant edits."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response

from villager_shop.api.deps import Services, ShopManager
from villager_shop.api.errors import NotFound
from villager_shop.api.models import (
    ErrorOut,
    ProductCreate,
    ProductDetailOut,
    ProductPage,
    ProductUpdate,
    VariantCreate,
    VariantUpdate,
)
from villager_shop.api.routes._json import raw_json
from villager_shop.api.services.catalog import MAX_LIMIT

router = APIRouter(prefix="/api", tags=["catalog"])

AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorOut}, 401: {"model": ErrorOut}, 403: {"model": ErrorOut}, 404: {"model": ErrorOut},
    422: {"model": ErrorOut}}


@router.get("/products", response_model=ProductPage, responses={400: {"model": ErrorOut}})
async def list_products(
    svc: Services,
    category: Annotated[str | None, Query(min_length=1, max_length=2048, description="category slug")] = None,
    shop: Annotated[uuid.UUID | None, Query(description="shop id")] = None,
    q: Annotated[str | None, Query(max_length=100, description="text in the product name")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 20,
    cursor: Annotated[str | None, Query(max_length=200, description="next_cursor of the previous page")] = None,
) -> Response:
    """Available products, best rated first; keyset pagination with `next_cursor`."""
    body = await svc.catalog.list_products(category=category, shop=shop, q=q, limit=limit, cursor=cursor)
    return raw_json(body)


@router.get("/products/{product_id}", response_model=ProductDetailOut, responses={404: {"model": ErrorOut}})
async def get_product(svc: Services, product_id: uuid.UUID) -> Response:
    """A listed product with its category, active variants, and its shop with the shop's address."""
    body = await svc.catalog.product(product_id)
    if body is None:
        raise NotFound("product not found")
    return raw_json(body)


async def _owner_view(svc: Services, product_id: uuid.UUID, status_code: int = 200) -> Response:
    body = await svc.catalog.product(product_id, include_hidden=True)
    if body is None:
        raise NotFound("product not found")
    return raw_json(body, status_code)


@router.post("/products", status_code=201, response_model=ProductDetailOut, responses=AUTH_ERRORS)
async def create_product(svc: Services, user: ShopManager, body: ProductCreate) -> Response:
    """A new product of one of your shops, with its default variant (price, stock)."""
    product_id = await svc.products.create(
        user, shop_id=body.shop_id, name=body.name, description=body.description, category=body.category,
        price=body.price, stock=body.stock, is_available=body.is_available, variant_name=body.variant_name)
    return await _owner_view(svc, product_id, 201)


@router.patch("/products/{product_id}", response_model=ProductDetailOut, responses=AUTH_ERRORS)
async def update_product(svc: Services, user: ShopManager, product_id: uuid.UUID, body: ProductUpdate) -> Response:
    """Change name, description, category or availability of a product of your shop."""
    await svc.products.update(user, product_id, body.changes())
    return await _owner_view(svc, product_id)


@router.post("/products/{product_id}/variants", status_code=201, response_model=ProductDetailOut,
             responses=AUTH_ERRORS)
async def add_variant(svc: Services, user: ShopManager, product_id: uuid.UUID, body: VariantCreate) -> Response:
    """Another variant (size, pack...) of a product of your shop."""
    await svc.products.add_variant(user, product_id, name=body.name, price=body.price, stock=body.stock,
                                   sku=body.sku, sort_order=body.sort_order, is_active=body.is_active)
    return await _owner_view(svc, product_id, 201)


@router.patch("/variants/{variant_id}", response_model=ProductDetailOut, responses=AUTH_ERRORS)
async def update_variant(svc: Services, user: ShopManager, variant_id: uuid.UUID, body: VariantUpdate) -> Response:
    """Change price, stock, is_active, name or sort order of a variant; answers with its product."""
    product_id = await svc.products.update_variant(user, variant_id, body.changes())
    return await _owner_view(svc, product_id)
