"""`villager-shop config`: the effective settings, secrets masked."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from villager_shop.cli import render
from villager_shop.core.config import get_settings
from villager_shop.core.urls import mask_url


def show_config(as_json: bool = typer.Option(False, "--json", help="machine-readable output")) -> None:
    """Show the effective configuration (passwords masked)."""
    s = get_settings()
    rows = {
        "DATABASE_URL": mask_url(s.database_url.get_secret_value()) if s.database_url else "(embedded)",
        "DATABASE_REPLICA_URLS": (", ".join(mask_url(u.strip()) for u in s.database_replica_urls.get_secret_value().split(","))
                                  if s.database_replica_urls else "(none: every read from DATABASE_URL)"),
        "REDIS_URL": mask_url(s.redis_url.get_secret_value()) if s.redis_url else "(embedded)",
        "VILLAGER_DATA_DIR": str(s.data_dir),
        "VILLAGER_BACKUP_DIR": str(s.backup_dir),
        "VILLAGER_LOCK_TIMEOUT_MS": str(s.villager_lock_timeout_ms),
        "VILLAGER_BATCH_SIZE": str(s.villager_batch_size),
        "VILLAGER_BATCH_PAUSE_MS": str(s.villager_batch_pause_ms),
        "VILLAGER_JWT_SECRET": "***" if s.villager_jwt_secret else "(generated, stored in data dir)",
        "VILLAGER_SCRATCH_URL": (mask_url(s.villager_scratch_url.get_secret_value()) if s.villager_scratch_url
                                 else "(a new database next to the shop's)"),
    }
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table("setting", "value", title="villager-shop configuration")
    for key, value in rows.items():
        table.add_row(key, value)
    render.console().print(table)
