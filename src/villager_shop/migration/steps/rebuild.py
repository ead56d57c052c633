"""Backfill a table by rebuilding it: copy it with the new column filled, then swap the copy in.

Why: filling a new column of every row in place rewrites every row (bulk-loaded pages are full,
so no update is HOT) and inserts a new entry into each of the table's indexes per row; for
order_items that costs more than the guide's whole migration. Copying into a fresh table and
building its indexes once afterwards does the same work about three times faster.

How, without stopping the application (pg_repack's scheme):
1. start: a trigger logs the id of every row the application inserts, updates, deletes (and any
   TRUNCATE) into `villager_migration.rebuild_log`; an empty copy `villager_migration.<table>`
   is created (same columns, defaults, storage).
2. copy: the backfill walker copies the table batch by batch (resumable after kill -9, like any
   backfill); rows that cannot be migrated are quarantined on the way. A value that needs a
   lookup per row may be guessed instead (order_items: the default variant's id is its
   product's); once the copy is done, one set-based query finds the rows guessed wrong, and
   they are copied again with the lookup, a thousand per transaction.
3. index: the table's indexes (and the plan's new ones) are built on the copy - plainly, not
   concurrently: nobody else uses it. Duplicates a moved row could leave are removed first.
4. catch up: the log is replayed onto the copy (each logged id deleted and copied again as it is
   now) until what remains is small.
5. swap: one transaction, under ACCESS EXCLUSIVE locks taken with lock_timeout and retried like
   all DDL, replays the rest and puts the copy in place of the table, with its foreign keys,
   checks, triggers, owner and grants (rebuild.sql). Milliseconds: the old table is moved aside
   and dropped only after the swap commits (dropping a large table's files and buffers at commit
   would keep the locks held meanwhile).
6. validate: the foreign keys and checks that were valid are validated again (no lock against
   reads or writes).
Rollback before the swap drops the copy and the log trigger; after it, the table is the legacy
table plus the new column, which the ordinary undo removes. A table this cannot carry faithfully
(views on it, foreign keys to it, publications, row security, ...) is backfilled in place instead.
"""

from __future__ import annotations

import time
from typing import Any

import psycopg
from psycopg import errors

from villager_shop.core.db import relation_exists
from villager_shop.migration import state
from villager_shop.migration.context import Context
from villager_shop.migration.ddl import LOCK_RETRYABLE, Ddl, execute_all
from villager_shop.migration.keys import VILLAGER_KEY, Key
from villager_shop.migration.sqlfiles import section
from villager_shop.migration.steps.backfill import batch, quarantine_ctes
from villager_shop.migration.steps.base import Step
from villager_shop.migration.walker import run_backfill

V = "villager_migration"
RETIRED = "villager_migration_retired"  # where the swap leaves the old table, dropped after it
LOG_TRIGGER = "villager_rebuild_log"
# The catch-up stops when a round finds fewer changes than this: the swap replays the rest under
# its locks (a few ms for a few hundred rows).
SWAP_REPLAY_ROWS = 200
# Rows the copy guessed wrong, copied again per transaction.
RECOPY_ROWS = 1000
# The migration's own relations in its schema: the copy of a table of one of these names would be
# one of them (and rollback would drop it), so such a table is backfilled in place.
OWN_RELATIONS = frozenset({"state", "steps", "events", "events_id_seq", "backfill", "backfill_retry", "rebuild_log",
                           "rebuild_log_seq_seq", "rebuild_recheck", "quarantine", "plan_quarantine", "legacy_writes"})

