"""`villager-shop sample create blog|library`: a legacy schema that is not villager_shop, with
messy data, for trying a plan file (plans/blog.toml, plans/library.toml) from an empty database."""

from __future__ import annotations

import json

import typer

from villager_shop.core.config import get_settings
from villager_shop.embedded import database_url
from villager_shop.samples.create import SAMPLES
from villager_shop.samples.create import create as create_sample

EXAMPLES = """Examples:
  villager-shop sample create library --rows 20000
  villager-shop migrate run --plan plans/library.toml && villager-shop migrate verify"""

app = typer.Typer(help="Sample legacy schemas for plan files: a blog, a library.", no_args_is_help=True)


@app.command("create", epilog=EXAMPLES)
def create(
    name: str = typer.Argument(..., help=f"the sample: {' or '.join(SAMPLES)}"),
    rows: int = typer.Option(20_000, "--rows", help="rows of the main table (posts, books); about twice as many "
                                                    "in the other (comments, loans)"),
    seed: int = typer.Option(42, "--seed", help="random seed: same seed and rows give identical data"),
    as_json: bool = typer.Option(False, "--json", help="print what was created as JSON"),
) -> None:
    """Create the sample's legacy tables and fill them (refuses, exit 2, if one of them exists)."""
    done = create_sample(database_url(get_settings()), name, rows=rows, seed=seed)
    if as_json:
        typer.echo(json.dumps({"sample": done.sample, "database": done.database, "rows": done.rows,
                               "seconds": done.seconds}))
        return
    counts = ", ".join(f"{n:,} {t}" for t, n in done.rows.items())
    typer.echo(f"sample {done.sample} created in {done.database}: {counts} ({done.seconds:.1f} s);"
               f" next: villager-shop migrate plan --plan plans/{done.sample}.toml")
