"""Plans an outside user writes for schemas none of the shipped plans knows, run the whole way
(kill -9 and resume, verify, rollback, complete), and the plans `migrate plan` must refuse."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.helpers import ROOT, cli_env, rows, run_cli, scalar
from tests.migration.planfile.test_unseen_schema import Writers
from villager_shop.migration.steps.rebuild import OWN_RELATIONS


def killed_when(url: str, args: list[str], ready: Callable[[], bool], **env: str) -> None:
    """`villager-shop ARGS` killed with SIGKILL as soon as `ready()` holds (polled)."""
    proc = subprocess.Popen([sys.executable, "-m", "villager_shop", *args], env=cli_env(url, **env), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None and not ready():
            time.sleep(0.01)
        assert proc.poll() is None, "the run ended before it could be interrupted: " + (
            proc.stderr.read()[-2000:] if proc.stderr else "")
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


class _Writer(threading.Thread):
    def __init__(self, url: str, statement: str) -> None:
        super().__init__()
        self.url, self.statement, self.error = url, statement, ""
        self.pid = 0

    def run(self) -> None:
        try:
            with psycopg.connect(self.url, autocommit=True) as c:
                self.pid = c.info.backend_pid
                c.execute(self.statement.encode())
        except psycopg.Error as e:
            self.error = str(e)


def _while_waiting(url: str, statement: str) -> Callable[[], None]:
    """Start `statement` on a connection of its own; return once it waits for a lock (or ended):
    the caller then commits what it waits for, and calls the result to join it."""
    w = _Writer(url, statement)
    w.start()
    while w.is_alive() and not (w.pid and scalar(url, f"SELECT wait_event_type = 'Lock' FROM pg_stat_activity"
                                                       f" WHERE pid = {w.pid}")):
        time.sleep(0.01)

    def join() -> None:
        w.join()
        assert w.error == "", w.error
    return join


def _exists(url: str, relation: str) -> bool:
    return bool(scalar(url, f"SELECT to_regclass('{relation}') IS NOT NULL"))


SOFT = """
CREATE TABLE labels (code text PRIMARY KEY, color text NOT NULL DEFAULT 'grey', weight integer);
CREATE TABLE notes (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, label text, body text);
INSERT INTO labels SELECT 'L' || i, (ARRAY['red', 'blue'])[1 + i % 2], i FROM generate_series(1, 50) i;
INSERT INTO notes (label, body)
SELECT CASE WHEN i % 10 = 0 THEN 'GONE' || i % 100 ELSE 'L' || (1 + i % 50) END, repeat('x', 300)
  FROM generate_series(1, 3000) i;
"""

SOFT_PLAN = """
version = 1
name = "soft"

[[operation]]
type = "split_child"
parent = "labels"
child = "label_styles"
columns = ["color", "weight"]
fk = "label_code"

[[operation]]
type = "link_child_reference"
table = "notes"
reference = "label"
child = "label_styles"
fk = "style_id"
"""

WRONG_LINKS = """
SELECT n.id, n.label, n.style_id, d.id FROM notes n
  LEFT JOIN label_styles d ON d.label_code = n.label AND d.is_default
 WHERE n.style_id IS DISTINCT FROM d.id
