"""The scratch database a backup is restored into to be proven (`backup verify`) or rehearsed on
(`rehearse`).

By default it is a new database next to the shop's, created and dropped by the command, which
needs a role with CREATEDB. Managed servers often give the application's owner role no such
right; then the command says so up front (exit 2) instead of failing halfway with PostgreSQL's
"permission denied to create database", and the operator can name another place,
VILLAGER_SCRATCH_URL:
- a server where that URL's role may create databases: a new database is created there and
  dropped afterwards, as on the shop's server;
- else the database the URL names. It must be empty, since the command empties it again
  afterwards and must not destroy anything it did not put there; a database holding anything is
  refused (exit 4) before anything is restored.
A restore into a database of another role cannot give the objects their original owners or
grants (only a superuser could): there the archive is restored with `--no-owner --no-privileges`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from villager_shop.core.db import connection, database_exists_on, drop_database_on
from villager_shop.core.errors import ConfigError, RefusedError
from villager_shop.core.urls import checked_postgres_url, dbname_of, mask_url, with_dbname
from villager_shop.safety import dbops

VARIABLE = "VILLAGER_SCRATCH_URL"
SYSTEM_SCHEMAS = r"n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\_toast%'" \
                 r" AND n.nspname NOT LIKE 'pg\_temp\_%'"
# Objects in the schemas that are not extension members: what a restore creates and a cleanup drops.
# Dropped with CASCADE in this order (tables take their indexes, triggers, owned sequences along).
OBJECTS = f"""
SELECT kind, ident FROM (
  SELECT 1 AS rank, CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW' WHEN 'S' THEN 'SEQUENCE'
                    WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END AS kind,
         format('%I.%I', n.nspname, c.relname) AS ident, c.oid, 'pg_class'::regclass AS cls
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND {SYSTEM_SCHEMAS}
  UNION ALL
  SELECT 2, 'ROUTINE', format('%I.%I(%s)', n.nspname, p.proname, pg_get_function_identity_arguments(p.oid)),
         p.oid, 'pg_proc'::regclass
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE {SYSTEM_SCHEMAS}
  UNION ALL
  SELECT 3, CASE t.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END, format('%I.%I', n.nspname, t.typname),
         t.oid, 'pg_type'::regclass
  FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
  WHERE t.typtype IN ('e', 'r', 'd', 'c') AND {SYSTEM_SCHEMAS}
    AND (t.typrelid = 0 OR (SELECT c.relkind FROM pg_class c WHERE c.oid = t.typrelid) = 'c')
) o
WHERE NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = o.cls AND d.objid = o.oid AND d.deptype = 'e')
ORDER BY rank, ident
"""
SCHEMAS = f"SELECT n.nspname FROM pg_namespace n WHERE {SYSTEM_SCHEMAS} ORDER BY 1"
EXTENSIONS = "SELECT extname FROM pg_extension WHERE extname <> 'plpgsql' ORDER BY 1"

Say = Callable[[str], None]


def _quiet(_: str) -> None:
    return None


@dataclass(frozen=True)
class ScratchPlan:
    """Where the scratch database goes: `create` a new one on `url`'s server, or use `url`'s database."""

    url: str
    create: bool
    provided: bool  # named by VILLAGER_SCRATCH_URL (restored without owners and grants)


@dataclass(frozen=True)
class Scratch:
    url: str
    name: str
    server_major: int
    afterwards: str  # what happens to it at the end: dropped | emptied | kept


def may_create_databases(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute("SELECT rolcreatedb OR rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
    return bool(row and row[0])


def contents(conn: psycopg.Connection[Any]) -> list[str]:
    """What the database holds besides empty schemas and plpgsql, in words: anything listed would be
    lost when the database is emptied after use."""
    found = [f"{kind.lower()} {ident}" for kind, ident in conn.execute(OBJECTS).fetchall()]
    found += [f"extension {name}" for (name,) in conn.execute(EXTENSIONS).fetchall()]
    return found


def plan_scratch(production_url: str, scratch_url: str | None, what: str) -> ScratchPlan:
    """Decide where `what` restores, before anything is done: refused here, not halfway."""
    if scratch_url is not None:
        url = checked_postgres_url(scratch_url, VARIABLE)
        with connection(url, autocommit=True, application_name=f"villager-shop {what}") as conn:
            if may_create_databases(conn):
                return ScratchPlan(url, create=True, provided=True)
            held = contents(conn)
        if held:
            shown = ", ".join(held[:3]) + (f" and {len(held) - 3} more" if len(held) > 3 else "")
            raise RefusedError(f"{VARIABLE} names database {dbname_of(url)}, which is not empty ({shown}), and its"
                               f" role may not create databases there: {what} restores a backup into it and empties"
                               " it afterwards, so it must hold nothing; name an empty database")
        return ScratchPlan(url, create=False, provided=True)
    with connection(production_url, autocommit=True, application_name=f"villager-shop {what}") as conn:
        if may_create_databases(conn):
            return ScratchPlan(production_url, create=True, provided=False)
        role = conn.execute("SELECT current_user").fetchone()[0]  # type: ignore[index]
    raise ConfigError(f"{what} needs a scratch database to restore the backup into, and role {role} may not create"
                      f" one (it lacks CREATEDB): set {VARIABLE} to an empty database, or to a server where its role"
                      f" may create databases, or ALTER ROLE {role} CREATEDB")


@contextmanager
def scratch_database(plan: ScratchPlan, name: str, like: str | None, *, keep: bool = False,
                     what: str = "scratch", say: Say = _quiet) -> Iterator[Scratch]:
    """The scratch database for the body of the `with`: `name` created on the plan's server (from
    template0, with the encoding and locale of `like` when that database is there), dropped at the
    end; or the plan's own database, emptied at the end. `keep`: left as it is."""
    app = f"villager-shop {what}"
    if plan.create:
        with connection(plan.url, autocommit=True, application_name=app) as admin:
            if database_exists_on(admin, name):
                raise RefusedError(f"database {name} already exists; retry in a second")
            major = int(admin.info.server_version) // 10000
            dbops.create_restore_target(admin, name, like)
        # Created just now by this command: the only database it drops.
        try:
            yield Scratch(with_dbname(plan.url, name), name, major, "kept" if keep else "dropped")
        finally:
            if not keep:
                with connection(plan.url, autocommit=True, application_name=app) as admin:
                    drop_database_on(admin, name)
                say(f"{what} database {name} dropped")
        return
    with connection(plan.url, autocommit=True, application_name=app) as conn:
        major = int(conn.info.server_version) // 10000
        schemas = {str(r[0]) for r in conn.execute(SCHEMAS).fetchall()}
        extensions = {str(r[0]) for r in conn.execute(EXTENSIONS).fetchall()}
    where = f"{dbname_of(plan.url)} ({mask_url(plan.url)})"
    try:
        yield Scratch(plan.url, dbname_of(plan.url), major, "kept" if keep else "emptied")
    finally:
        if not keep:
            left = empty_database(plan.url, schemas, extensions, app)
            if left:
                say(f"warning: {where} could not be emptied completely: {', '.join(left[:5])}")
            else:
                say(f"{what} database {where} emptied")


