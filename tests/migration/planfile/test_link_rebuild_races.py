r"""link_child_reference's copy-and-swap against an application that does its worst to the
referencing table while the copy runs and right around the swap. The table is keyed by a varchar
natural key holding quotes, spaces, braces, backslashes and non-ASCII letters; its reference may be
NULL; it has a unique index besides its primary key. A writer keeps a ledger of every acknowledged
write while it inserts, deletes, changes the primary key itself, moves rows to another parent,
moves a value of the unique index from one row to another, renames a parent's key (ON UPDATE
CASCADE), adds parents, and once TRUNCATEs the table mid-copy and fills it again (same keys with
other values, and new keys). The run is killed with SIGKILL mid-copy and resumed without the plan
file. Afterwards the table holds exactly the ledger's rows, every link is the default child of the
row's parent, verify passes, and rollback gives back the table as its catalog described it before."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg

from tests.helpers import ROOT, cli_env, run_cli

SCHEMA = r"""
CREATE TABLE shelves (sid integer PRIMARY KEY, label text NOT NULL, rack text NOT NULL DEFAULT 'A',
  capacity integer NOT NULL CHECK (capacity > 0));
CREATE TABLE stock (
  code varchar(160) PRIMARY KEY,
  sid integer REFERENCES shelves (sid) ON UPDATE CASCADE,
  qty integer NOT NULL DEFAULT 0 CHECK (qty >= 0),
  note text,
  slot integer) WITH (fillfactor = 90);
CREATE INDEX stock_sid_idx ON stock (sid);
CREATE UNIQUE INDEX stock_slot_idx ON stock (slot);
CREATE INDEX stock_note_idx ON stock (lower(note)) WHERE note IS NOT NULL;
COMMENT ON TABLE stock IS 'what lies on which shelf';
INSERT INTO shelves SELECT i, 'Shelf ' || i, chr(65 + i % 26), 1 + i % 40 FROM generate_series(1, 400) i;
INSERT INTO stock SELECT
  CASE i % 6 WHEN 0 THEN 'it''s "' || i || '"' WHEN 1 THEN ' spaced  ' || i || ' '
             WHEN 2 THEN 'Ünïcødé ☃ ' || i WHEN 3 THEN 'back\slash {' || i || ',}' ELSE 'S' || i END,
  CASE WHEN i % 9 = 0 THEN NULL ELSE 1 + i % 400 END, i % 50,
  CASE WHEN i % 4 = 0 THEN NULL ELSE 'n' || i END, CASE WHEN i % 3 = 0 THEN NULL ELSE i END
FROM generate_series(1, 30000) i;
"""

PLAN = """
version = 1
name = "shelving"

[[operation]]
type = "split_child"
parent = "shelves"
child = "shelf_specs"
columns = ["rack", "capacity"]
fk = "shelf_sid"

[[operation]]
type = "link_child_reference"
table = "stock"
reference = "sid"
child = "shelf_specs"
fk = "shelf_spec_id"
"""

# The catalog's description of a table: columns (and their order), constraints, indexes, triggers,
# options, owner, grants, replica identity, comment.
FINGERPRINT = """
SELECT 'column order', '', string_agg(a.attname, ',' ORDER BY a.attnum)
  FROM pg_attribute a WHERE a.attrelid = %(t)s::regclass AND a.attnum > 0 AND NOT a.attisdropped
UNION ALL
SELECT 'column', a.attname::text, concat_ws(' | ', format_type(a.atttypid, a.atttypmod), a.attnotnull, a.attidentity,
       a.attgenerated, a.attstorage, a.attcollation::regcollation::text, pg_get_expr(d.adbin, d.adrelid))
  FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
 WHERE a.attrelid = %(t)s::regclass AND a.attnum > 0 AND NOT a.attisdropped
UNION ALL
SELECT 'constraint', conname::text, concat_ws(' | ', contype, pg_get_constraintdef(oid), convalidated, condeferrable)
  FROM pg_constraint WHERE conrelid = %(t)s::regclass
UNION ALL
SELECT 'index', c.relname::text, concat_ws(' | ', pg_get_indexdef(i.indexrelid), i.indisvalid, i.indisready,
       i.indisprimary, i.indisunique)
  FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = %(t)s::regclass
