"""Access tokens: OAuth2 password flow (username = email or phone)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool
from fastapi.security import OAuth2PasswordRequestForm

from villager_shop.api import security
from villager_shop.api.deps import CurrentUser, Services
from villager_shop.api.errors import Unauthorized, clean_text
from villager_shop.api.models import ErrorOut, MeOut, TokenOut
from villager_shop.api.services import accounts

router = APIRouter(prefix="/api/auth", tags=["auth"])


@router.post("/token", response_model=TokenOut, responses={401: {"model": ErrorOut}})
async def token(svc: Services, form: Annotated[OAuth2PasswordRequestForm, Depends()]) -> TokenOut:
    """Exchange email (or phone) and password for a bearer token."""
    login = clean_text(form.username, "username") or ""
    password = clean_text(form.password, "password") or ""
    found = await accounts.credentials_for_login(svc.pool, login) if len(login) <= 320 else None
    # argon2 is CPU work: off the event loop; a dummy hash is checked when the user is unknown
    ok = await run_in_threadpool(security.verify_password, password, found[1] if found else None)
    if not ok or found is None:
        raise Unauthorized("wrong username or password")
    user_id, _, version = found
    return TokenOut(access_token=security.create_token(user_id, version, svc.config.jwt_secret, svc.config.jwt_ttl_s),
                    token_type="bearer", expires_in=svc.config.jwt_ttl_s)


@router.get("/me", response_model=MeOut, responses={401: {"model": ErrorOut}})
async def me(user: CurrentUser) -> MeOut:
    """Who the token belongs to."""
    return MeOut(id=user.id, role=user.role)
