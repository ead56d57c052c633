"""Emergency restore of a manifest backup, losing nothing that exists today.

Why this shape (SPEC defect 6): the guide pipes a dump into the *live* database, which fails on existing
objects and overwrites whatever it manages to. Here:
1. the backup is named by its manifest id and its checksum is proven before anything else;
2. the operator is told what the restore would lose (rows written after the dump's snapshot, per table,
   and the WAL distance since its LSN), and that `villager-shop migrate rollback` loses nothing while
   the migration still keeps the legacy columns in sync;
3. the archive is restored into a NEW database and its row counts are checked against the manifest;
4. only then are names swapped in one transaction, the live database being kept as
   `<db>_before_restore_<ts>`: a bad restore can be undone by renaming back.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql

from villager_shop.core.db import connection, database_exists_on, drop_database_on
from villager_shop.core.errors import ConfigError, RefusedError, VerificationFailed, VillagerError
from villager_shop.core.urls import dbname_of, with_dbname
from villager_shop.safety import dbops, manifest
from villager_shop.safety.backup import restore_into_new_database
from villager_shop.safety.manifest import BackupEntry

Say = Callable[[str], None]

MAINTENANCE_DB = "postgres"
PROTECTED = {MAINTENANCE_DB, "template0", "template1"}
# GUCs whose stored value is a list: pg_dump splits them the same way (variable_is_guc_list_quote).
LIST_GUCS = {"search_path", "temp_tablespaces", "session_preload_libraries", "local_preload_libraries",
             "shared_preload_libraries", "unix_socket_directories"}
SWAP_ATTEMPTS = 5


def _quiet(_: str) -> None:
    return None


@dataclass
class TableLoss:
    table: str
    rows_at_backup: int | None  # None: the table did not exist at the backup
    rows_now: int
    inserted_after: int | None  # created_at later than the snapshot (None: no created_at column)
    updated_after: int | None  # updated_at later than the snapshot, created before it

    @property
    def written_after(self) -> int:
        if self.rows_at_backup is None:
            return self.rows_now  # the whole table is newer than the backup
        return (self.inserted_after or 0) + (self.updated_after or 0)


@dataclass
class MigrationState:
    in_progress: bool
    detail: str


@dataclass
class RestorePlan:
    entry: BackupEntry
    archive: Path
    live_db: str
    live_url: str
    admin_url: str
    live_exists: bool
    restore_name: str
    before_name: str
    tables: list[TableLoss] = field(default_factory=list)
    missing_tables: list[str] = field(default_factory=list)  # in the backup, gone now (restore brings back)
    wal_bytes: int | None = None
    sessions: int = 0
    migration: MigrationState | None = None

    @property
    def rows_written_after(self) -> int:
        return sum(t.written_after for t in self.tables)


@dataclass
class RestoreResult:
    live_db: str
    before_name: str | None
    terminated: int
    seconds: float
    tolerated_errors: int
    warnings: list[str]


def _ts() -> str:
    return datetime.now(UTC).strftime("%Y%m%d_%H%M%S")


def plan_restore(url: str, backup_dir: Path, backup_id: str) -> RestorePlan:
    """Everything the operator must know before saying yes; reads the live database, changes nothing."""
    live = dbname_of(url)
    if live in PROTECTED:
        raise RefusedError(
            f"refusing to restore over {live!r}: it is the maintenance database the restore connects to; "
            "point DATABASE_URL at the shop database"
        )
    entry = manifest.find(backup_dir, backup_id)
    try:
        archive = manifest.check_file(backup_dir, entry)
    except VerificationFailed as exc:
        raise VerificationFailed(f"refusing to restore: {exc}") from exc
    if entry.database != live:
        raise RefusedError(f"backup {entry.id} is of database {entry.database!r}, not of {live!r}")
    admin_url = with_dbname(url, MAINTENANCE_DB)
    stamp = _ts()
    plan = RestorePlan(
        entry=entry, archive=archive, live_db=live, live_url=url, admin_url=admin_url, live_exists=False,
        restore_name=dbops.derived_name(live, f"_restore_{stamp}"),
        before_name=dbops.derived_name(live, f"_before_restore_{stamp}"),
    )
    with connection(admin_url, autocommit=True, application_name="villager-shop restore") as admin:
        plan.live_exists = database_exists_on(admin, live)
        check_privileges(admin, live)
        for name in (plan.restore_name, plan.before_name):
            if database_exists_on(admin, name):
                raise RefusedError(f"database {name} already exists; retry in a second")
        if plan.live_exists:
            plan.sessions = int(admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", (live,)
            ).fetchone()[0])  # type: ignore[index]
    if plan.live_exists:
        with connection(url, application_name="villager-shop restore") as conn:
            conn.read_only = True
            _measure_loss(conn, plan)
            plan.migration = migration_state(conn)
    return plan


def check_privileges(admin: psycopg.Connection[Any], live: str) -> None:
    """Refuse up front (exit 2) a role that could restore but not swap: the restored database must end
    up on this server under the live name, so no scratch database elsewhere can stand in for CREATEDB."""
    role, may_create, owns = admin.execute(
        "SELECT current_user, rolcreatedb OR rolsuper,"
        " coalesce((SELECT pg_has_role(datdba, 'MEMBER') FROM pg_database WHERE datname = %s), true)"
        " FROM pg_roles WHERE rolname = current_user", (live,)).fetchone()  # type: ignore[misc]
    if not may_create:
        raise ConfigError(
            f"restore needs role {role} to have CREATEDB: it restores into a new database next to {live} and"
            f" swaps it in by renaming (VILLAGER_SCRATCH_URL cannot stand in: the restored database must end up"
            f" on this server as {live}); ALTER ROLE {role} CREATEDB, or run it as a role that has it")
    if not owns:
        raise ConfigError(f"restore needs role {role} to own database {live} (it renames it aside, keeping it):"
                          " run it as the owner, or a member of the owning role")


def _timestamp_columns(conn: psycopg.Connection[Any]) -> dict[str, set[str]]:
    rows = conn.execute(
        """
        SELECT table_schema, table_name, column_name FROM information_schema.columns
        WHERE column_name IN ('created_at', 'updated_at')
          AND data_type IN ('timestamp with time zone', 'timestamp without time zone', 'date')
        """
    ).fetchall()
    out: dict[str, set[str]] = {}
    for schema, table, column in rows:
        out.setdefault(dbops.qualified(schema, table), set()).add(column)
    return out


def _measure_loss(conn: psycopg.Connection[Any], plan: RestorePlan) -> None:
    """Rows written after the snapshot, per table (one scan each), and the WAL written since its LSN."""
    since = datetime.fromisoformat(plan.entry.snapshot_at.replace("Z", "+00:00"))
    columns = _timestamp_columns(conn)
    present = dbops.user_tables(conn)
    names = {dbops.qualified(s, t) for s, t in present}
    plan.missing_tables = sorted(set(plan.entry.row_counts) - names)
    for schema, table in present:
        name = dbops.qualified(schema, table)
        cols = columns.get(name, set())
        created = sql.SQL("count(*) FILTER (WHERE created_at > %(t)s)") if "created_at" in cols else sql.SQL("NULL")
        if "updated_at" in cols and "created_at" in cols:
            updated = sql.SQL("count(*) FILTER (WHERE updated_at > %(t)s AND (created_at > %(t)s) IS NOT TRUE)")
        elif "updated_at" in cols:
            updated = sql.SQL("count(*) FILTER (WHERE updated_at > %(t)s)")
        else:
            updated = sql.SQL("NULL")
        row = conn.execute(
            sql.SQL("SELECT count(*), {}, {} FROM {}.{}").format(
                created, updated, sql.Identifier(schema), sql.Identifier(table)),
            {"t": since},
        ).fetchone()
        assert row is not None
        plan.tables.append(TableLoss(name, plan.entry.row_counts.get(name), int(row[0]),
                                     None if row[1] is None else int(row[1]),
                                     None if row[2] is None else int(row[2])))
    try:
        row = conn.execute(
            "SELECT pg_wal_lsn_diff(CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() "
            "ELSE pg_current_wal_lsn() END, %s::pg_lsn)::bigint",
            (plan.entry.lsn,),
        ).fetchone()
        plan.wal_bytes = None if row is None or row[0] is None else int(row[0])
    except psycopg.Error:
        conn.rollback()
        plan.wal_bytes = None


def migration_state(conn: psycopg.Connection[Any]) -> MigrationState | None:
    """Whether an online migration is under way: then `migrate rollback` loses nothing, a restore does."""
    from villager_shop.migration import state as migration

    if not migration.schema_exists(conn):
        return None
    phase = migration.phase(conn)
    reversible = phase in ("expanding", "backfilling", "validating", "migrated", "rolling_back")
    return MigrationState(reversible, f"migration phase: {phase}")


def execute_restore(plan: RestorePlan, *, say: Say = _quiet) -> RestoreResult:
    """Restore into a new database, verify it, then swap names; the live database is only renamed."""
    t0 = time.monotonic()
    warnings: list[str] = []
    entry, live, new = plan.entry, plan.live_db, plan.restore_name
    with connection(plan.admin_url, autocommit=True, application_name="villager-shop restore") as admin:
        dbops.create_restore_target(admin, new, live if plan.live_exists else None)
        try:
            tolerated = restore_into_new_database(entry, plan.archive, admin, plan.admin_url, new, say)
            say(f"ANALYZE {new} (a restored database has no planner statistics)")
            with connection(with_dbname(plan.admin_url, new), autocommit=True) as conn:
                conn.execute("ANALYZE")
        except BaseException:
            say(f"dropping the unverified copy {new}; {live} was not touched")
            drop_database_on(admin, new)
            raise
        if not plan.live_exists:
            admin.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(new), sql.Identifier(live)))
            return RestoreResult(live, None, 0, time.monotonic() - t0, tolerated, warnings)
        warnings += copy_database_properties(admin, live, new)
        for w in warnings:
            say(f"warning: {w}")
        try:
            terminated = _swap(admin, live, new, plan.before_name, say)
        except Exception as exc:
            raise VillagerError(
                f"the restore is complete and verified in database {new}, but {live} could not be replaced "
                f"({exc}); nothing was renamed"
            ) from exc
    return RestoreResult(live, plan.before_name, terminated, time.monotonic() - t0, tolerated, warnings)


def _swap(admin: psycopg.Connection[Any], live: str, new: str, before: str, say: Say) -> int:
    """Block new connections to `live`, end the existing ones, and rename both databases atomically."""
    ident = sql.Identifier
    allow = bool(admin.execute("SELECT datallowconn FROM pg_database WHERE datname = %s", (live,)).fetchone()[0])  # type: ignore[index]
    admin.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(ident(live)))
    terminated: set[int] = set()
    try:
        for attempt in range(1, SWAP_ATTEMPTS + 1):
            terminated |= _terminate_sessions(admin, live, say)
            try:
                with admin.transaction():
                    admin.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(ident(live), ident(before)))
                    admin.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(ident(new), ident(live)))
                break
            except pg_errors.ObjectInUse:
                if attempt == SWAP_ATTEMPTS:
                    raise
                time.sleep(0.2 * attempt)
    except BaseException:
        admin.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS {}").format(
            ident(live), sql.SQL("true" if allow else "false")))
        raise
    admin.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS {}").format(
        ident(before), sql.SQL("true" if allow else "false")))
    say(f"renamed {live} -> {before} and {new} -> {live}")
    return len(terminated)


def _terminate_sessions(admin: psycopg.Connection[Any], live: str, say: Say, wait_s: float = 15) -> set[int]:
    pids = [int(r[0]) for r in admin.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", (live,)).fetchall()]
    if pids:
        say(f"terminating {len(pids)} connection(s) to {live} with pg_terminate_backend")
    for pid in pids:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    deadline = time.monotonic() + wait_s
    while pids and time.monotonic() < deadline:
        left = admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", (live,)
        ).fetchone()
        if not left or not left[0]:
            break
        time.sleep(0.05)
    return set(pids)


def copy_database_properties(admin: psycopg.Connection[Any], src: str, dst: str) -> list[str]:
    """Owner, connection limit, privileges and `ALTER DATABASE … SET` of `src` onto `dst`.

    pg_restore without --create carries none of them, and a restored database that let PUBLIC connect
    where the live one did not would be a silent security regression. Returns warnings (never raises
    for one property: the verified restore matters more than, say, a connection limit).
    """
    warnings: list[str] = []
    ident = sql.Identifier

    def attempt(stmt: sql.Composed, what: str) -> None:
        try:
            admin.execute(stmt)
        except psycopg.Error as exc:
            warnings.append(f"could not copy {what} to {dst}: {str(exc).strip().splitlines()[0]}")

    row = admin.execute(
        "SELECT oid, pg_get_userbyid(datdba), datconnlimit, datacl IS NOT NULL FROM pg_database WHERE datname = %s",
        (src,),
    ).fetchone()
    if row is None:
        return warnings
    oid, owner, connlimit, has_acl = row
    attempt(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(ident(dst), ident(owner)), "the owner")
    if connlimit != -1:
        attempt(sql.SQL("ALTER DATABASE {} CONNECTION LIMIT {}").format(ident(dst), sql.Literal(int(connlimit))),
                "the connection limit")
    if has_acl:
        attempt(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(ident(dst)), "privileges")
        for grantee, privilege, grantable in admin.execute(
            "SELECT CASE WHEN a.grantee = 0 THEN NULL ELSE pg_get_userbyid(a.grantee) END, a.privilege_type,"
            " a.is_grantable FROM pg_database d, aclexplode(d.datacl) a WHERE d.datname = %s",
            (src,),
        ).fetchall():
            if privilege not in ("CREATE", "CONNECT", "TEMPORARY"):
                continue
            attempt(sql.SQL("GRANT {} ON DATABASE {} TO {}{}").format(
                sql.SQL(privilege), ident(dst), sql.SQL("PUBLIC") if grantee is None else ident(grantee),
                sql.SQL(" WITH GRANT OPTION" if grantable else "")), f"privilege {privilege}")
    for role, setting in admin.execute(
        "SELECT CASE WHEN setrole = 0 THEN NULL ELSE pg_get_userbyid(setrole) END, unnest(setconfig)"
        " FROM pg_db_role_setting WHERE setdatabase = %s",
        (oid,),
    ).fetchall():
        name, _, value = str(setting).partition("=")
        values = _split_guc_list(value) if name.lower() in LIST_GUCS else [value]
        target = (sql.SQL("ALTER DATABASE {}").format(ident(dst)) if role is None
                  else sql.SQL("ALTER ROLE {} IN DATABASE {}").format(ident(role), ident(dst)))
        attempt(sql.SQL("{} SET {} TO {}").format(
            target, sql.SQL(".").join(ident(part) for part in name.split(".")),
            sql.SQL(", ").join(sql.Literal(v) for v in values)), f"setting {name}")
    return warnings


def _split_guc_list(value: str) -> list[str]:
    """Split a stored list GUC (`"$user", public`) into its elements, as pg_dump's SplitGUCList does."""
    items: list[str] = []
    buf: list[str] = []
    quoted = False
    i = 0
    while i < len(value):
        ch = value[i]
        if ch == '"':
            if quoted and i + 1 < len(value) and value[i + 1] == '"':
                buf.append('"')
                i += 1
            else:
                quoted = not quoted
        elif ch == "," and not quoted:
            items.append("".join(buf).strip())
            buf = []
        else:
            buf.append(ch)
        i += 1
    items.append("".join(buf).strip())
    return [item for item in items if item]
