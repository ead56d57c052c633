"""Resolve the servers to use: the configured URLs, or the embedded ones started on demand."""

from __future__ import annotations

from villager_shop.core.config import Settings
from villager_shop.core.urls import checked_postgres_url
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
    from villager_shop.core.db import create_database, database_exists

    server = embedded_postgres(settings)
    admin = server.start()
    if not database_exists(admin, dbname):
        create_database(admin, dbname)
    return server.url(dbname)


def redis_url(settings: Settings) -> str:
    if settings.redis_url is not None:
        return settings.redis_url.get_secret_value()
    return embedded_redis(settings).start()