UNION ALL
SELECT 'trigger', tgname::text, concat_ws(' | ', pg_get_triggerdef(oid), tgenabled)
  FROM pg_trigger WHERE tgrelid = %(t)s::regclass AND NOT tgisinternal
UNION ALL
SELECT 'table', relname::text, concat_ws(' | ', relkind, relnamespace::regnamespace::text, reloptions::text,
       relowner::regrole::text, relacl::text, relreplident, relpersistence, obj_description(oid, 'pg_class'))
  FROM pg_class WHERE oid = %(t)s::regclass
ORDER BY 1, 2, 3
"""

Row = tuple[Any, ...]  # sid, qty, note, slot (the key is the ledger's key)


def _fingerprint(url: str, table: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as c:
        return c.execute(FINGERPRINT, {"t": f"public.{table}"}).fetchall()


def _rows(url: str) -> dict[str, Row]:
    with psycopg.connect(url) as c:
        return {r[0]: tuple(r[1:]) for r in c.execute("SELECT code, sid, qty, note, slot FROM stock")}


def _one(url: str, sql: str) -> Any:
    with psycopg.connect(url) as c:
        row = c.execute(sql).fetchone()
        return row[0] if row else None


class Ledger:
    """What the table must hold: every acknowledged write applied, in order. Keys are also kept in
    a list for picking one at random in constant time."""

    def __init__(self, rows: dict[str, Row]) -> None:
        self.rows: dict[str, Row] = {}
        self.keys: list[str] = []
        self.pos: dict[str, int] = {}
        for k, v in rows.items():
            self.put(k, v)

    def put(self, key: str, row: Row) -> None:
        if key not in self.rows:
            self.pos[key] = len(self.keys)
            self.keys.append(key)
        self.rows[key] = row

    def drop(self, key: str) -> None:
        del self.rows[key]
        i = self.pos.pop(key)
        last = self.keys.pop()
        if i < len(self.keys):
            self.keys[i] = last
            self.pos[last] = i

    def pick(self, rng: random.Random) -> str:
        return self.keys[rng.randrange(len(self.keys))]


KEY_SHAPES = ["new 'q' {i}", " pad {i}  ", "Ωmega ☃ {i}", 'dq "{i}" {{a,b}}', "bs \\ {i} \\\\", "plain{i}"]


class Writer:
    """The application: one autocommit session writing the referencing table (and now and then its
    parents) until stopped; every statement's effect goes into the ledger once acknowledged."""

    def __init__(self, url: str, ledger: Ledger, parents: list[int]) -> None:
        self.url, self.ledger, self.parents = url, ledger, parents
        self.errors: list[str] = []
        self.done: Counter[str] = Counter()
        self.truncate_now, self.truncated = threading.Event(), threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.rng = random.Random(20261206)

    def __enter__(self) -> Writer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)
        assert not self._thread.is_alive(), "the writer did not stop"

    def _sid(self) -> int | None:
        return None if self.rng.random() < 0.15 else self.rng.choice(self.parents)

    def _run(self) -> None:
        i = 0
        with psycopg.connect(self.url, autocommit=True) as c:
            while not self._stop.is_set():
                i += 1
                try:
                    if self.truncate_now.is_set() and not self.truncated.is_set():
                        self._truncate(c, i)
                        self.truncated.set()
                    else:
                        self._one_write(c, i)
                except psycopg.Error as e:  # the statement (or transaction) left nothing: the ledger holds
                    self.errors.append(f"{type(e).__name__}: {e}".splitlines()[0])
                except AssertionError as e:  # the table lost a row the ledger has: no point going on
                    self.errors.append(str(e))
                    return
                time.sleep(0.001)

    def _set(self, kind: str, rows: list[tuple[Any, ...]]) -> None:
        for code, *row in rows:
            self.ledger.put(code, tuple(row))
        self.done[kind] += 1

    def _one_write(self, c: psycopg.Connection[Any], i: int) -> None:
        led, rng = self.ledger, self.rng
        r = rng.random()
        back = " RETURNING code, sid, qty, note, slot"
        if r < 0.22 or not led.keys:
            key = rng.choice(KEY_SHAPES).format(i=i)
            self._set("insert", c.execute("INSERT INTO stock (code, sid, qty, note) VALUES (%s, %s, %s, %s)" + back,
                                          (key, self._sid(), i % 70, rng.choice([None, f"w{i}"]))).fetchall())
            return
        key = led.pick(rng)
        if r < 0.40:  # the primary key itself
            if len(key) > 140:
                return
            got = c.execute("UPDATE stock SET code = code || %s WHERE code = %s" + back,
                            (rng.choice(["-x", " ✓", "'", "{}"]), key)).fetchall()
            self._expect(key, got)
            led.drop(key)
            self._set("key update", got)
        elif r < 0.55:  # another parent, or none
            self._expect(key, got := c.execute("UPDATE stock SET sid = %s WHERE code = %s" + back,
                                               (self._sid(), key)).fetchall())
            self._set("reference update", got)
        elif r < 0.68:
            self._expect(key, got := c.execute("UPDATE stock SET qty = qty + 1, note = %s WHERE code = %s" + back,
                                               (rng.choice([None, f"u{i}"]), key)).fetchall())
            self._set("update", got)
        elif r < 0.76:  # an item moves into a slot, which whatever held it gives up (a unique index)
            slot = rng.randrange(1, 30000)
            with c.transaction():
                freed = c.execute("UPDATE stock SET slot = NULL WHERE slot = %s" + back, (slot,)).fetchall()
                got = c.execute("UPDATE stock SET slot = %s WHERE code = %s" + back, (slot, key)).fetchall()
            self._expect(key, got)
            self._set("slot move", freed + got)
        elif r < 0.88:
            gone = c.execute("DELETE FROM stock WHERE code = %s RETURNING code", (key,)).fetchall()
            self._expect(key, gone)
            led.drop(key)
            self.done["delete"] += 1
        elif r < 0.96:  # a statement over many rows: one parent's
            sid = rng.choice(self.parents)
            self._set("many rows", c.execute("UPDATE stock SET qty = qty + 1 WHERE sid = %s" + back, (sid,)).fetchall())
        elif r < 0.98:  # a new parent (its default child comes with it), and a row of it
            sid = max(self.parents) + 1
            c.execute("INSERT INTO shelves (sid, label, rack, capacity) VALUES (%s, %s, 'Z', 5)", (sid, f"new {sid}"))
            self.parents.append(sid)
            self._set("new parent", c.execute("INSERT INTO stock (code, sid, qty) VALUES (%s, %s, 1)" + back,
                                              (f"on new shelf {sid}", sid)).fetchall())
        else:  # a parent's key renamed: ON UPDATE CASCADE rewrites its rows' reference
            old = rng.choice(self.parents)
            new = max(self.parents) + 1
            if c.execute("UPDATE shelves SET sid = %s WHERE sid = %s RETURNING sid", (new, old)).fetchall():
                self.parents[self.parents.index(old)] = new
                for k, (sid, *rest) in list(led.rows.items()):
                    if sid == old:
                        led.rows[k] = (new, *rest)
                self.done["parent key rename"] += 1

    def _expect(self, key: str, got: list[tuple[Any, ...]]) -> None:
        if len(got) != 1:
            raise AssertionError(f"the ledger's row {key!r} was not in the table ({len(got)} rows)")

    def _truncate(self, c: psycopg.Connection[Any], i: int) -> None:
        """TRUNCATE, then half the old keys again with other values, and as many new keys."""
        led, rng = self.ledger, self.rng
        again = led.keys[::2]
        codes = again + [f"after truncate ‘{j}’ {i}" for j in range(len(again))]
        sids = [self._sid() for _ in codes]
        qtys = [rng.randrange(1000, 2000) for _ in codes]
        notes = [rng.choice([None, f"t{j}"]) for j in range(len(codes))]
        slots = [led.rows[k][3] for k in again] + [None] * len(again)
        with c.transaction():
            c.execute("TRUNCATE stock")
            rows = c.execute("INSERT INTO stock (code, sid, qty, note, slot)"
                             " SELECT * FROM unnest(%s::text[], %s::int[], %s::int[], %s::text[], %s::int[])"
                             " RETURNING code, sid, qty, note, slot", (codes, sids, qtys, notes, slots)).fetchall()
        for k in list(led.rows):
            led.drop(k)
        self._set("truncate", rows)


