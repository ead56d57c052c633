"""`villager-shop bench`: measurements that print JSON and compare with a reference from the same run."""

from __future__ import annotations

import json

import typer
from rich.console import Console

from villager_shop.core.config import get_settings
from villager_shop.embedded import database_url

app = typer.Typer(help="Benchmarks (JSON output; each compares with a reference measured in the same run).",
                  no_args_is_help=True)
err = Console(stderr=True, highlight=False)


@app.command()
def migration(
    scale: float = typer.Option(1.0, min=0.01, max=100, help="legacy data scale to generate"),
    seed: int = typer.Option(42, help="generator seed"),
    writer_threads: int = typer.Option(3, min=1, max=32, help="legacy writer threads during each run"),
    as_json: bool = typer.Option(False, "--json", help="print only the JSON result"),
) -> None:
    """The guide's migration vs ours on the same data, each under a live writer."""
    from villager_shop.bench.migration import admin_url_for, bench_migration

    url = database_url(get_settings())
    result = bench_migration(admin_url_for(url), scale=scale, seed=seed, writer_threads=writer_threads,
                             say=(lambda m: None) if as_json else (lambda m: err.print(m, markup=False)))
    typer.echo(json.dumps(result, indent=None if as_json else 2))
