"""Resolve the servers to use: the configured URLs, or the embedded ones started on demand."""

from __future__ import annotations

from villager_shop.core.config import Settings
from villager_shop.core.db import create_database, database_exists
from villager_shop.core.errors import ConfigError
from villager_shop.core.pooler import shares_server_connections
from villager_shop.core.urls import checked_postgres_url, checked_redis_url
from villager_shop.embedded.postgres import EmbeddedPostgres
from villager_shop.embedded.redis import EmbeddedRedis


def embedded_postgres(settings: Settings) -> EmbeddedPostgres:
    return EmbeddedPostgres(settings.data_dir)


def embedded_redis(settings: Settings) -> EmbeddedRedis:
    return EmbeddedRedis(settings.data_dir)


def database_url(settings: Settings, dbname: str = "villager_shop") -> str:
    """The URL of the shop database: DATABASE_URL, or the embedded server's `villager_shop` db."""
    if settings.database_url is not None:
        return checked_postgres_url(settings.database_url.get_secret_value())
    server = embedded_postgres(settings)
    admin = server.start()
    if not database_exists(admin, dbname):
        create_database(admin, dbname)
    return server.url(dbname)


def direct_database_url(settings: Settings, dbname: str = "villager_shop") -> str:
    """The server itself: DATABASE_DIRECT_URL, else the same as `database_url`."""
    if settings.database_direct_url is not None:
        return checked_postgres_url(settings.database_direct_url.get_secret_value(), "DATABASE_DIRECT_URL")
    return database_url(settings, dbname)


def session_database_url(settings: Settings, what: str, dbname: str = "villager_shop") -> str:
    """The URL for work that needs a session of its own (a run lock, DDL outside a transaction,
    pg_dump, LISTEN): the direct URL. Refused before anything is changed when only a transaction
    pooler was given, since session state there would reach other clients of the pool."""
    url = direct_database_url(settings, dbname)
    if shares_server_connections(url):
        name = "DATABASE_DIRECT_URL" if settings.database_direct_url is not None else "DATABASE_URL"
        raise ConfigError(f"{what} needs a session of its own, and {name} is a transaction pooler (its server"
                          " connections are shared between clients): set DATABASE_DIRECT_URL to the server itself"
                          " (Prisma's directUrl), or a session-mode pool")
    return url


def redis_url(settings: Settings) -> str:
    if settings.redis_url is not None:
        return checked_redis_url(settings.redis_url.get_secret_value())
    return embedded_redis(settings).start()
