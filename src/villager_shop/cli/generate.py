"""`villager-shop generate`: fill the legacy schema with realistic, deterministic, messy data."""

from __future__ import annotations

import json

import typer

from villager_shop.cli import render
from villager_shop.core.config import get_settings
from villager_shop.embedded import database_url
from villager_shop.legacy import generate as gen

EXAMPLES = """Examples:
  villager-shop legacy init && villager-shop generate --scale 0.1
  villager-shop generate --force --seed 7 --json > report.json"""


def generate(
    scale: float = typer.Option(1.0, "--scale", help="data size: 1 = 10k users, 1k shops, 50k products, 100k orders"),
    seed: int = typer.Option(42, "--seed", help="random seed: same seed and scale give identical rows"),
    force: bool = typer.Option(False, "--force", help="truncate the legacy tables first (destroys their rows)"),
    as_json: bool = typer.Option(False, "--json", help="print the report as JSON on stdout (no progress bar)"),
) -> None:
    """Fill the empty legacy tables with realistic, deterministic, deliberately messy data (COPY streaming)."""
    url = database_url(get_settings())
    if as_json:
        report = gen.generate(url, scale=scale, seed=seed, force=force)
        typer.echo(json.dumps(report.to_dict(), indent=2))
        return
    report = render.load_with_progress(url, scale=scale, seed=seed, force=force)
    render.generator_report(report, render.console())
