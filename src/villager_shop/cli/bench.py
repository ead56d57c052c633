"""`villager-shop bench`: measurements that print JSON and compare with a reference from the same run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from villager_shop.bench.migration import WRITER_RATE
from villager_shop.cli import render
from villager_shop.core.config import get_settings
from villager_shop.core.errors import ConfigError
from villager_shop.embedded import database_url, direct_database_url, session_database_url
from villager_shop.embedded.replica import StreamingPair, bindir_of
from villager_shop.migration.planfile import bundled
from villager_shop.migration.planfile.spec import PlanError

app = typer.Typer(help="Benchmarks (JSON output; each compares with a reference measured in the same run).",
                  no_args_is_help=True)
err = render.console(stderr=True)


@app.command()
def migration(
    scale: float = typer.Option(1.0, min=0.01, max=100, help="legacy data scale to generate"),
    seed: int = typer.Option(42, help="generator seed"),
    writer_threads: int = typer.Option(3, min=1, max=32, help="legacy writer threads during each run"),
    writer_rate: float = typer.Option(WRITER_RATE, min=0, help="writes per second of all writer threads, due on a"
                                      " fixed schedule whether or not the database keeps up (0 = closed loop: each"
                                      " thread writes again as soon as its last write returns)"),
    rounds: int = typer.Option(1, min=1, max=50, help="run both strategies alternately this many times and"
                               " report the median round (a shared machine's speed drifts)"),
    replica: bool = typer.Option(False, "--replica", help="run on a throwaway primary + streaming standby of the"
                                 " server's version, measure the standby's lag, and run ours with and without"
                                 " the throttle"),
    scales: str = typer.Option("", "--scales", help="comma-separated scales (e.g. 2,20): run at each, then report"
                               " how ours grew from the first to the last against the goals (--scale is ignored)"),
    guide: bool = typer.Option(True, "--guide/--no-guide", help="also run the guide's migration (the reference)"),
    reuse_data: bool = typer.Option(False, "--reuse-data", help="keep the generated legacy data for the next run,"
                                    " and use data a previous run kept (database PREFIX_legacy_sSCALE_seedSEED)"),
    db_prefix: str = typer.Option("vbench", "--db-prefix", help="prefix of the databases the benchmark creates"),
    plan: str = typer.Option("", "--plan", metavar="FILE", help="ours runs this plan file (migrate run --plan FILE;"
                             " default plans/villager.toml); `built-in`: the Python-coded villager_shop plan"),
    as_json: bool = typer.Option(False, "--json", help="print only the JSON result"),
) -> None:
    """The guide's migration vs ours on the same data, each under a live writer; ours taken apart by
    step, with the migrator's peak memory."""
    from villager_shop.bench.migration import admin_url_for, bench_migration, plan_name

    if not db_prefix.replace("_", "").isalnum() or not db_prefix[0].isalpha():
        raise ConfigError("--db-prefix: letters, digits and underscores, starting with a letter")
    try:
        scale_list = [float(x) for x in scales.split(",") if x.strip()]
    except ValueError as exc:
        raise ConfigError(f"--scales: expected numbers separated by commas, got {scales!r}") from exc
    if scales and (len(scale_list) < 2 or any(not 0.01 <= x <= 100 for x in scale_list)):
        raise ConfigError("--scales: at least two scales, each between 0.01 and 100")
    if bundled.is_built_in(plan):
        plan = bundled.BUILT_IN
    else:
        plan = plan or bundled.default_path()
        try:
            plan_name(plan)
        except PlanError as exc:
            raise ConfigError(f"--plan: {exc}") from exc
        plan = str(Path(plan).resolve())
    options: dict[str, Any] = {"seed": seed, "writer_threads": writer_threads, "writer_rate": writer_rate or None, "rounds": rounds,
               "guide": guide, "reuse_data": reuse_data, "db_prefix": db_prefix, "plan": plan or None}
    settings = get_settings()
    url, direct = database_url(settings), session_database_url(settings, "bench migration")
    # DATABASE_URL a pooler and DATABASE_DIRECT_URL the server: the writers go through the pooler.
    pooler = url if direct != url else None
    say = (lambda m: None) if as_json else (lambda m: err.print(m, markup=False))
    if replica:
        bindir = bindir_of(direct)
        if bindir is None:
            raise ConfigError("--replica needs the server's binaries (initdb, pg_basebackup): read as a superuser"
                              " from pg_config, or installed under /usr/lib/postgresql/MAJOR/bin")
        if pooler:
            raise ConfigError("--replica runs on a pair of its own: unset DATABASE_DIRECT_URL (no pooler in front)")
        if scale_list:
            raise ConfigError("--replica runs one scale: use --scale")
        say(f"starting a primary and a streaming standby ({bindir}) …")
        pair = StreamingPair(bindir, durable=True).start()
        try:
            result = bench_migration(pair.primary_url(), scale=scale, standby_url=pair.standby_url(), say=say,
                                     **options)
        finally:
            pair.stop()
        typer.echo(json.dumps(result, indent=None if as_json else 2))
        return
    if scale_list:
        from villager_shop.bench.migration_scales import bench_scales

        result = bench_scales(admin_url_for(direct), scale_list, pooler_url=pooler, say=say, **options)
    else:
        result = bench_migration(admin_url_for(direct), scale=scale, pooler_url=pooler, say=say, **options)
    typer.echo(json.dumps(result, indent=None if as_json else 2))


