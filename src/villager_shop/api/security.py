"""Passwords (argon2 via pwdlib) and access tokens (PyJWT, HS256)."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from functools import cache
from typing import Any

import jwt
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

ALGORITHM = "HS256"
ISSUER = "villager-shop"
ROLES = ("customer", "shopkeeper", "admin")


@cache
def password_hash() -> PasswordHash:
    return PasswordHash((Argon2Hasher(),))


@cache
def _dummy_hash() -> str:
    return password_hash().hash("not-a-password-of-anyone")


def hash_password(password: str) -> str:
    return password_hash().hash(password)


def verify_password(password: str, hashed: str | None) -> bool:
    """Constant work whether or not the user exists (no user enumeration by timing)."""
    if hashed is None:
        password_hash().verify(password, _dummy_hash())
        return False
    try:
        return bool(password_hash().verify(password, hashed))
    except Exception:  # a corrupt hash is a failed login, not a server error
        return False


@dataclass(frozen=True)
class TokenClaims:
    user_id: uuid.UUID
    version: int


def create_token(user_id: uuid.UUID, version: int, secret: str, ttl_s: int) -> str:
    now = int(time.time())
    payload: dict[str, Any] = {"sub": str(user_id), "ver": version, "iat": now, "exp": now + ttl_s, "iss": ISSUER}
    return jwt.encode(payload, secret, algorithm=ALGORITHM)


def decode_token(token: str, secret: str) -> TokenClaims | None:
    """The claims of a valid token, or None (expired, forged, malformed)."""
    try:
        payload = jwt.decode(token, secret, algorithms=[ALGORITHM], issuer=ISSUER,
                             options={"require": ["sub", "exp", "iat", "ver"]})
        return TokenClaims(uuid.UUID(str(payload["sub"])), int(payload["ver"]))
    except (jwt.PyJWTError, ValueError, TypeError, KeyError):
        return None