INELIGIBLE = """
SELECT CASE
  WHEN c.relkind <> 'r' OR c.relispartition
       OR EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhrelid = c.oid OR i.inhparent = c.oid)
    THEN 'it is partitioned or inherited'
  WHEN c.relpersistence <> 'p'
    THEN 'it is unlogged'
  WHEN EXISTS (SELECT 1 FROM pg_constraint k WHERE k.confrelid = c.oid AND k.conrelid <> c.oid)
    THEN 'other tables reference it by foreign key'
  WHEN EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conrelid = c.oid AND k.contype IN ('u', 'x'))
    THEN 'it has unique or exclusion constraints besides its primary key'
  WHEN NOT EXISTS (SELECT 1 FROM pg_constraint k JOIN pg_attribute a ON a.attrelid = k.conrelid
                    WHERE k.conrelid = c.oid AND k.contype = 'p' AND k.conkey = ARRAY[a.attnum]
                      AND a.attname = %s)
    THEN 'its primary key is not the one the plan read'
  WHEN EXISTS (SELECT 1 FROM pg_depend d WHERE d.refclassid = 'pg_class'::regclass AND d.refobjid = c.oid
                  AND d.classid = 'pg_rewrite'::regclass)
    THEN 'views or rules depend on it'
  WHEN EXISTS (SELECT 1 FROM pg_depend d WHERE d.refclassid = 'pg_type'::regclass AND d.refobjid = c.reltype
                  AND d.deptype = 'n')
    THEN 'other objects use its row type'
  WHEN EXISTS (SELECT 1 FROM pg_depend d JOIN pg_class s ON s.oid = d.objid
                WHERE d.classid = 'pg_class'::regclass AND d.refobjid = c.oid AND s.relkind = 'S'
                  AND d.deptype = 'a'
                  AND EXISTS (SELECT 1 FROM pg_depend u WHERE u.refobjid = s.oid AND u.classid = 'pg_attrdef'::regclass
                                 AND NOT EXISTS (SELECT 1 FROM pg_attrdef ad WHERE ad.oid = u.objid AND ad.adrelid = c.oid)))
    THEN 'a sequence it owns is used by another table'
  WHEN c.relrowsecurity OR EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid)
    THEN 'it has row-level security'
  WHEN EXISTS (SELECT 1 FROM pg_publication_rel r WHERE r.prrelid = c.oid)
       OR EXISTS (SELECT 1 FROM pg_publication p WHERE p.puballtables)
       -- the view also covers FOR TABLES IN SCHEMA (PostgreSQL 15+), on every version
       OR EXISTS (SELECT 1 FROM pg_publication_tables pt JOIN pg_namespace n ON n.oid = c.relnamespace
                   WHERE pt.schemaname = n.nspname AND pt.tablename = c.relname)
    THEN 'it is published for logical replication'
  WHEN c.relreplident <> 'd' THEN 'it has a replica identity other than its primary key'
  WHEN EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                  AND a.attacl IS NOT NULL)
    THEN 'it has column privileges'
  WHEN EXISTS (SELECT 1 FROM pg_statistic_ext x WHERE x.stxrelid = c.oid)
    THEN 'it has extended statistics objects'
END
FROM pg_class c WHERE c.oid = %s::regclass
"""


