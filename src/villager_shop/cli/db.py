"""`villager-shop db`: manage the embedded PostgreSQL and Redis (no-ops when URLs are configured)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer

from villager_shop.core.config import get_settings
from villager_shop.core.urls import mask_url
from villager_shop.embedded import database_url, embedded_postgres, embedded_redis, redis_url
from villager_shop.embedded.postgres import binary
from villager_shop.safety.pgtools import libpq_target

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


# What `db status` says of an embedded server, and whether that is a fault (exit 3). Stopped is not:
# the servers start on demand, and `db stop` stops them on purpose.
RUNNING, STOPPED, CRASHED, NOT_ANSWERING = "running", "stopped", "crashed", "not answering"
FAULTS = {CRASHED, NOT_ANSWERING}


def server_state(pid: int | None, answers: bool, pidfile: Path) -> str:
    """running; stopped (no process, no pid file: stopped cleanly or never started); crashed (no
    process, but the pid file a clean stop removes is still there); not answering (a process that
    does not answer)."""
    if pid is not None:
        return RUNNING if answers else NOT_ANSWERING
    return CRASHED if pidfile.exists() else STOPPED


@app.command()
def status(as_json: bool = typer.Option(False, "--json", help="machine-readable output")) -> None:
    """Say whether each server runs. Stopped is fine (exit 0: they start on demand); exit 3 when one
    crashed (its pid file left behind) or runs but does not answer."""
    s = get_settings()
    pg = embedded_postgres(s)
    rd = embedded_redis(s)
    pg_pid = None if s.database_url else pg.pid()
    rd_pid = None if s.redis_url else rd.pid()
    info = {
        "postgres": {
            "mode": "external" if s.database_url else "embedded",
            "state": RUNNING if s.database_url else server_state(pg_pid, pg_pid is not None and pg.is_ready(),
                                                                  pg.pgdata / "postmaster.pid"),
            "pid": pg_pid,
            "data_dir": None if s.database_url else str(pg.pgdata),
        },
        "redis": {
            "mode": "external" if s.redis_url else "embedded",
            "state": RUNNING if s.redis_url else server_state(rd_pid, rd_pid is not None and rd.ping(), rd.pidfile),
            "pid": rd_pid,
        },
    }
    for d in info.values():
        d["running"] = d["state"] == RUNNING
    if as_json:
        typer.echo(json.dumps(info, indent=2))
    else:
        for name, d in info.items():
            hint = " (starts on demand)" if d["state"] == STOPPED else ""
            typer.echo(f"{name}: {d['mode']}, {d['state']}{hint}" + (f", pid {d['pid']}" if d.get("pid") else ""))
    if any(d["state"] in FAULTS for d in info.values()):
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
    # The password goes in psql's environment, never on its command line (visible in `ps`).
    target, env = libpq_target(database_url(get_settings()))
    exe = str(binary("psql"))
    os.execve(exe, [exe, target, *ctx.args], env)