@app.command()
def verify(
    scale: float = typer.Option(1.0, min=0.01, max=100, help="legacy data scale to generate"),
    seed: int = typer.Option(42, help="generator seed"),
    as_json: bool = typer.Option(False, "--json", help="print only the JSON result"),
) -> None:
    """`migrate verify` against `migrate run` on the same fresh data, no writer (goal: verify <= 20 % of run)."""
    from villager_shop.bench.migration import admin_url_for
    from villager_shop.bench.verify import bench_verify

    direct = session_database_url(get_settings(), "bench verify")
    say = (lambda m: None) if as_json else (lambda m: err.print(m, markup=False))
    result = bench_verify(admin_url_for(direct), scale=scale, seed=seed, say=say)
    typer.echo(json.dumps(result, indent=None if as_json else 2))


@app.command()
def api(
    scale: float = typer.Option(1.0, min=0.01, max=100, help="legacy data scale to generate and migrate"),
    seed: int = typer.Option(42, help="generator seed"),
    users: int = typer.Option(1000, min=1, max=100_000, help="locust users (1 s think time each)"),
    duration: int = typer.Option(60, min=1, max=86_400, help="locust run time in seconds (ramp included)"),
    workers: int = typer.Option(2, min=1, max=64, help="uvicorn workers of the service and of the ceiling"),
    db_connections: int = typer.Option(20, min=1, max=1000, help="PostgreSQL connections of all workers"),
    spawn_rate: float = typer.Option(0, min=0, help="users started per second (0 = all within 10 s, or a quarter of a shorter run)"),
    locust_processes: int = typer.Option(1, min=1, max=64, help="locust --processes (1 = a single process)"),
    locust_nice: int = typer.Option(0, "--locust-nice", min=0, max=19, help="run locust at this niceness: on the"
                                    " service's own machine, the service and the probe get the CPU first, as with"
                                    " a load generator elsewhere (locust's own figures then include more of its"
                                    " queueing)"),
    guide_requests: int = typer.Option(1000, min=1, help="requests of the guide's `ab -n N -c 10` scenario"),
    cached_requests: int = typer.Option(20000, min=1, help="requests of the cached-listing and ceiling runs"),
    cached_concurrency: int = typer.Option(50, min=1, max=20_000, help="ab -c of the cached-listing and ceiling runs"),
    mix: str = typer.Option("", "--mix", help="override shares of the locust mix, e.g. 'order=1,product_page=28'"
                            " (category_listing, whole_catalog, product_page, categories, order)"),
    keep: bool = typer.Option(False, "--keep", help="keep the scratch database"),
    database: str = typer.Option("", "--database", help="build the data into this database on the first run"
                                 " and reuse it on the next ones (never dropped: generating a large scale takes"
                                 " minutes); refused if it exists without this command's mark for --scale/--seed"),
    cold_start: int = typer.Option(0, "--cold-start", min=0, max=3600, help="then restart the service with an"
                                   " empty cache and put all --users on it at once for this many seconds: time"
                                   " until the listing p95 goal holds, slowest request, errors (0 = skip)"),
    replica: bool = typer.Option(False, "--replica", help="on a throwaway primary + streaming standby of the"
                                 " server's version: the locust mix with catalog reads spread over primary and"
                                 " standby, then against the primary alone, side by side (on one machine: the"
                                 " cost of the routing, not a speed-up)"),
    as_json: bool = typer.Option(False, "--json", help="print only the JSON result"),
) -> None:
    """The shop API under locust's shop mix, the guide's ab run, and cached-listing vs bare-ASGI throughput.
    With DATABASE_URL a transaction pooler and DATABASE_DIRECT_URL the server, the scratch database is
    made on the server and the service reaches it through the pooler (which must serve any database)."""
    from villager_shop.bench.api import bench_api
    from villager_shop.bench.api_locust import parse_mix
    from villager_shop.bench.migration import admin_url_for
    from villager_shop.core.pooler import shares_server_connections
    from villager_shop.embedded import redis_url, session_database_url

    settings = get_settings()
    say = (lambda m: None) if as_json else (lambda m: err.print(m, markup=False))
    if replica:
        from villager_shop.bench.api_replica import bench_api_replica

        bindir = bindir_of(direct_database_url(settings))
        if bindir is None:
            raise ConfigError("--replica needs the server's binaries (initdb, pg_basebackup): read as a superuser"
                              " from pg_config, or installed under /usr/lib/postgresql/MAJOR/bin")
        result = bench_api_replica(bindir, redis_url(settings), scale=scale, seed=seed, users=users,
                                   duration_s=duration, workers=workers, db_connections=db_connections,
                                   spawn_rate=spawn_rate or None, locust_processes=locust_processes,
                                   mix=parse_mix(mix), say=say)
        typer.echo(json.dumps(result, indent=None if as_json else 2))
        return
    url = session_database_url(settings, "bench api (it creates and migrates a scratch database)")
    pooler = database_url(settings) if settings.database_direct_url is not None else None
    through = admin_url_for(pooler) if pooler is not None and shares_server_connections(pooler) else None
    result = bench_api(admin_url_for(url), redis_url(settings), scale=scale, seed=seed, users=users,
                       duration_s=duration, workers=workers, db_connections=db_connections,
                       spawn_rate=spawn_rate or None, locust_processes=locust_processes,
                       guide_requests=guide_requests, cached_requests=cached_requests,
                       cached_concurrency=cached_concurrency, mix=parse_mix(mix), keep=keep, pooler_url=through,
                       database=database or None, cold_start_s=cold_start, locust_nice=locust_nice,
                       say=(lambda m: None) if as_json else (lambda m: err.print(m, markup=False)))
    typer.echo(json.dumps(result, indent=None if as_json else 2))
