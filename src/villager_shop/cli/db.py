"""`villager-shop db`: manage the embedded PostgreSQL and Redis (no-ops when URLs are configured)."""

from __future__ import annotations

import json
import os

import typer

from villager_shop.core.config import get_settings
from villager_shop.core.urls import mask_url
from villager_shop.embedded import database_url, embedded_postgres, embedded_redis, redis_url
from villager_shop.embedded.postgres import binary

EXAMPLES = """Examples:
  villager-shop db status          running or stopped (either is fine: they start on demand)
  villager-shop db stop            after a demo, to free the memory they hold
  villager-shop db psql -c 'SELECT count(*) FROM users'"""

app = typer.Typer(help="Start, stop and inspect the embedded PostgreSQL and Redis.", epilog=EXAMPLES,
                  no_args_is_help=True)


@app.command()
def start() -> None:
    """Start the embedded servers (or reuse running ones); safe to run twice or after a crash."""
    s = get_settings()
    db = database_url(s)
    cache = redis_url(s)
    typer.echo(f"postgres: {mask_url(db)}")
    typer.echo(f"redis:    {mask_url(cache)}")


@app.command()
def stop() -> None:
    """Stop the embedded servers."""
    s = get_settings()
    if s.database_url is None:
        stopped = embedded_postgres(s).stop()
        typer.echo("postgres: stopped" if stopped else "postgres: was not running")
    else:
        typer.echo("postgres: external server (DATABASE_URL), not managed here")
    if s.redis_url is None:
        stopped = embedded_redis(s).stop()
        typer.echo("redis:    stopped" if stopped else "redis:    was not running")
    else:
        typer.echo("redis:    external server (REDIS_URL), not managed here")


@app.command()
def status(as_json: bool = typer.Option(False, "--json", help="machine-readable output")) -> None:
    """Say whether each server runs; exit 3 when one that should run does not."""
    s = get_settings()
    pg = embedded_postgres(s)
    rd = embedded_redis(s)
    info = {
        "postgres": {
            "mode": "external" if s.database_url else "embedded",
            "running": True if s.database_url else pg.is_ready(),
            "pid": None if s.database_url else pg.pid(),
            "data_dir": None if s.database_url else str(pg.pgdata),
        },
        "redis": {
            "mode": "external" if s.redis_url else "embedded",
            "running": True if s.redis_url else rd.ping(),
            "pid": None if s.redis_url else rd.pid(),
        },
    }
    if as_json:
        typer.echo(json.dumps(info, indent=2))
    else:
        for name, d in info.items():
            state = "running" if d["running"] else "stopped"
            typer.echo(f"{name}: {d['mode']}, {state}" + (f", pid {d['pid']}" if d.get("pid") else ""))
    if not all(d["running"] for d in info.values()):
        raise typer.Exit(3)


@app.command()
def url(
    redis: bool = typer.Option(False, "--redis", help="the Redis URL instead"),
    show_password: bool = typer.Option(False, "--show-password", help="print the password too (for scripts)"),
) -> None:
    """Print the database URL (starting the embedded server if needed)."""
    s = get_settings()
    value = redis_url(s) if redis else database_url(s)
    typer.echo(value if show_password else mask_url(value))


# -h is psql's (its host option): only --help shows this command's help.
@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True,
                               "help_option_names": ["--help"]})
def psql(ctx: typer.Context) -> None:
    """Open psql on the shop database (extra arguments go to psql)."""
    target = database_url(get_settings())
    exe = str(binary("psql"))
    os.execv(exe, [exe, target, *ctx.args])
