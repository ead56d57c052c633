"""Connection-URL helpers that never let a password reach output."""

from __future__ import annotations

from urllib.parse import quote

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from villager_shop.core.errors import ConfigError


def checked_postgres_url(url: str, variable: str = "DATABASE_URL") -> str:
    """`url` when libpq can parse it; else a configuration error that names the expected form
    (libpq's own message quotes the string, which may hold a password)."""
    try:
        conninfo_to_dict(url)
    except Exception:
        raise ConfigError(f"{variable} is not a PostgreSQL connection URL: expected postgresql://USER@HOST:PORT/DBNAME"
                          " (a password, if any, after USER and a colon) or libpq key=value pairs") from None
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
