"""`villager-shop serve`: the HTTP JSON API (FastAPI on uvicorn)."""

from __future__ import annotations

import os
import shutil
import socket

import typer

from villager_shop.core.config import get_settings
from villager_shop.core.errors import ConfigError
from villager_shop.core.urls import checked_redis_url, mask_url

EXAMPLES = """Examples:
  villager-shop serve                                       http://127.0.0.1:8000/docs
  villager-shop serve --host 0.0.0.0 --port 8000 --workers 2 --db-connections 20"""


def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="interface to listen on"),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="TCP port"),
    workers: int = typer.Option(1, "--workers", min=1, max=64, help="uvicorn worker processes"),
    db_connections: int = typer.Option(20, "--db-connections", min=1, max=500,
                                       help="PostgreSQL connections for all workers together"),
    access_log: bool = typer.Option(False, "--access-log/--no-access-log", help="log every request"),
    log_level: str = typer.Option("info", "--log-level", help="uvicorn log level"),
) -> None:
    """Serve the shop API (DATABASE_URL/REDIS_URL, or the embedded servers when unset)."""
    import uvicorn

    from villager_shop.api.config import ServiceConfig, jwt_secret, service_settings
    from villager_shop.api.database import find_connections
    from villager_shop.api.main import create_app, prepare_database
    from villager_shop.embedded import database_url

    # Everything uvicorn would only find out in its startup (and report with a traceback) is
    # checked here first, cheapest first: the settings, the address, then PostgreSQL (before any Redis).
    settings = get_settings()
    per_worker = max(2, db_connections // workers)
    service = service_settings(db_pool_max=per_worker, db_pool_min=min(2, per_worker))
    if service.cache_enabled and settings.redis_url is not None:
        checked_redis_url(settings.redis_url.get_secret_value())
    jwt_secret(settings)
    check_listen(host, port)
    prepare_database(database_url(settings), service.db_connect_timeout_s)
    config = ServiceConfig.from_env(settings, service)
    found = find_connections(config)  # a DATABASE_DIRECT_URL that is a pooler: refused here (exit 2)
    typer.echo(f"serving http://{host}:{port} with {workers} worker(s), {per_worker} connection(s) each;"
               f" database {mask_url(config.database_url)}"
               f"{' (a transaction pooler)' if found.through_pooler else ''}, cache "
               f"{mask_url(config.redis_url) if config.redis_url else 'off'}", err=True)
    if config.replica_urls:
        typer.echo(f"catalog reads from standbys at most {config.replica_max_lag_ms} ms behind: "
                   + ", ".join(mask_url(u) for u in config.replica_urls), err=True)
    warning = found.invalidation_off_warning(config.cache_ttl_s) if config.cache_enabled else None
    if warning:
        typer.echo(warning, err=True)
    # uvicorn[standard]'s C parser and event loop, named so that a missing one fails loudly instead
    # of silently falling back to h11/asyncio (bench.api runs its ceiling with the same).
    if workers == 1:
        uvicorn.run(create_app(config), host=host, port=port, access_log=access_log, log_level=log_level,
                    lifespan="on", http="httptools", loop="uvloop")
        return
    # Workers are fresh processes: hand them the resolved servers and the pool size by environment.
    os.environ["DATABASE_URL"] = config.database_url
    if config.database_direct_url:
        os.environ["DATABASE_DIRECT_URL"] = config.database_direct_url
    if config.redis_url:
        os.environ["REDIS_URL"] = config.redis_url
    if config.replica_urls:
        os.environ["DATABASE_REPLICA_URLS"] = ",".join(config.replica_urls)
    os.environ["VILLAGER_DB_POOL_MAX"] = str(service.db_pool_max)
    os.environ["VILLAGER_DB_POOL_MIN"] = str(service.db_pool_min)
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        folder = settings.data_dir / "prometheus" / str(port)
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)
    uvicorn.run("villager_shop.api.main:create_app", factory=True, host=host, port=port, workers=workers,
                access_log=access_log, log_level=log_level, lifespan="on", http="httptools", loop="uvloop")


def check_listen(host: str, port: int) -> None:
    """Refuse (exit 2) an address this process cannot listen on, bound as uvicorn binds it
    (SO_REUSEADDR): uvicorn finds out only after starting the app, and says it in several log lines."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError(f"cannot listen on {host}:{port}: {reason} (choose another --host or --port)") from None