def test_copy_and_swap_under_a_hostile_writer_killed_and_resumed(
        fresh_db: str, tmp_path: Path, server_version: int) -> None:
    t_start = time.monotonic()
    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute(SCHEMA)
    plan = tmp_path / "shelving.toml"
    plan.write_text(PLAN)
    before = {t: _fingerprint(fresh_db, t) for t in ("stock", "shelves")}
    ledger = Ledger(_rows(fresh_db))
    parents = list(range(1, 401))
    # A copy of a few seconds: batches of 100 rows (1,000 on the page walk of PostgreSQL 14+, whose
    # copy batches are bounded by time) with a pause after each.
    knobs = {"VILLAGER_BATCH_SIZE": "100", "VILLAGER_BACKFILL_WORKERS": "1",
             "VILLAGER_BATCH_PAUSE_MS": "120" if server_version >= 140000 else "8"}
    stage = "SELECT value ->> 'stage' FROM villager_migration.state WHERE key = 'rebuild:stock'"
    timings: dict[str, float] = {}
    with Writer(fresh_db, ledger, parents) as app:
        t0 = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-m", "villager_shop", "migrate", "run", "--plan", str(plan)],
                                env=cli_env(fresh_db, **knobs), cwd=ROOT, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and proc.poll() is None:  # the copy has begun
                if _one(fresh_db, "SELECT to_regclass('villager_migration.stock') IS NOT NULL") and _one(
                        fresh_db, "SELECT EXISTS (SELECT FROM villager_migration.stock)"):
                    break
                time.sleep(0.01)
            assert proc.poll() is None, "the run ended before its copy began: " + (proc.stderr.read() if proc.stderr else "")
            timings["to copy"] = time.monotonic() - t0
            app.truncate_now.set()
            assert app.truncated.wait(30), app.errors
            assert _one(fresh_db, stage) == "copying", "the table was truncated after the copy ended"
            time.sleep(1.0)  # the copy goes on over the refilled table, then the run is killed
            assert proc.poll() is None and _one(fresh_db, stage) == "copying", "the copy ended before the kill"
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        timings["killed after"] = time.monotonic() - t0
        t1 = time.monotonic()
        res = run_cli("migrate", "run", database_url=fresh_db, **knobs)
        timings["resumed run"] = time.monotonic() - t1
        assert res.returncode == 0, res.stderr[-3000:]
        time.sleep(0.3)  # the application goes on writing after the swap
    assert app.errors == [], app.errors[:10]
    for kind in ("insert", "key update", "reference update", "update", "slot move", "delete", "many rows", "truncate"):
        assert app.done[kind] > 0, app.done

    with psycopg.connect(fresh_db) as c:
        st = c.execute("SELECT value FROM villager_migration.state WHERE key = 'rebuild:stock'").fetchone()
        assert st is not None and st[0]["method"] == "rebuild" and st[0]["swapped"] is True, st
        assert c.execute("SELECT tgname FROM pg_trigger WHERE tgrelid = 'public.stock'::regclass"
                         " AND tgname LIKE 'villager_rebuild_log%'").fetchall() == []
        assert c.execute("SELECT to_regclass('villager_migration.stock'),"
                         " to_regclass('villager_migration_retired.stock')").fetchone() == (None, None)
        # Every link is the default child of the row's parent; no parent, no link.
        wrong = c.execute("SELECT s.code, s.sid, s.shelf_spec_id, d.id FROM stock s"
                          " LEFT JOIN shelf_specs d ON d.shelf_sid = s.sid AND d.is_default"
                          " WHERE s.shelf_spec_id IS DISTINCT FROM d.id OR (s.sid IS NOT NULL AND d.id IS NULL)"
                          " LIMIT 10").fetchall()
        assert wrong == []
    rows = _rows(fresh_db)
    assert rows.keys() == ledger.rows.keys(), (sorted(rows.keys() - ledger.rows.keys())[:10],
                                               sorted(ledger.rows.keys() - rows.keys())[:10])
    differ = [(k, rows[k], ledger.rows[k]) for k in rows if rows[k] != ledger.rows[k]]
    assert differ == [], differ[:10]

    res = run_cli("migrate", "verify", database_url=fresh_db)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    res = run_cli("migrate", "rollback", "--yes", database_url=fresh_db)
    assert res.returncode == 0, res.stderr[-3000:]
    assert {t: _fingerprint(fresh_db, t) for t in ("stock", "shelves")} == before
    assert _rows(fresh_db) == ledger.rows
    timings["total"] = time.monotonic() - t_start
    print(f"\nPostgreSQL {server_version}: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items())
          + f"; writes {dict(app.done)}")
