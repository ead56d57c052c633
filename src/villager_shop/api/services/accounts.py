"""Users of the service: the legacy `users` table (role) plus our own `villager_service.credentials`
(password hash). Never ALTERs the legacy tables."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import tuple_row

from villager_shop.api import security
from villager_shop.api.database import ShopPool
from villager_shop.api.queries import load
from villager_shop.core.errors import ConfigError, RefusedError, VillagerError

SCHEMA_LOCK = (742300, 7)
MIN_PASSWORD = 8


@dataclass(frozen=True)
class User:
    id: uuid.UUID
    role: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def service_schema_ready(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute("SELECT to_regclass('villager_service.credentials') IS NOT NULL"
                       " AND to_regclass('villager_service.idempotency_keys') IS NOT NULL").fetchone()
    return bool(row and row[0])


def ensure_service_schema(conn: psycopg.Connection[Any], lock_timeout_ms: int = 2000) -> None:
    """Create the service's tables if missing (short lock_timeout: never queue behind the live app)."""
    if service_schema_ready(conn):
        return
    if conn.execute("SELECT to_regclass('public.users') IS NULL").fetchone() == (True,):
        raise VillagerError("not a villager_shop database: table users is missing")
    with conn.transaction():
        conn.execute(f"SET LOCAL lock_timeout = '{int(lock_timeout_ms)}ms'".encode())
        conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", SCHEMA_LOCK)
        try:
            conn.execute(load("service_schema.sql").encode())
        except psycopg.errors.LockNotAvailable as exc:
            raise RefusedError("could not create villager_service tables: users is locked by a long"
                               " transaction (lock_timeout); retry later") from exc


def set_password(conn: psycopg.Connection[Any], login: str, password: str, role: str | None = None) -> uuid.UUID:
    """Set the password (and optionally the role) of the user with this email (or phone)."""
    if len(password) < MIN_PASSWORD:
        raise ConfigError(f"password too short (at least {MIN_PASSWORD} characters)")
    if "\x00" in password:
        raise ConfigError("password contains a NUL character")
    if role is not None and role not in security.ROLES:
        raise ConfigError(f"role must be one of {', '.join(security.ROLES)}")
    ensure_service_schema(conn)
    hashed = security.hash_password(password)
    with conn.transaction():
        cur = conn.cursor(row_factory=tuple_row)
        rows = cur.execute("SELECT id FROM public.users WHERE email = %s OR phone = %s LIMIT 2",
                           (login, login)).fetchall()
        if not rows:
            raise VillagerError(f"no user with email or phone {login!r}")
        if len(rows) > 1:
            raise VillagerError(f"{login!r} matches several users (email of one, phone of another)")
        user_id: uuid.UUID = rows[0][0]
        if role is not None:
            conn.execute("UPDATE public.users SET role = %s, updated_at = now() WHERE id = %s AND role <> %s",
                         (role, user_id, role))
        conn.execute(
            """INSERT INTO villager_service.credentials (user_id, password_hash) VALUES (%s, %s)
               ON CONFLICT (user_id) DO UPDATE
                  SET password_hash = EXCLUDED.password_hash,
                      token_version = villager_service.credentials.token_version + 1, updated_at = now()""",
            (user_id, hashed))
    return user_id


async def credentials_for_login(pool: ShopPool, login: str) -> tuple[uuid.UUID, str, int] | None:
    """(user id, password hash, token version) of the user whose email or phone is `login`."""
    async with pool.connection() as conn:
        cur = conn.cursor(row_factory=tuple_row)
        await cur.execute(
            """SELECT u.id, c.password_hash, c.token_version
                 FROM public.users u JOIN villager_service.credentials c ON c.user_id = u.id
                WHERE u.email = %(login)s OR u.phone = %(login)s
                LIMIT 2""", {"login": login})
        rows = await cur.fetchall()
    if len(rows) != 1:
        return None
    return rows[0][0], rows[0][1], rows[0][2]


async def user_for_token(pool: ShopPool, user_id: uuid.UUID, version: int) -> User | None:
    async with pool.connection() as conn:
        cur = conn.cursor(row_factory=tuple_row)
        await cur.execute(
            """SELECT u.id, u.role FROM public.users u
                 JOIN villager_service.credentials c ON c.user_id = u.id
                WHERE u.id = %s AND c.token_version = %s""", (user_id, version))
        row = await cur.fetchone()
    return User(row[0], row[1]) if row else None
