"""Plans an outside user writes for schemas none of the shipped plans knows, run the whole way
(kill -9 and resume, verify, rollback, complete), and the plans `migrate plan` must refuse."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import psycopg

from tests.helpers import ROOT, cli_env, rows, run_cli, scalar


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
    env = {"VILLAGER_BATCH_SIZE": "10", "VILLAGER_BACKFILL_WORKERS": "1", "VILLAGER_BATCH_PAUSE_MS": "60"}
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
    assert rows(fresh_db, WRONG_LINKS) == []
    assert scalar(fresh_db, "SELECT count(*) FROM notes WHERE label = 'GONE40' AND style_id IS NOT NULL") > 0
    res = run_cli("migrate", "verify", database_url=fresh_db)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    res = run_cli("migrate", "complete", "--yes", "--no-reader-check", database_url=fresh_db)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert rows(fresh_db, WRONG_LINKS) == []


LOOSE = """
CREATE COLLATION ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
CREATE DOMAIN ci_text AS text COLLATE ci;
CREATE TABLE venues (id bigserial PRIMARY KEY, city text COLLATE ci, region ci_text, country text,
  capacity integer, hall text COLLATE ci);
INSERT INTO venues (city, region, country, capacity, hall)
SELECT (ARRAY['Rome', 'ROME', 'rome'])[1 + i % 3], 'Lazio', 'IT', i, 'Hall ' || i FROM generate_series(1, 20) i;
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
    at the second row. A table's own BEFORE trigger that fires after the plan's (name order) could
    change a value the plan's trigger already carried. All refused by `migrate plan`; a unique column
    filled per row is not, nor a trigger that fires before the plan's, after the row, or not at all."""
    from tests.migration.planfile.test_adversarial_schema import problems_of
    from tests.migration.planfile.test_check import assert_problems, plan

    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute(LOOSE)
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
        ' { name = "slot", type = "integer", default = "1", unique = true }]',
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
