"""`villager-shop demo`: the whole story on a throwaway database, start to end."""

from __future__ import annotations

import typer
from rich.console import Console

from villager_shop.cli.generate import load_with_progress, render_report
from villager_shop.core.config import get_settings
from villager_shop.core.db import create_database, drop_database
from villager_shop.core.urls import mask_url, with_dbname
from villager_shop.embedded import database_url, redis_url
from villager_shop.legacy import schema

DEMO_DB = "villager_demo"


def demo(
    scale: float = typer.Option(1.0, help="legacy data scale (1 = 10k users, 50k products, 100k orders)"),
    seed: int = typer.Option(42, help="random seed of the generator"),
) -> None:
    """Start the servers, create a fresh `villager_demo` database with legacy data, and summarise it."""
    s = get_settings()
    admin = database_url(s)
    cache = redis_url(s)
    typer.echo(f"postgres: {mask_url(admin)}\nredis:    {mask_url(cache)}")
    drop_database(admin, DEMO_DB)
    create_database(admin, DEMO_DB)
    url = with_dbname(admin, DEMO_DB)
    schema.init(url)
    typer.echo(f"legacy schema created in {mask_url(url)}; generating legacy data (scale {scale:g}, seed {seed})")
    report = load_with_progress(url, scale=scale, seed=seed)
    render_report(report, Console())