"""


def _parent_changes(url: str, gone: str, renamed: str, named: str) -> None:
    """The old application deletes a label, renames one (its notes keep the old name: no foreign
    key carries it) and renames another to a name that only notes used so far."""
    with psycopg.connect(url, autocommit=True) as c:
        c.execute(f"DELETE FROM labels WHERE code = '{gone}'")
        c.execute(f"UPDATE labels SET code = '{renamed}-x' WHERE code = '{renamed}'")
        c.execute(f"UPDATE labels SET code = 'GONE{named}' WHERE code = 'L{named}'")


def test_a_soft_reference_lets_go_of_a_deleted_or_renamed_parent_during_and_after_the_copy(
        fresh_db: str, tmp_path: Path) -> None:
    """A reference with no foreign key: a parent deleted, or its key renamed, leaves its rows' link
    NULL (the rows still name the old key) and a row that names the new key takes its default
    child: while the referencing table is copied (the rows were copied with their old link), and
    after the swap."""
    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute(SOFT)
    plan = tmp_path / "soft.toml"
    plan.write_text(SOFT_PLAN)
    copied = "SELECT count(*) > 0 FROM villager_migration.notes WHERE label IN ('L1', 'L2', 'GONE20')"
    env = {"VILLAGER_BATCH_SIZE": "10", "VILLAGER_BACKFILL_WORKERS": "1", "VILLAGER_BATCH_PAUSE_MS": "30"}
    killed_when(fresh_db, ["migrate", "run", "--plan", str(plan)], lambda: _exists(fresh_db, "villager_migration.notes") and bool(scalar(fresh_db, copied)), **env)
    assert scalar(fresh_db, "SELECT value ->> 'stage' FROM villager_migration.state"
                            " WHERE key = 'rebuild:notes'") == "copying"
    _parent_changes(fresh_db, "L1", "L2", "20")  # rows naming L1, L2, GONE20 were copied
    res = run_cli("migrate", "run", database_url=fresh_db)
    assert res.returncode == 0, res.stderr[-3000:]
    assert scalar(fresh_db, "SELECT value ->> 'swapped' FROM villager_migration.state"
                            " WHERE key = 'rebuild:notes'") == "true"
    assert rows(fresh_db, WRONG_LINKS) == []
    assert scalar(fresh_db, "SELECT count(*) FROM notes WHERE label = 'GONE20' AND style_id IS NOT NULL") > 0
    _parent_changes(fresh_db, "L3", "L4", "40")  # with the link's foreign key in place
    # A note written while its label is being deleted or re-keyed waits for that, as a foreign key
    # would make it: then its link is NULL, not the gone child (nor an error of the link's key); the
    # new application's note by style, while the style's label is re-keyed, names the new key.
    for change, note in (("DELETE FROM labels WHERE code = 'L5'", "INSERT INTO notes (label) VALUES ('L5')"),
                         ("UPDATE labels SET code = 'L6-x' WHERE code = 'L6'", "INSERT INTO notes (label) VALUES ('L6')"),
                         ("UPDATE labels SET code = 'L7-x' WHERE code = 'L7'",
                          "INSERT INTO notes (style_id) SELECT id FROM label_styles WHERE label_code = 'L7'")):
        with psycopg.connect(fresh_db) as c1:
            c1.execute(change)
            join = _while_waiting(fresh_db, note)
            c1.commit()
            join()
    assert rows(fresh_db, WRONG_LINKS) == []
    assert scalar(fresh_db, "SELECT count(*) FROM notes WHERE label = 'GONE40' AND style_id IS NOT NULL") > 0
    assert scalar(fresh_db, "SELECT count(*) FROM notes WHERE label = 'L7-x'") == 1
    res = run_cli("migrate", "verify", database_url=fresh_db)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    res = run_cli("migrate", "complete", "--yes", "--no-reader-check", database_url=fresh_db)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert rows(fresh_db, WRONG_LINKS) == []


LOOSE = """
CREATE COLLATION ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
CREATE DOMAIN ci_text AS text COLLATE ci;
CREATE TABLE venues (id bigserial PRIMARY KEY, city text COLLATE ci, region ci_text, country text,
  capacity integer, hall text COLLATE ci, code text, seq integer);
INSERT INTO venues (city, region, country, capacity, hall, code, seq)
SELECT (ARRAY['Rome', 'ROME', 'rome'])[1 + i % 3], 'Lazio', 'IT', i, 'Hall ' || i, 'V' || i % 15, i
  FROM generate_series(1, 20) i;
