"""Settings of the shop service (`villager-shop serve`), from the environment (prefix `VILLAGER_`).

Kept apart from `core.config.Settings` (shared by every tool) because only the service reads them;
`ServiceConfig` is the resolved form an app is built from (URLs known, JWT secret loaded)."""

from __future__ import annotations

import os
import secrets
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from psycopg.conninfo import conninfo_to_dict
from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from villager_shop.core.config import Settings, load_settings
from villager_shop.core.errors import ConfigError
from villager_shop.core.urls import checked_postgres_url

MonitoringAccess = Literal["admin_or_local", "admin", "local", "public"]


class ServiceOptions(BaseModel):
    """The service's knobs, declared once: read from the environment by ServiceSettings, carried
    resolved by ServiceConfig."""

    cache_prefix: str = Field(default="villager", min_length=1, max_length=64, description="Redis key prefix")
    cache_ttl_s: int = Field(default=300, ge=1, le=86_400, description="TTL of cached listings and pages")
    cache_enabled: bool = Field(default=True, description="false = always read PostgreSQL")
    redis_timeout_ms: int = Field(default=100, ge=5, le=5_000, description="Redis connect and read timeout")
    redis_breaker_s: float = Field(default=3.0, ge=0.1, le=300, description="skip Redis this long after an error")
    cache_lease_ms: int = Field(default=1000, ge=0, le=10_000,
                                description="how long a worker answers its own copies without asking Redis after"
                                            " its last heartbeat (writes wait for it at most this long when a"
                                            " worker does not acknowledge); 0 = check every hit in Redis")
    cache_warm: int = Field(default=2, ge=0, le=20,
                            description="listing pages each worker puts in the cache before it serves: the first"
                                        " N pages of the unfiltered listing and of every active category, and the"
                                        " categories (a start with an empty cache then sends no stampede of"
                                        " misses to PostgreSQL); 0 = none")
    cache_warm_s: float = Field(default=30.0, ge=1, le=600,
                                description="the most a worker spends warming the cache before it serves anyway")
    db_pool_min: int = Field(default=2, ge=1, le=100, description="connections kept open per worker")
    db_pool_max: int = Field(default=10, ge=1, le=500, description="connections per worker at most")
    db_pool_timeout_s: float = Field(default=5.0, ge=0.1, le=120, description="wait for a free connection")
    db_connect_timeout_s: int = Field(default=3, ge=1, le=60, description="connect_timeout of each connection")
    statement_timeout_ms: int = Field(default=5_000, ge=100, le=600_000, description="statement_timeout")
    replica_max_lag_ms: int = Field(default=1000, ge=100, le=600_000,
                                    description="catalog reads go to a standby (DATABASE_REPLICA_URLS) only while it"
                                                " has replayed what the primary had written this long ago")
    health_metrics_ttl_s: float = Field(default=5.0, ge=0, le=300, description="cache of /api/health metrics")
    delivery_fee: Decimal = Field(default=Decimal("10.00"), ge=0, le=10_000, decimal_places=2,
                                  description="flat delivery fee added to each order")
    jwt_ttl_s: int = Field(default=3600, ge=60, le=30 * 86_400, description="lifetime of an access token")
    monitoring_access: MonitoringAccess = Field(
        default="admin_or_local",
        description="who sees /dashboard and /api/monitoring/*: admin_or_local (an admin's token, or a client"
                    " on 127.0.0.1/::1), admin, local, or public")
    monitoring_interval_s: float = Field(default=5.0, ge=0.5, le=60, description="sampling period of the"
                                         " database views, migration state and dashboard history")
    monitoring_orders_ttl_s: float = Field(default=60.0, ge=1, le=3600, description="cache of the orders"
                                           " aggregates (orders per hour, revenue per day)")


class ServiceSettings(BaseSettings, ServiceOptions):
    model_config = SettingsConfigDict(env_prefix="VILLAGER_", env_file=".env", env_file_encoding="utf-8",
                                      extra="ignore")


def service_settings(**values: Any) -> ServiceSettings:
    """ServiceSettings from the environment (`values` win); an invalid value is a ConfigError naming its variable."""
    return load_settings(ServiceSettings, **values)


class ServiceConfig(ServiceOptions):
    """Everything an app instance needs, resolved (URLs known, JWT secret loaded)."""

    model_config = ConfigDict(frozen=True)

    database_url: str
    redis_url: str | None
    jwt_secret: str
    # the server itself, for the catalog listener's LISTEN; None: database_url (unless a pooler)
    database_direct_url: str | None = None
    # streaming standbys the catalog reads may go to (DATABASE_REPLICA_URLS)
    replica_urls: tuple[str, ...] = ()
    extra: dict[str, str] = Field(default_factory=dict)

    @classmethod
    def from_env(cls, settings: Settings | None = None, service: ServiceSettings | None = None) -> ServiceConfig:
        """Resolve from the environment: DATABASE_URL (DATABASE_DIRECT_URL)/REDIS_URL or the embedded servers."""
        from villager_shop.embedded import database_url, direct_database_url, redis_url

        settings = settings or load_settings(Settings)
        service = service or service_settings()
        return cls(
            database_url=database_url(settings),
            database_direct_url=direct_database_url(settings) if settings.database_direct_url is not None else None,
            redis_url=redis_url(settings) if service.cache_enabled else None,
            jwt_secret=jwt_secret(settings),
            replica_urls=replica_urls(settings),
            **service.model_dump(),
        )


def replica_urls(settings: Settings) -> tuple[str, ...]:
    """DATABASE_REPLICA_URLS split at its commas, each a PostgreSQL URL naming one server (a
    multi-host URL would not say which host a lag was measured on). Never quoted back: it may hold
    a password."""
    if settings.database_replica_urls is None:
        return ()
    raw = settings.database_replica_urls.get_secret_value()
    if not raw.strip():
        return ()
    urls: list[str] = []
    for n, part in enumerate(raw.split(","), start=1):
        what = f"DATABASE_REPLICA_URLS (URL {n})"
        if not part.strip():
            raise ConfigError(f"{what} is empty: separate the URLs with single commas")
        url = checked_postgres_url(part, what)
        if "," in str(conninfo_to_dict(url).get("host") or ""):
            raise ConfigError(f"{what} names several hosts: give each standby a URL of its own")
        if url in urls:
            raise ConfigError(f"{what} is given twice")
        urls.append(url)
    return tuple(urls)


SECRET_FILE = "jwt-secret"


def jwt_secret(settings: Settings) -> str:
    """VILLAGER_JWT_SECRET, or a random key generated once and kept in the data dir (mode 600)."""
    if settings.villager_jwt_secret is not None:
        value = settings.villager_jwt_secret.get_secret_value()
        if len(value) < 32:
            raise ConfigError("VILLAGER_JWT_SECRET must be at least 32 characters")
        return value
    return _stored_secret(settings.data_dir / SECRET_FILE)


def _stored_secret(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise ConfigError(f"{path} is readable by others (mode {mode:o}); chmod 600 it") from None
        value = path.read_text(encoding="ascii").strip()
        if len(value) < 32:
            raise ConfigError(f"{path} holds no usable JWT secret; delete it to generate a new one") from None
        return value
    value = secrets.token_urlsafe(48)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(value + "\n")
    return value