def empty_database(url: str, schemas: set[str], extensions: set[str], app: str = "villager-shop") -> list[str]:
    """Drop what was added to the database at `url` since it held only `schemas` (empty) and
    `extensions`; returns what is left (empty when all went). Object by object rather than
    `DROP OWNED`, which would also revoke the role's privileges elsewhere (its CONNECT to the shop)."""
    with connection(url, autocommit=True, application_name=app) as conn:
        for (name,) in conn.execute(EXTENSIONS).fetchall():
            if name not in extensions:
                _drop(conn, sql.SQL("DROP EXTENSION IF EXISTS {} CASCADE").format(sql.Identifier(name)))
        for (name,) in conn.execute(SCHEMAS).fetchall():
            if name not in schemas:
                _drop(conn, sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))
        for _ in range(3):  # a drop that failed on a dependency may succeed once the other went
            held = conn.execute(OBJECTS).fetchall()
            if not held:
                break
            for kind, ident in held:
                _drop(conn, sql.SQL(f"DROP {kind} IF EXISTS {ident} CASCADE"))
        return contents(conn)


def _drop(conn: psycopg.Connection[Any], statement: sql.Composed | sql.SQL) -> None:
    """Drop one thing; a failure is reported by the caller, through what is left."""
    with contextlib.suppress(psycopg.Error):
        conn.execute(statement)