CREATE TABLE guests (id integer PRIMARY KEY, city text, seen timestamptz);
CREATE FUNCTION shout() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.city := upper(NEW.city); RETURN NEW; END $$;
CREATE FUNCTION stamp() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.seen := now(); RETURN NEW; END $$;
CREATE TRIGGER zz_shout BEFORE INSERT OR UPDATE ON guests FOR EACH ROW EXECUTE FUNCTION shout();
CREATE TRIGGER zz_off BEFORE INSERT OR UPDATE ON guests FOR EACH ROW EXECUTE FUNCTION shout();
ALTER TABLE guests DISABLE TRIGGER zz_off;
CREATE TRIGGER a_stamp BEFORE INSERT OR UPDATE ON guests FOR EACH ROW EXECUTE FUNCTION stamp();
CREATE TRIGGER zz_after AFTER INSERT OR UPDATE ON guests FOR EACH ROW EXECUTE FUNCTION stamp();
"""


def test_loose_equality_and_repeated_unique_values_are_refused(fresh_db: str, tmp_path: Path) -> None:
    """A lookup fed by a column whose collation is nondeterministic (or a domain's) would merge
    values that differ ('Rome', 'ROME') and lose their spelling at `complete`; a split would miss
    such a change. A unique column the migration fills with one value for every row it creates fails
    at the second row, and so does one (or a unique index) over values that repeat in the table. A
    table's own BEFORE trigger that fires after the plan's (name order) could
    change a value the plan's trigger already carried. All refused by `migrate plan`; a unique column
    filled per row is not, nor a trigger that fires before the plan's, after the row, or not at all."""
    from tests.migration.planfile.test_adversarial_schema import problems_of
    from tests.migration.planfile.test_check import assert_problems, plan

    with psycopg.connect(fresh_db, autocommit=True) as c:
        try:
            c.execute(LOOSE)  # one transaction: nothing of it stays when the collation cannot be made
        except psycopg.errors.FeatureNotSupported:
            pytest.skip("the server is built without ICU: no nondeterministic collation")
    bad = tmp_path / "loose.toml"
    bad.write_text(plan(
        'type = "extract_lookup"\nlookup = "cities"\nsources = [{ table = "venues", column = "city" }]',
        'type = "extract_lookup"\nlookup = "regions"\nkey = "casefold"\nsources = [{ table = "venues", column = "region" }]\n'
        'extra_columns = [{ name = "code", type = "text", default = "\'R\'", unique = true },'
        ' { name = "ref", type = "uuid", default = "gen_random_uuid()", unique = true }]',
        'type = "extract_lookup"\nlookup = "countries"\nsources = [{ table = "venues", column = "country" }]\n'
        'extra_columns = [{ name = "seen", type = "timestamptz", default = "now()", unique = true }]',
        'type = "split_child"\nparent = "venues"\nchild = "halls"\ncolumns = ["hall", "capacity"]\n'
        'extra_columns = [{ name = "sku", type = "text", initial = "\'default\'", unique = true },'
        ' { name = "code", type = "text", initial = "id::text || \'-x\'", unique = true },'
        ' { name = "slot", type = "integer", default = "1", unique = true },'
        ' { name = "origin", type = "text", initial = "country || capacity % 2", unique = true }]\nwhen = "capacity > 0"',
        'type = "create_index"\ntable = "venues"\nname = "venues_code_key"\ncolumns = ["code", "seq"]\nunique = true',
        'type = "create_index"\ntable = "venues"\nname = "venues_code_idx"\ncolumns = ["code DESC"]\nunique = true',
        'type = "create_index"\ntable = "venues"\nname = "venues_code_seq_idx"\ncolumns = ["code"]\nunique = true\n'
        'where = "seq <= 15"',
        name="loose"))
    res = run_cli("migrate", "plan", "--plan", str(bad), database_url=fresh_db)
    assert_problems(
        problems_of(res, bad),
        ("operation 1 (extract_lookup, line 5), sources[0].column", "venues.city has the nondeterministic collation ci"),
        ("operation 2 (extract_lookup, line 10), sources[0].column", "venues.region has the nondeterministic collation ci"),
        ("operation 2 (extract_lookup, line 10), extra_columns[0].default",
         "code is unique, but default \"'R'\" gives every lookup row the same value"),
        ("operation 3 (extract_lookup, line 17), extra_columns[0].default",
         "seen is unique, but default 'now()' gives every lookup row the same value"),
        ("operation 4 (split_child, line 23), columns[0]", "venues.hall has the nondeterministic collation ci"),
        ("operation 4 (split_child, line 23), extra_columns[0].initial",
         "sku is unique, but initial \"'default'\" gives every default halls row the same value"),
        ("operation 4 (split_child, line 23), extra_columns[2].default",
         "slot is unique, but default '1' gives every default halls row the same value"),
        ("operation 4 (split_child, line 23), extra_columns[3].initial",
         "origin is unique, but initial 'country || capacity % 2' gives more than one venues row the value IT"),
        ("operation 6 (create_index, line 38), columns", "venues has rows that repeat (code) = (V"),
    )
    assert scalar(fresh_db, "SELECT to_regnamespace('villager_migration') IS NULL")

    # Checked once the plan is otherwise sound, against the triggers of the table.
    triggers = tmp_path / "triggers.toml"
    triggers.write_text(plan('type = "extract_lookup"\nlookup = "towns"\nsources = [{ table = "guests", column = "city" }]',
                             name="triggers"))
    res = run_cli("migrate", "plan", "--plan", str(triggers), database_url=fresh_db)
    assert_problems(problems_of(res, triggers),
                    ("operation 1 (extract_lookup, line 5), sources[0].table",
                     "guests has BEFORE row triggers of its own that fire after the plan's villager_towns_towns_id"
                     " (in name order): zz_shout;"))
    # Names cut at 63 characters: two sources' sync functions would be one.
    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute("CREATE TABLE customer_shipping_addresses_archive_for_the_year_a (id bigserial PRIMARY KEY, country text);"
                  "CREATE TABLE customer_shipping_addresses_archive_for_the_year_b (id bigserial PRIMARY KEY, land text)")
    long = tmp_path / "long.toml"
    long.write_text(plan('type = "extract_lookup"\nlookup = "countries"\nsources = ['
                         '{ table = "customer_shipping_addresses_archive_for_the_year_a", column = "country" },'
                         '{ table = "customer_shipping_addresses_archive_for_the_year_b", column = "land" }]', name="long"))
    res = run_cli("migrate", "plan", "--plan", str(long), database_url=fresh_db)
    assert_problems(problems_of(res, long),
                    ("file", "the plan makes two different functions of the same name:"
                             " countries_sync_customer_shipping_addresses_archive_for_the_year"))
    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute("ALTER TRIGGER zz_shout ON guests RENAME TO b_shout")
    res = run_cli("migrate", "run", "--plan", str(triggers), database_url=fresh_db)
    assert res.returncode == 0, res.stderr[-2000:]
    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute("INSERT INTO guests (id, city) VALUES (1, 'rome'), (2, 'Oslo')")
    assert rows(fresh_db, "SELECT g.city, t.name FROM guests g JOIN towns t ON t.id = g.towns_id ORDER BY 1") == [
        ("OSLO", "OSLO"), ("ROME", "ROME")]
    assert run_cli("migrate", "verify", database_url=fresh_db).returncode == 0


DEFAULTED = """
CREATE TABLE tickets (id bigserial PRIMARY KEY, status text NOT NULL DEFAULT 'open', queue varchar(20) DEFAULT 'Inbox ',
  fee numeric(8,2) NOT NULL DEFAULT 0);
INSERT INTO tickets (status, queue) SELECT (ARRAY['open', 'closed', 'waiting'])[1 + i % 3],
  (ARRAY['Inbox ', 'billing', NULL])[1 + i % 3] FROM generate_series(1, 30) i;
"""

DEFAULTED_PLAN = """
version = 1
name = "defaulted"

[[operation]]
type = "extract_lookup"
lookup = "statuses"
sources = [{ table = "tickets", column = "status", fk = "status_id" }]

[[operation]]
type = "extract_lookup"
lookup = "queues"
key = "casefold"
sources = [{ table = "tickets", column = "queue", fk = "queue_id" }]

[[operation]]
type = "derive_column"
table = "tickets"
column = "fee_cents"
column_type = "bigint"
from = "(fee * 100)::bigint"
writes = "fee"
back = "fee_cents / 100.0"
"""


def test_a_new_insert_by_reference_is_not_overridden_by_the_texts_default(fresh_db: str, tmp_path: Path) -> None:
    """The new application inserts a row by its references and derived column alone: the legacy
    columns take their defaults ('open', 0), which must not replace what it wrote. The old
    application's inserts, with or without the text, and a statement that writes both still go by
    the text."""
    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute(DEFAULTED)
    plan = tmp_path / "defaulted.toml"
    plan.write_text(DEFAULTED_PLAN)
    res = run_cli("migrate", "run", "--plan", str(plan), database_url=fresh_db)
    assert res.returncode == 0, res.stderr[-2000:]
    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute("INSERT INTO tickets (id, status_id, queue_id, fee_cents) SELECT 101, s.id, q.id, 250"
                  " FROM statuses s, queues q"
                  " WHERE s.name = 'closed' AND q.name = 'billing'")
        c.execute("INSERT INTO tickets (id) VALUES (102)")
        c.execute("INSERT INTO tickets (id, status) VALUES (103, 'waiting')")
        c.execute("INSERT INTO tickets (id, status, status_id) SELECT 104, 'waiting', id FROM statuses"
                  " WHERE name = 'closed'")
    assert rows(fresh_db, "SELECT fee, fee_cents FROM tickets WHERE id IN (101, 102) ORDER BY id") == [
        (Decimal("2.50"), 250), (Decimal("0.00"), 0)]
    assert rows(fresh_db, "SELECT t.id, t.status, s.name, t.queue, q.name FROM tickets t"
                          " JOIN statuses s ON s.id = t.status_id LEFT JOIN queues q ON q.id = t.queue_id"
                          " WHERE t.id > 100 ORDER BY t.id") == [
        (101, "closed", "closed", "billing", "billing"), (102, "open", "open", "Inbox ", "Inbox"),
        (103, "waiting", "waiting", "Inbox ", "Inbox"), (104, "waiting", "waiting", "Inbox ", "Inbox")]
    res = run_cli("migrate", "verify", database_url=fresh_db)
    assert res.returncode == 0, res.stdout[-2000:]


LIVE = """
CREATE TABLE accounts (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), tier text, seats integer NOT NULL DEFAULT 1);
CREATE TABLE activity (code text PRIMARY KEY, account_id uuid, kind text NOT NULL DEFAULT 'misc', payload text);
INSERT INTO accounts (id, tier, seats)
SELECT ('00000000-0000-4000-8000-' || lpad(i::text, 12, '0'))::uuid, (ARRAY['free', 'pro', NULL])[1 + i % 3], i % 9
  FROM generate_series(1, 300) i;
INSERT INTO activity
SELECT 'E' || i, ('00000000-0000-4000-8000-' || lpad((1 + i % 330)::text, 12, '0'))::uuid,
       (ARRAY['login', 'Login ', 'misc', 'export'])[1 + i % 4], repeat('p', i % 50)
  FROM generate_series(1, 2500) i;
"""

LIVE_PLAN = """
version = 1
name = "live"

[[operation]]
type = "split_child"
parent = "accounts"
child = "subscriptions"
columns = ["tier", "seats"]
fk = "account_ref"

[[operation]]
type = "link_child_reference"
table = "activity"
reference = "account_id"
child = "subscriptions"
fk = "subscription_id"

[[operation]]
type = "extract_lookup"
lookup = "kinds"
key = "casefold"
sources = [{ table = "activity", column = "kind", fk = "kind_id" }]
"""

LIVE_WRONG = """
SELECT 'link', e.code, e.account_id::text, e.subscription_id::text, d.id::text FROM activity e
  LEFT JOIN subscriptions d ON d.account_ref = e.account_id AND d.is_default
  LEFT JOIN subscriptions s ON s.id = e.subscription_id
 WHERE CASE WHEN e.subscription_id IS NULL THEN d.id IS NOT NULL ELSE e.account_id IS DISTINCT FROM s.account_ref END
UNION ALL
SELECT 'kind', e.code, e.kind, k.name_key, NULL FROM activity e JOIN kinds k ON k.id = e.kind_id
 WHERE lower(btrim(e.kind)) <> k.name_key
UNION ALL
SELECT 'split', a.id::text, row(a.tier, a.seats)::text, row(d.tier, d.seats)::text, NULL FROM accounts a
  LEFT JOIN subscriptions d ON d.account_ref = a.id AND d.is_default
 WHERE (a.tier, a.seats::bigint) IS DISTINCT FROM (d.tier, d.seats)
"""


class LiveWriters(Writers):
    """The old application deletes accounts, renames their keys and writes activity rows that name them
    (or no account); the new application writes them by subscription and kind, and seats."""

    def _loop(self, step: Callable[[psycopg.Connection[Any]], None], new: bool = False) -> None:
        with psycopg.connect(self.url, autocommit=True) as c:
            while not self.stop.is_set():
                try:
                    step(c)
                    self.writes += 1
                except psycopg.errors.DeadlockDetected:
                    pass  # both applications writing one account's seats at once (docs/plans.md): retried
                except psycopg.errors.ForeignKeyViolation:
                    if not new:  # the new application's row names a subscription deleted meanwhile
                        raise
                except psycopg.Error as e:
                    self.errors.append(f"{type(e).__name__}: {e}".splitlines()[0])
                time.sleep(0.003)

    def _old(self, seed: int) -> None:
        r, n = random.Random(seed), [0]

        def account() -> str:
            return f"00000000-0000-4000-8000-{r.randint(1, 340):012d}"

        def step(c: psycopg.Connection[Any]) -> None:
            n[0] += 1
            k = r.randrange(7)
            if k == 0:
                c.execute("DELETE FROM accounts WHERE id = %s", (account(),))
            elif k == 1:
                c.execute("UPDATE accounts SET id = %s WHERE id = %s",
                          (f"00000000-0000-4000-9{seed}00-{n[0]:012d}", account()))
            elif k == 2:  # a new key: one that rows name could get its child as they are written (docs/plans.md)
                c.execute("INSERT INTO accounts (id, tier) VALUES (%s, 'new')", (f"00000000-0000-4000-a{seed}00-{n[0]:012d}",))
            elif k == 3:
                c.execute("INSERT INTO activity (code, account_id, kind) VALUES (%s, %s, %s)",
                          (f"O{seed}-{n[0]}", account(), r.choice(["LOGIN", " export", "Brand New"])))
            elif k == 4:
                c.execute("UPDATE activity SET account_id = %s WHERE code = %s", (account(), f"E{r.randint(1, 2500)}"))
            elif k == 5:
                c.execute("UPDATE accounts SET seats = seats + 1, tier = %s WHERE id = %s",
                          (r.choice(["free", "pro"]), account()))
            else:
                c.execute("DELETE FROM activity WHERE code = %s", (f"E{r.randint(1, 2500)}",))

        self._loop(step)

    def _new(self) -> None:
        r, n = random.Random(9), [0]

        def step(c: psycopg.Connection[Any]) -> None:
            n[0] += 1
            if c.execute("SELECT to_regclass('public.kinds') IS NOT NULL AND EXISTS (SELECT FROM pg_attribute"
                         " WHERE attrelid = 'public.activity'::regclass AND attname = 'kind_id')").fetchone() != (True,):
                return
            if n[0] % 2:
                c.execute("INSERT INTO activity (code, subscription_id, kind_id)"
                          " SELECT %s, (SELECT id FROM subscriptions ORDER BY random() LIMIT 1),"
                          " (SELECT id FROM kinds ORDER BY random() LIMIT 1)", (f"N-{n[0]}",))
            else:
                c.execute("UPDATE subscriptions SET seats = seats + 1 WHERE account_ref = %s AND is_default",
                          (f"00000000-0000-4000-8000-{r.randint(1, 300):012d}",))

        self._loop(step, new=True)


def test_soft_links_lookups_and_a_split_under_live_writers_killed_and_resumed(fresh_db: str, tmp_path: Path) -> None:
    """A uuid-keyed parent whose rows the old application deletes and re-keys while a text-keyed
    table that names them without a foreign key is copied and swapped in; the new application
    inserts by reference alone (the legacy kind takes its default). Killed mid-copy and resumed:
    every link and reference is right, verify holds, rollback gives the legacy rows back, and the
    plan runs again to `complete`."""
    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute(LIVE)
    plan = tmp_path / "live.toml"
    plan.write_text(LIVE_PLAN)
    legacy_q = ("SELECT md5(string_agg(x, ',' ORDER BY x)) FROM (SELECT row(id, tier, seats)::text x FROM accounts"
                " UNION ALL SELECT row(code, account_id, kind, payload)::text FROM activity) s")
    env = {"VILLAGER_BATCH_SIZE": "10", "VILLAGER_BACKFILL_WORKERS": "1", "VILLAGER_BATCH_PAUSE_MS": "20"}
    with LiveWriters(fresh_db) as writers:
        time.sleep(0.1)
        killed_when(fresh_db, ["migrate", "run", "--plan", str(plan)],
                    lambda: _exists(fresh_db, "villager_migration.activity") and bool(
                        scalar(fresh_db, "SELECT count(*) > 300 FROM villager_migration.activity")), **env)
        time.sleep(0.3)
        res = run_cli("migrate", "run", database_url=fresh_db)
        assert res.returncode == 0, res.stderr[-3000:]
        time.sleep(0.5)
    assert writers.errors == [] and writers.writes > 100, writers.errors[:5]
    assert scalar(fresh_db, "SELECT value ->> 'method' FROM villager_migration.state WHERE key = 'rebuild:activity'") \
        == "rebuild"
    assert rows(fresh_db, LIVE_WRONG) == []
    assert scalar(fresh_db, "SELECT count(*) FROM activity WHERE subscription_id IS NULL AND account_id IS NOT NULL") > 0
    res = run_cli("migrate", "verify", database_url=fresh_db)
    assert res.returncode == 0, res.stdout[-3000:]

    legacy = scalar(fresh_db, legacy_q)
    res = run_cli("migrate", "rollback", "--yes", database_url=fresh_db)
    assert res.returncode == 0, res.stderr[-2000:]
    assert scalar(fresh_db, legacy_q) == legacy
    assert run_cli("migrate", "run", "--plan", str(plan), database_url=fresh_db).returncode == 0
    res = run_cli("migrate", "complete", "--yes", "--no-reader-check", database_url=fresh_db)
    assert res.returncode == 0, res.stderr[-2000:]
    assert rows(fresh_db, LIVE_WRONG.split("UNION ALL")[0]) == []


def test_a_linked_table_named_like_the_migrations_own_is_backfilled_in_place(fresh_db: str, tmp_path: Path) -> None:
    """The copy of a table lives in the migration's schema under the table's name: a table named
    `events` (or `steps`, `state`, ...) would be copied into the migration's own event log. It is
    backfilled in place instead, and the log is still the migration's after rollback."""
    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute("CREATE TABLE hosts (id integer PRIMARY KEY, os text);"
                  "CREATE TABLE events (id bigserial PRIMARY KEY, host_id integer REFERENCES hosts, note text);"
                  "INSERT INTO hosts SELECT i, 'os' || i % 3 FROM generate_series(1, 20) i;"
                  "INSERT INTO events (host_id, note) SELECT 1 + i % 20, 'n' FROM generate_series(1, 200) i")
    plan = tmp_path / "events.toml"
    plan.write_text('version = 1\nname = "events"\n\n[[operation]]\ntype = "split_child"\nparent = "hosts"\n'
                    'child = "host_os"\ncolumns = ["os"]\nfk = "host_id"\n\n[[operation]]\n'
                    'type = "link_child_reference"\ntable = "events"\nreference = "host_id"\nchild = "host_os"\n'
                    'fk = "host_os_id"\n')
    res = run_cli("migrate", "run", "--plan", str(plan), database_url=fresh_db)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "events: backfilled in place, not rebuilt: its copy would take the name" in res.stdout + res.stderr
    assert scalar(fresh_db, "SELECT count(*) FROM events e JOIN host_os h ON h.id = e.host_os_id"
                            " WHERE h.host_id = e.host_id") == 200
    assert scalar(fresh_db, "SELECT count(*) > 0 FROM villager_migration.events") is True
    own = rows(fresh_db, "SELECT relname FROM pg_class WHERE relnamespace = 'villager_migration'::regnamespace"
                         " AND relkind IN ('r', 'p', 'S', 'v', 'm')")
    assert {str(r[0]) for r in own} <= OWN_RELATIONS
    assert run_cli("migrate", "verify", database_url=fresh_db).returncode == 0
    res = run_cli("migrate", "rollback", "--yes", database_url=fresh_db)
    assert res.returncode == 0, res.stderr[-2000:]
    assert scalar(fresh_db, "SELECT count(*) FROM events") == 200
    assert scalar(fresh_db, "SELECT count(*) > 0 FROM villager_migration.events WHERE kind = 'done'") is True


QUOTED = """
CREATE TABLE gear (id integer PRIMARY KEY, "order" integer, "Mixed Case" text, "user" text, price numeric(8,2),
  "two words" text);
INSERT INTO gear SELECT i, i % 4, 'M' || i, 'u' || i % 3, i % 5, 'w ' || i FROM generate_series(1, 40) i;
"""

QUOTED_PLAN = """
version = 1
name = "quoted"

[[operation]]
type = "split_child"
parent = "gear"
child = "gear_prices"
columns = ["price"]
fk = "gear_id"
when = "\\"order\\" > 0 AND \\"Mixed Case\\" <> 'M7'"
active_flag = "is_active"
extra_columns = [{ name = "label", type = "text", initial = "\\"Mixed Case\\" || '/' || \\"user\\" || '/' || \\"two words\\"" }]

[[operation]]
type = "derive_column"
table = "gear"
column = "rank"
column_type = "integer"
from = "\\"order\\" * 10"
"""


def test_expressions_over_columns_whose_names_need_quotes(fresh_db: str, tmp_path: Path) -> None:
    """A split's `when` and `initial` and a derived column's `from` over columns named "order",
    "Mixed Case", "user" and "two words": the triggers name them quoted, and a change of one of
    them alone re-decides the split's condition."""
    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute(QUOTED)
    plan = tmp_path / "quoted.toml"
    plan.write_text(QUOTED_PLAN)
    res = run_cli("migrate", "run", "--plan", str(plan), database_url=fresh_db)
    assert res.returncode == 0, res.stderr[-2000:]
    with psycopg.connect(fresh_db, autocommit=True) as c:  # the old application
        c.execute('UPDATE gear SET "order" = 0 WHERE id = 5')
        c.execute('UPDATE gear SET "order" = 3, price = 9 WHERE id = 4')
        c.execute('INSERT INTO gear VALUES (100, 2, \'X\', \'y\', 3, \'z z\')')
    assert rows(fresh_db, "SELECT g.id, g.rank, p.price, p.label, p.is_active FROM gear g"
                          " JOIN gear_prices p ON p.gear_id = g.id AND p.is_default WHERE g.id IN (4, 5, 100)"
                          " ORDER BY 1") == [
        (4, 30, Decimal("9.00"), "M4/u1/w 4", True), (5, 0, Decimal("0.00"), "M5/u2/w 5", False),
        (100, 20, Decimal("3.00"), "X/y/z z", True)]
    res = run_cli("migrate", "verify", database_url=fresh_db)
    assert res.returncode == 0, res.stdout[-2000:]
