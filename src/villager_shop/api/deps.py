"""Typed dependencies of the routes: the app's services and the current user."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer

from villager_shop.api import security
from villager_shop.api.cache.store import Cache
from villager_shop.api.config import ServiceConfig
from villager_shop.api.database import ShopPool
from villager_shop.api.errors import Forbidden, Unauthorized
from villager_shop.api.replicas import Reads
from villager_shop.api.services import accounts
from villager_shop.api.services.accounts import User
from villager_shop.api.services.catalog import Catalog
from villager_shop.api.services.health import Health
from villager_shop.api.services.monitoring import Monitor
from villager_shop.api.services.orders import Orders
from villager_shop.api.services.products import Products


@dataclass
class AppServices:
    config: ServiceConfig
    pool: ShopPool
    cache: Cache
    catalog: Catalog
    products: Products
    orders: Orders
    health: Health
    monitor: Monitor
    reads: Reads


async def get_services(request: Request) -> AppServices:
    # async on purpose: FastAPI runs a plain `def` dependency in a worker thread, on every request
    services: AppServices = request.app.state.services
    return services


Services = Annotated[AppServices, Depends(get_services)]

bearer = OAuth2PasswordBearer(tokenUrl="/api/auth/token", auto_error=False)


async def user_of_token(svc: AppServices, token: str | None, *, missing: str | None = None) -> User:
    """401 without a valid token (missing, forged, expired, or issued before a password change)."""
    if not token:
        raise Unauthorized(missing) if missing else Unauthorized()
    claims = security.decode_token(token, svc.config.jwt_secret)
    user = await accounts.user_for_token(svc.pool, claims.user_id, claims.version) if claims else None
    if user is None:
        raise Unauthorized("invalid or expired token")
    return user


async def admin_of_token(svc: AppServices, token: str | None, *, missing: str, denied: str) -> User:
    """An admin's valid token, or 401 (`missing` when there is none) / 403 (`denied`) for anyone else."""
    user = await user_of_token(svc, token, missing=missing)
    if not user.is_admin:
        raise Forbidden(denied)
    return user


async def current_user(svc: Services, token: Annotated[str | None, Depends(bearer)]) -> User:
    return await user_of_token(svc, token)


CurrentUser = Annotated[User, Depends(current_user)]


async def shop_manager(user: CurrentUser) -> User:
    """Authenticated and a shopkeeper or an admin (403 otherwise); ownership is checked per shop."""
    if user.role not in ("shopkeeper", "admin"):
        raise Forbidden("only shopkeepers and admins manage products")
    return user


ShopManager = Annotated[User, Depends(shop_manager)]
