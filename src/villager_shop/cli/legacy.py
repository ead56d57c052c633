"""`villager-shop legacy`: the production schema as it is today."""

from __future__ import annotations

import typer

from villager_shop.core.config import get_settings
from villager_shop.core.urls import mask_url
from villager_shop.embedded import database_url
from villager_shop.legacy import schema

app = typer.Typer(help="Create the legacy (flat) villager_shop schema.", no_args_is_help=True)


@app.command()
def init(force: bool = typer.Option(False, "--force", help="drop existing shop tables first (destroys data)")) -> None:
    """Create exactly the legacy schema; refuses on a non-empty database unless --force."""
    url = database_url(get_settings())
    schema.init(url, force=force)
    typer.echo(f"legacy schema created in {mask_url(url)}")
