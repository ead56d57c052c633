"""Connection-URL helpers that never let a password reach output."""

from __future__ import annotations

import os
from urllib.parse import quote, urlsplit

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from villager_shop.core.errors import ConfigError

POSTGRES_FORM = ("postgresql://USER@HOST:PORT/DBNAME (a password, if any, after USER and a colon;"
                 " a Unix socket: postgresql://USER@/DBNAME?host=/SOCKET/DIR) or libpq key=value pairs")
REDIS_FORM = ("redis://HOST:PORT/DB (redis://:PASSWORD@HOST:PORT/DB with a password, rediss:// for TLS,"
              " unix:///PATH/TO/redis.sock for a socket)")
# What libpq falls back to when a URL names nothing: an operator who set them did name a server.
_LIBPQ_TARGET_ENV = ("PGHOST", "PGHOSTADDR", "PGDATABASE", "PGUSER", "PGSERVICE")


def checked_postgres_url(url: str, variable: str = "DATABASE_URL") -> str:
    """`url` (without surrounding blanks) when it is a connection string that names a server, a
    database or a user. libpq connects a blank or bare string (`postgresql://`) to its defaults, a
    local socket as the OS user: a variable set by mistake would silently reach another database.
    A string libpq cannot parse is refused without quoting it (it may hold a password)."""
    url = url.strip()
    if not url:
        raise ConfigError(f"{variable} is set but empty: set it to postgresql://USER@HOST:PORT/DBNAME, or unset it")
    try:
        params = conninfo_to_dict(url)
    except Exception:
        raise ConfigError(f"{variable} is not a PostgreSQL connection URL: expected {POSTGRES_FORM}") from None
    named = any(params.get(key) for key in ("host", "hostaddr", "dbname", "user", "service"))
    if not named and not any(os.environ.get(name) for name in _LIBPQ_TARGET_ENV):
        raise ConfigError(f"{variable} names no server, database or user (libpq would pick its defaults):"
                          f" expected {POSTGRES_FORM}")
    return url


def checked_redis_url(url: str, variable: str = "REDIS_URL") -> str:
    """`url` (without surrounding blanks) when it has the form redis-py accepts and names a server;
    else a configuration error naming the expected form (never the value, which may hold a password)."""
    url = url.strip()
    if not url:
        raise ConfigError(f"{variable} is set but empty: set it to redis://HOST:PORT/DB, or unset it")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number in range
    except ValueError:
        parts = None
    if parts is not None and parts.scheme in ("redis", "rediss"):
        db = parts.path.lstrip("/")
        ok = bool(parts.hostname) and (not db or db.isdigit())
    else:
        ok = parts is not None and parts.scheme == "unix" and bool(parts.path)
    if not ok:
        raise ConfigError(f"{variable} is not a Redis URL: expected {REDIS_FORM}")
    return url


def mask_url(url: str) -> str:
    """A readable form of a PostgreSQL or Redis URL without its password."""
    if url.startswith(("redis://", "rediss://", "unix://")):
        scheme, _, rest = url.partition("://")
        if "@" in rest:
            cred, _, host = rest.rpartition("@")
            user = cred.split(":", 1)[0]
            return f"{scheme}://{user + ':***@' if user else '***@'}{host}"
        return url
    try:
        params = conninfo_to_dict(url)
    except Exception:
        return "<unparseable connection string>"
    user = str(params.get("user") or "")
    host = str(params.get("host") or "localhost")
    port = str(params.get("port") or "5432")
    dbname = str(params.get("dbname") or user)
    cred = f"{user}:***@" if params.get("password") else (f"{user}@" if user else "")
    if str(host).startswith("/"):
        return f"postgresql://{cred}/{dbname}?host={host}"
    return f"postgresql://{cred}{host}:{port}/{dbname}"


def with_dbname(url: str, dbname: str) -> str:
    """The same server and credentials, another database."""
    return make_conninfo(url, dbname=dbname)


def dbname_of(url: str) -> str:
    params = conninfo_to_dict(url)
    return str(params.get("dbname") or params.get("user") or "postgres")


def socket_url(socket_dir: str, dbname: str = "postgres", user: str = "postgres") -> str:
    return f"postgresql://{user}@/{dbname}?host={quote(socket_dir, safe='')}"