class RebuildTable(Step):
    phase = "backfill"

    def __init__(self, table: str, alias: str, columns: list[str], overrides: dict[str, str], joins: str,
                 reason: str | None, indexes: list[tuple[str, str]], in_place: Step, title: str, *,
                 key: Key = VILLAGER_KEY, referenced: tuple[str, ...] = ("orders", "products"),
                 guess: tuple[dict[str, str], str] | None = None) -> None:
        self.table, self.alias = table, alias
        self.columns = columns  # as the legacy schema has them (shown by `migrate plan`; runs read the catalog)
        self.overrides = overrides  # column -> SQL expression over the live row and `joins`
        # Cheaper expressions the copy uses instead of some `overrides` (right for most rows, no
        # lookup), and a query of the copy's keys (as text) and ctids whose guessed values are not
        # right now: once the copy is done, those rows are copied again with `overrides`. The
        # replay and the swap never guess.
        self.guess = guess
        self.joins = joins
        # Why a copied row `s` is quarantined in villager_migration.quarantine (NULL: it is not);
        # None: the copy quarantines nothing (a plan file's rules keep their own records by trigger).
        self.reason = reason
        # Or CTEs over the batch `src` that keep a plan file's quarantine records as the rows are
        # copied (assemble.py sets them, with the statement that forgets the rows of keys $1 that are
        # gone when they are replayed): the rules then need no walk of their own after the swap.
        self.side_ctes: tuple[str, ...] = ()
        self.side_gone: str | None = None
        self.pk = key
        self.referenced = referenced  # the tables the swap locks, as `migrate plan` shows them
        self.indexes = indexes  # (name, definition) the plan wants on the table, built on the copy
        self.in_place = in_place  # the same backfill done in place, for tables a rebuild cannot carry
        self.name = in_place.name
        self.title = title
        self.key = f"rebuild:{table}"

    # -- SQL ---------------------------------------------------------------------------------
    def _select(self, columns: list[str], guessing: bool = False) -> str:
        a = self.alias
        exprs = {**self.overrides, **(self.guess[0] if guessing and self.guess else {})}
        return ", ".join(f"{exprs[c]} AS {c}" if c in exprs else f"{a}.{c}" for c in columns)

    def copy_action(self, columns: list[str]) -> str:
        """One batch of the copy (the walker binds the batch marker), quarantining as it goes."""
        cols = ", ".join(columns)
        return (f"WITH src AS MATERIALIZED (\n"
                f"  SELECT {self._select(columns, guessing=True)}\n"
                f"    FROM public.{self.table} {self.alias} {self.joins}\n"
                f"   WHERE {batch(self.alias)}),\n"
                f"copied AS (INSERT INTO {V}.{self.table} ({cols}) OVERRIDING SYSTEM VALUE SELECT {cols} FROM src)"
                + self._quarantine() + "\n"
                "SELECT count(*) FROM src")

    def _quarantine(self) -> str:
        if self.reason is None:
            return "".join(",\n" + c for c in self.side_ctes)
        return ",\n" + quarantine_ctes(self.table, "src", self.reason, "to_jsonb(s)")

    def _keys_in(self, alias: str) -> str:
        """The rows whose keys are $1 (text[], cast to the key's type so that its index serves)."""
        return f"{alias}.{self.pk.ident} = ANY($1::{self.pk.sqltype}[])"

    def replay_sql(self, columns: list[str]) -> str:
        """The rows whose ids are $1, copied as they are now (rebuild_replay runs it), and their
        quarantine entries decided again: the copy reads without locks, so what it decided for a
        row the application changed meanwhile (and logged) may be out of date."""
        cols = ", ".join(columns)
        head = (f"WITH src AS MATERIALIZED (SELECT {self._select(columns)} FROM public.{self.table} {self.alias}"
                f" {self.joins} WHERE {self._keys_in(self.alias)}),\n"
                f"copied AS (INSERT INTO {V}.{self.table} ({cols}) OVERRIDING SYSTEM VALUE SELECT {cols} FROM src)")
        if self.reason is None and self.side_gone is None:
            return head + "\nSELECT count(*) FROM src"
        if self.reason is None:
            return head + f",\ngone AS ({self.side_gone})" + self._quarantine() + "\nSELECT count(*) FROM src"
        return (head + ",\n"
                f"gone AS (DELETE FROM {V}.quarantine q WHERE q.table_name = '{self.table}'"
                " AND q.row_id = ANY($1::uuid[]) AND NOT EXISTS (SELECT 1 FROM src WHERE src.id = q.row_id))"
                + self._quarantine() + "\n"
                "SELECT count(*) FROM src")

    def _recheck_ddl(self, hash_join: bool = True) -> Ddl:
        """The copy's rows whose guessed values are wrong now, numbered, into `rebuild_recheck`."""
        assert self.guess is not None
        # One hash join over the whole copy, in parallel (CREATE TABLE AS may use parallel workers,
        # INSERT ... SELECT may not). The copy has no statistics yet and a guess is right for
        # nearly every row: without the hint the planner takes a lookup per row, the very cost the
        # guess avoids (5 M rows: 7 s against 1.4–1.7 s). The server's work_mem serves: a hash of 1 M
        # default variants in 16 batches took as long as in one (64 MB).
        return Ddl(("SET LOCAL enable_nestloop = off;\n" if hash_join else "")
                   + "-- squawk-ignore ban-drop-table\n"
                   f"DROP TABLE IF EXISTS {V}.rebuild_recheck;\n"
                   f"CREATE UNLOGGED TABLE {V}.rebuild_recheck AS\n"
                   f"SELECT row_number() OVER () AS n, r.k, r.t FROM ({self.guess[1]}) r(k, t);\n"
                   "-- squawk-ignore require-concurrent-index-creation\n"
                   f"CREATE INDEX ON {V}.rebuild_recheck (n)",
                   f"none on {self.table} (reads the copy and what the guess depends on)", gentle=True)

    def _recopy_guessed(self, ctx: Context, columns: list[str]) -> int:
        """Copy the rows guessed wrong again, with `overrides`, a thousand per transaction (each
        holds the quarantine entries it writes only that long). A run resumed once the copy has a
        unique index logs them instead: copied again outside the catch-up's one snapshot, a row
        could take a unique value that a row not replayed yet still holds in the copy."""
        try:
            ctx.run(self._recheck_ddl(), self.name)
        except errors.ConfigurationLimitExceeded as exc:
            # A role's or database's temp_file_limit refuses the hash join's spill files: the
            # planner's own plan (a lookup per row) needs none.
            ctx.reporter.note(f"{self.table}: checking the guessed values by lookup instead ({exc})")
            ctx.run(self._recheck_ddl(hash_join=False), self.name)
        total = int(ctx.scalar(f"SELECT count(*) FROM {V}.rebuild_recheck") or 0)
        if ctx.scalar("SELECT count(*) > 0 FROM pg_index WHERE indrelid = %s::regclass AND indisunique",
                      (f"{V}.{self.table}",)):
            ctx.conn.execute(f"INSERT INTO {V}.rebuild_log (table_name, row_id)"
                             f" SELECT %s, r.k FROM {V}.rebuild_recheck r", (self.table,))
        else:
            sql = f"SELECT {V}.rebuild_recopy(%s, %s, %s, %s)"
            for lo in range(0, total, RECOPY_ROWS):
                with ctx.conn.transaction():
                    ctx.conn.execute(sql, (self.table, self.replay_sql(columns), lo, lo + RECOPY_ROWS))
        ctx.run(Ddl(f"-- squawk-ignore ban-drop-table\nDROP TABLE {V}.rebuild_recheck",
                    "none on application tables"), self.name)
        return total

    def _start_ddl(self) -> Ddl:
        t = self.table
        return Ddl(
            section("rebuild.sql", "log_table") + ";\n"
            + section("rebuild.sql", "fn_rebuild_log") + ";\n"
            + section("rebuild.sql", "fn_rebuild_replay") + ";\n"
            + section("rebuild.sql", "fn_rebuild_recopy") + ";\n"
            + section("rebuild.sql", "fn_rebuild_swap") + ";\n"
            # Identity and generated columns come along: the copy's identity takes over the
            # sequence's state at the swap, its generated columns compute as the table's do.
            f"CREATE TABLE IF NOT EXISTS {V}.{t} (LIKE public.{t} INCLUDING DEFAULTS INCLUDING STORAGE"
            " INCLUDING COMMENTS INCLUDING IDENTITY INCLUDING GENERATED);\n"
            f"DROP TRIGGER IF EXISTS {LOG_TRIGGER} ON public.{t};\n"
            f"CREATE TRIGGER {LOG_TRIGGER} AFTER INSERT OR UPDATE OR DELETE ON public.{t}\n"
            f"    FOR EACH ROW EXECUTE FUNCTION {V}.rebuild_log({self._log_argument()});\n"
            f"DROP TRIGGER IF EXISTS {LOG_TRIGGER}_truncate ON public.{t};\n"
            f"CREATE TRIGGER {LOG_TRIGGER}_truncate AFTER TRUNCATE ON public.{t}\n"
            f"    FOR EACH STATEMENT EXECUTE FUNCTION {V}.rebuild_log()",
            f"SHARE ROW EXCLUSIVE on {t} (creating the change-log trigger; milliseconds)")

    def _log_argument(self) -> str:
        """The log trigger's argument: none for a key named `id` (read directly), else its name."""
        if self.pk.column == "id":
            return ""
        return "'" + self.pk.column.replace("'", "''") + "'"

    def _key_args(self) -> str:
        """The key column and its type, as the arguments rebuild_replay and rebuild_swap take."""
        return ", ".join("'" + v.replace("'", "''") + "'" for v in (self.pk.column, self.pk.sqltype))

    def _swap_ddl(self, columns: list[str], referenced: list[str]) -> Ddl:
        tables = ", ".join(f"public.{t}" for t in [*referenced, self.table])
        return Ddl(
            f"LOCK TABLE {tables} IN ACCESS EXCLUSIVE MODE;\n"
            f"INSERT INTO {V}.state (key, value, updated_at)\n"
            f"SELECT '{self.key}', jsonb_build_object('method', 'rebuild', 'swapped', true, 'validate',\n"
            f"       to_jsonb({V}.rebuild_swap('{self.table}', {self._key_args()},\n"
            f"       $copy${self.replay_sql(columns)}$copy$))), now()\n"
            "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, updated_at = now()",
            f"ACCESS EXCLUSIVE on {tables} (the rest of the change log, then the swap; milliseconds)")

    def ddl(self, utf8: bool = True) -> list[Ddl]:
        t = self.table
        copy = Ddl(self.copy_action(self.columns).replace(batch(self.alias), f"{self.alias}.ctid = ANY($1)"),
                   f"none: reads one range of {t}'s pages at a time (no row locks; changes are logged meanwhile)")
        # Not CONCURRENTLY, on purpose: the copy has no other reader or writer before the swap.
        index = [Ddl(f"-- squawk-ignore require-concurrent-index-creation\n"
                     f"CREATE INDEX IF NOT EXISTS {n} ON {V}.{t} {d}", f"SHARE on {V}.{t} (the copy; nobody else uses it)")
                 for n, d in self.indexes]
        index[0] = Ddl(f"-- and a copy of each index of public.{t} (its pg_get_indexdef), built the same way\n"
                       + index[0].sql, index[0].locks)
        recopy = [] if self.guess is None else [self._recheck_ddl(), Ddl(
            "-- the first thousand rows, then each next thousand\n"
            f"SELECT {V}.rebuild_recopy('{t}', $copy${self.replay_sql(self.columns)}$copy$, 0, {RECOPY_ROWS})",
            f"none on {t} (copies the rows guessed wrong again, a thousand per transaction)")]
        return [self._start_ddl(), copy, *recopy, *index,
                Ddl(f"SET TRANSACTION ISOLATION LEVEL REPEATABLE READ;\n"
                    f"SELECT {V}.rebuild_replay('{t}', {self._key_args()}, $copy${self.replay_sql(self.columns)}$copy$,"
                    " NULL)",
                    f"none on {t} (replays logged changes onto the copy, until few are left)"),
                self._swap_ddl(self.columns, list(self.referenced)), self._drop_retired_ddl()]

    def undo_ddl(self) -> list[Ddl]:
        t = self.table
        copy = [] if t in OWN_RELATIONS else [Ddl(f"DROP TABLE IF EXISTS {V}.{t}", "none on application tables")]
        return [Ddl(f"DROP TRIGGER IF EXISTS {LOG_TRIGGER} ON public.{t}", f"ACCESS EXCLUSIVE on {t}"),
                Ddl(f"DROP TRIGGER IF EXISTS {LOG_TRIGGER}_truncate ON public.{t}", f"ACCESS EXCLUSIVE on {t}"),
                *copy,
                Ddl(f"DROP TABLE IF EXISTS {V}.rebuild_recheck", "none on application tables"),
                self._drop_retired_ddl(),
                Ddl(f"DROP TABLE IF EXISTS {V}.rebuild_log", "none on application tables")]

    def _drop_retired_ddl(self) -> Ddl:
        return Ddl("-- squawk-ignore ban-drop-table\n"
                   f"DROP TABLE IF EXISTS {RETIRED}.{self.table};\n"
                   f"DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                   f" WHERE n.nspname = '{RETIRED}') THEN DROP SCHEMA IF EXISTS {RETIRED}; END IF; END $$",
                   f"ACCESS EXCLUSIVE on {RETIRED}.{self.table} (the old table, moved aside by the swap; nobody"
                   " uses it)")

    def locks(self) -> str:
        return (f"no row locks while copying {self.table}; a SHARE ROW EXCLUSIVE to add the"
                f" change-log trigger and, to swap the copy in, ACCESS EXCLUSIVE on {self.table} and the tables"
                " its foreign keys reference (milliseconds each, lock_timeout and retries)")

    # -- running -----------------------------------------------------------------------------
    def _state(self, ctx: Context) -> dict[str, Any]:
        return dict(state.get(ctx.conn, self.key) or {})

    def ineligible(self, ctx: Context) -> str | None:
        """Why the table cannot be rebuilt faithfully (then it is backfilled in place), or None."""
        if self.table in OWN_RELATIONS:
            return f"its copy would take the name of the migration's own {V}.{self.table}"
        return ctx.scalar(INELIGIBLE, (self.pk.column, f"public.{self.table}"))

    def check(self, ctx: Context) -> bool:
        st = self._state(ctx)
        if st.get("method") == "in_place":
            return self.in_place.check(ctx)
        return bool(st.get("swapped")) and not self._unvalidated(ctx, st)

    def apply(self, ctx: Context) -> dict[str, Any]:
        st = self._state(ctx)
        if not st.get("method"):
            why = self.ineligible(ctx)
            st = {"method": "in_place" if why else "rebuild", **({"why": why} if why else {})}
            state.put(ctx.conn, self.key, st)
            if why:
                ctx.reporter.note(f"{self.table}: backfilled in place, not rebuilt: {why}")
        if st["method"] == "in_place":
            return {**self.in_place.apply(ctx), "method": "in_place", "why": st.get("why")}
        out: dict[str, Any] = {"method": "rebuild"}
        if not st.get("swapped"):
            self._stage(ctx, st, "copying")
            ctx.run(self._start_ddl(), self.name)
            columns = self._live_columns(ctx)
            res = run_backfill(ctx, self.name, self.table, [self.copy_action(columns)], [], None, locking=False,
                               on_rewrite=f"TRUNCATE {V}.{self.table}", key=self.pk)
            out.update(rows=res.rows, batches=res.batches, copy_s=round(res.seconds, 3),
                       rows_per_s=round(res.rows_per_s), retried_rows=res.retried_rows,
                       max_batch_ms=round(res.max_batch_ms, 1))
            if self.guess is not None:  # also after a resume: the copy may have been guessed before
                t0 = time.perf_counter()
                self._stage(ctx, st, "copying again what was guessed wrong")
                out["recopied"] = self._recopy_guessed(ctx, columns)
                out["recopy_s"] = round(time.perf_counter() - t0, 3)
            t0 = time.perf_counter()
            self._stage(ctx, st, "indexing the copy")
            out["logged_rows_set_aside"] = self._build_indexes(ctx)
            out["index_s"] = round(time.perf_counter() - t0, 3)
            ctx.run(Ddl(f"ANALYZE {V}.{self.table}", "none on application tables", gentle=True), self.name)
            t0 = time.perf_counter()
            self._stage(ctx, st, "replaying logged changes")
            out["replayed"] = self._catch_up(ctx, columns)
            out["catch_up_s"] = round(time.perf_counter() - t0, 3)
            t0 = time.perf_counter()
            self._stage(ctx, st, "swapping")
            referenced = [str(r[0]) for r in ctx.conn.execute(
                "SELECT DISTINCT f.relname FROM pg_constraint k JOIN pg_class f ON f.oid = k.confrelid"
                " WHERE k.conrelid = %s::regclass AND k.contype = 'f' AND f.oid <> k.conrelid ORDER BY 1",
                (f"public.{self.table}",))]
            out["swap_attempts"] = ctx.run(self._swap_ddl(columns, referenced), self.name)
            out["swap_s"] = round(time.perf_counter() - t0, 3)
            ctx.reporter.note(f"{self.table}: the rebuilt copy is in place")
            st = self._state(ctx)
        t0 = time.perf_counter()
        ctx.run(self._drop_retired_ddl(), self.name)  # also after a crash right after the swap
        out["drop_old_s"] = round(time.perf_counter() - t0, 3)
        t0 = time.perf_counter()
        self._stage(ctx, st, "validating foreign keys")
        for name in self._unvalidated(ctx, st):
            ctx.run(Ddl(f'ALTER TABLE public.{self.table} VALIDATE CONSTRAINT "{name}"',
                        f"SHARE UPDATE EXCLUSIVE on {self.table} (reads and writes go on)", gentle=True), self.name)
        out["revalidated"] = list(st.get("validate") or [])
        out["validate_s"] = round(time.perf_counter() - t0, 3)
        self._stage(ctx, st, "done")
        return out

    def _stage(self, ctx: Context, st: dict[str, Any], stage: str) -> None:
        """What `migrate status` shows while the step runs (the swap writes its own state)."""
        state.put(ctx.conn, self.key, {**st, "stage": stage})

    def _live_columns(self, ctx: Context) -> list[str]:
        return [str(r[0]) for r in ctx.conn.execute(
            "SELECT quote_ident(attname) FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0"
            " AND NOT attisdropped AND attgenerated = '' ORDER BY attnum", (f"public.{self.table}",))]

    def _unvalidated(self, ctx: Context, st: dict[str, Any]) -> list[str]:
        names = list(st.get("validate") or [])
        if not names:
            return []
        return [str(r[0]) for r in ctx.conn.execute(
            "SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass AND conname = ANY(%s)"
            " AND NOT convalidated ORDER BY conname", (f"public.{self.table}", names))]

    def _build_indexes(self, ctx: Context) -> int:
        """The live table's valid indexes, then the plan's, on the copy (skipping those built before a
        crash), on `backfill_workers` connections. A row the application moved while the copy ran
        can have been copied twice; every such row is in the change log (the replay copies it again
        afterwards), so logged rows are taken out of the copy before the unique indexes exist."""
        t, conn = self.table, ctx.conn
        with conn.transaction():
            conn.execute("SET LOCAL search_path = pg_catalog")  # fully qualified definitions
            live = conn.execute(
                "SELECT c.relname, pg_get_indexdef(i.indexrelid), i.indisunique, k.conname"
                " FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
                " LEFT JOIN pg_constraint k ON k.conindid = i.indexrelid AND k.contype = 'p'"
                " WHERE i.indrelid = %s::regclass AND i.indisvalid AND i.indisready"
                " ORDER BY i.indisunique DESC, c.relname", (f"public.{t}",)).fetchall()
        wanted: list[tuple[str, str, bool, str | None]] = []
        for name, definition, unique, pkey in live:
            on = f" ON public.{t} "
            if on not in definition:
                raise RuntimeError(f"unexpected index definition for {name}: {definition}")
            wanted.append((str(name), definition.replace(on, f" ON {V}.{t} ", 1), bool(unique), pkey))
        for name, definition in self.indexes:
            if name not in {w[0] for w in wanted}:
                wanted.append((name, f"CREATE INDEX {name} ON {V}.{t} {definition}", False, None))
        have = {str(n) for (n,) in conn.execute("SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
                                                " WHERE i.indrelid = %s::regclass", (f"{V}.{t}",))}
        todo = [w for w in wanted if w[0] not in have]
        removed = 0
        if any(w[2] for w in todo):
            removed = conn.execute(f"DELETE FROM {V}.{t} c USING (SELECT DISTINCT row_id FROM {V}.rebuild_log"
                                   f" WHERE table_name = %s) l WHERE c.{self.pk.ident} = l.row_id::{self.pk.sqltype}",
                                   (t,)).rowcount
        ddls = [Ddl(d, f"SHARE on {V}.{t} (the copy; nobody else uses it)") for _, d, _, _ in todo]
        try:
            execute_all(ctx.url, ddls, ctx.policy, ctx.backfill_workers, f"villager-shop rebuild {t}")
        except (errors.UniqueViolation, errors.DuplicateTable):
            # Identical copies of one row, or an index a killed run's backend finished after all
            # (it notices its client is gone only at its next check): build what is missing.
            removed += self._deduplicate(conn)
            missing = [d for (name, _, _, _), d in zip(todo, ddls, strict=True)
                       if not relation_exists(ctx.conn, f"{V}.{name}")]
            execute_all(ctx.url, missing, ctx.policy, ctx.backfill_workers, f"villager-shop rebuild {t}")
        has_pkey = ctx.scalar("SELECT count(*) > 0 FROM pg_constraint WHERE conrelid = %s::regclass AND contype = 'p'",
                              (f"{V}.{t}",))
        for name, _, _, pkey in wanted:
            if pkey and not has_pkey:  # also when a crash came between its index and this
                ctx.run(Ddl(f'ALTER TABLE {V}.{t} ADD CONSTRAINT "{pkey}" PRIMARY KEY USING INDEX "{name}"',
                            f"ACCESS EXCLUSIVE on {V}.{t} (the copy)"), self.name)
        return removed

    def _deduplicate(self, conn: psycopg.Connection[Any]) -> int:
        """Identical copies of one row: keep one."""
        k = self.pk.ident
        cur = conn.execute(f"DELETE FROM {V}.{self.table} a USING {V}.{self.table} b"
                           f" WHERE a.{k} = b.{k} AND a.ctid > b.ctid")
        return cur.rowcount

    def _catch_up(self, ctx: Context, columns: list[str]) -> int:
        """Replay the change log onto the copy until a round finds only a few changes: what is left
        is what the swap replays under its locks. Each round takes every change logged so far and
        reads the log and the table in one snapshot, so that the copy is the table as of one moment
        (its unique indexes hold; rebuild.sql, rebuild_replay)."""
        sql = f"SELECT {V}.rebuild_replay(%s, %s, %s, %s, NULL)"
        replayed = conflicts = 0
        for _ in range(10_000):
            try:
                with ctx.conn.transaction():
                    ctx.conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                    n = int(ctx.scalar(sql, (self.table, self.pk.column, self.pk.sqltype,
                                             self.replay_sql(columns))) or 0)
            except LOCK_RETRYABLE:
                # The application changed a replayed row's quarantine entry after the round's
                # snapshot (pricing a product links its waiting items, say). That write logged the
                # row again, so the round's decision about it was stale anyway: take the round again,
                # retried like all DDL.
                conflicts += 1
                if conflicts >= ctx.policy.max_attempts:
                    raise
                time.sleep(ctx.policy.delay(conflicts))
                continue
            replayed += n
            if n < SWAP_REPLAY_ROWS:
                break
        return replayed
