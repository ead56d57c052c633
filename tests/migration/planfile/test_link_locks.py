"""link_child_reference's trigger takes the locks of the link's foreign key before that key exists
(the plan adds it after the backfill; `migrate rollback --step` may withdraw it): a child deleted
while a row is being linked to it must not leave the row pointing at nothing."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import psycopg

from tests.helpers import ROOT, cli_env, rows, run_cli, scalar
from tests.migration.planfile.test_adversarial_round3 import LIVE, LIVE_PLAN
from tests.migration.planfile.test_adversarial_round5 import _waiting

FK_STEP = "constraint_fk_activity_subscription_id"
DANGLING = ("SELECT count(*) FROM activity a WHERE a.subscription_id IS NOT NULL"
            " AND NOT EXISTS (SELECT 1 FROM subscriptions s WHERE s.id = a.subscription_id)")


def _account(i: int) -> str:
    return f"00000000-0000-4000-8000-{i:012d}"


def test_a_child_deleted_while_a_row_is_linked_to_it_leaves_no_dangling_link(fresh_db: str, tmp_path: Path) -> None:
    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute(LIVE)
    plan = tmp_path / "live.toml"
    plan.write_text(LIVE_PLAN)
    assert run_cli("migrate", "run", "--plan", str(plan), database_url=fresh_db).returncode == 0
    res = run_cli("migrate", "rollback", "--step", FK_STEP, "--yes", database_url=fresh_db)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert scalar(fresh_db, "SELECT count(*) FROM pg_constraint WHERE conname = 'fk_activity_subscription_id'") == 0

    # The new application links a row to a subscription whose account another transaction deletes
    # (the subscription goes with it): the row waits, then is refused as the foreign key refuses it.
    sub = scalar(fresh_db, f"SELECT id::text FROM subscriptions WHERE account_ref = '{_account(1)}' AND is_default")
    with psycopg.connect(fresh_db) as t:
        t.execute("DELETE FROM accounts WHERE id = %s", (_account(1),))
        w = _waiting(fresh_db, f"INSERT INTO activity (code, subscription_id) VALUES ('race-new', '{sub}')")
        assert w.is_alive(), w.error or "the insert did not wait for the delete"
        t.commit()
    w.join()
    assert "violates foreign key constraint" in w.error, w.error

    # The old application names an account while the new one makes another subscription its default
    # and deletes the old one: the row waits, then is linked to the new default.
    b = _account(2)
    with psycopg.connect(fresh_db) as t:
        old = t.execute("SELECT id FROM subscriptions WHERE account_ref = %s AND is_default", (b,)).fetchone()
        new = t.execute("INSERT INTO subscriptions (account_ref, tier, seats) VALUES (%s, 'team', 7) RETURNING id",
                        (b,)).fetchone()
        assert old and new
        t.execute("UPDATE subscriptions SET is_default = false WHERE id = %s", old)
        t.execute("UPDATE subscriptions SET is_default = true WHERE id = %s", new)
        t.execute("DELETE FROM subscriptions WHERE id = %s", old)
        w = _waiting(fresh_db, f"INSERT INTO activity (code, account_id) VALUES ('race-old', '{b}')")
        assert w.is_alive(), w.error or "the insert did not wait for the delete"
        t.commit()
    w.join()
    assert w.error == ""
    assert scalar(fresh_db, "SELECT subscription_id::text FROM activity WHERE code = 'race-old'") == str(new[0])

    assert scalar(fresh_db, DANGLING) == 0
    res = run_cli("migrate", "run", "--reinstate", FK_STEP, database_url=fresh_db)
    assert res.returncode == 0, res.stderr[-2000:]
    assert run_cli("migrate", "verify", database_url=fresh_db).returncode == 0


SERVED = """
version = 1
name = "served"

[[operation]]
type = "extract_lookup"
lookup = "kinds"
key = "casefold"
sources = [{ table = "activity", column = "kind", fk = "kind_id" }]

[[operation]]
type = "create_index"
table = "activity"
name = "idx_activity_kind_payload"
columns = ["kind_id", "payload"]

[[operation]]
type = "create_index"
table = "activity"
name = "idx_activity_kind_code_partial"
columns = ["kind_id", "code"]
where = "payload <> ''"
"""


def test_an_index_the_plan_makes_leading_with_a_foreign_key_serves_it(fresh_db: str, tmp_path: Path) -> None:
    """No second index on the key alone: the plan's own (not partial) is built in its place, before
    the key is added; a partial one does not serve it."""
    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute(LIVE)
    plan = tmp_path / "served.toml"
    plan.write_text(SERVED)
    res = run_cli("migrate", "plan", "--plan", str(plan), "--json", database_url=fresh_db)
    assert res.returncode == 0, res.stderr
    names = [s["name"] for s in json.loads(res.stdout)["steps"]]
    assert "index_idx_activity_kind_id" not in names
    assert names.index("index_idx_activity_kind_payload") < names.index("constraint_fk_activity_kind_id")
    assert run_cli("migrate", "run", "--plan", str(plan), database_url=fresh_db).returncode == 0
    indexed = {r[0] for r in rows(fresh_db, "SELECT indexrelid::regclass::text FROM pg_index"
                                            " WHERE indrelid = 'activity'::regclass")}
    assert indexed == {"activity_pkey", "idx_activity_kind_payload", "idx_activity_kind_code_partial"}
    assert run_cli("migrate", "verify", database_url=fresh_db).returncode == 0


IN_PLACE = """
CREATE TABLE accounts (id uuid PRIMARY KEY, tier text, seats integer NOT NULL DEFAULT 1);
CREATE TABLE activity (code text PRIMARY KEY, account_id uuid, slot integer UNIQUE, payload text);
INSERT INTO accounts SELECT ('00000000-0000-4000-8000-' || lpad(i::text, 12, '0'))::uuid, 'pro', i FROM generate_series(1, 20) i;
INSERT INTO activity SELECT 'E' || lpad(i::text, 4, '0'), ('00000000-0000-4000-8000-' || lpad((2 + i % 19)::text, 12, '0'))::uuid,
                            i, repeat('p', 200) FROM generate_series(1, 3000) i;
INSERT INTO activity SELECT 'Z' || i, '00000000-0000-4000-8000-000000000001', 10000 + i, 'z' FROM generate_series(1, 5) i;
ANALYZE activity;
"""

IN_PLACE_PLAN = LIVE_PLAN.split("[[operation]]\ntype = \"extract_lookup\"")[0]


def _holds(url: str, query: str) -> bool:
    """Whether `query` says so, False while the tables it reads do not exist yet."""
    try:
        return bool(scalar(url, query))
    except psycopg.errors.UndefinedTable:
        return False


def test_a_child_deleted_while_its_rows_are_backfilled_in_place_leaves_no_dangling_link(
        fresh_db: str, tmp_path: Path) -> None:
    """A table the copy cannot carry (a unique constraint) is linked in place: the batch that links
    rows to a child being deleted waits for the delete, and leaves them unlinked (their parent is
    gone), so the foreign key validates."""
    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute(IN_PLACE)
    plan = tmp_path / "in_place.toml"
    plan.write_text(IN_PLACE_PLAN)
    walking = "SELECT count(*) > 0 FROM villager_migration.backfill WHERE step LIKE 'backfill_activity_subscription_id%'"
    linked = "SELECT count(*) FROM activity WHERE code LIKE 'Z%' AND subscription_id IS NOT NULL"
    waits = ("SELECT count(*) > 0 FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
             " AND query LIKE '%UPDATE public.activity t SET subscription_id%'")
    proc = subprocess.Popen([sys.executable, "-m", "villager_shop", "migrate", "run", "--plan", str(plan)],
                            env=cli_env(fresh_db, VILLAGER_BATCH_SIZE="10", VILLAGER_BACKFILL_WORKERS="1",
                                        VILLAGER_BATCH_PAUSE_MS="50"),
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not _holds(fresh_db, walking) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert proc.poll() is None, "the run ended before the walk of activity was seen"
        with psycopg.connect(fresh_db) as t:
            t.execute("DELETE FROM accounts WHERE id = %s", (_account(1),))  # and its subscription
            # The walk reaches the rows of that account: it waits for the delete (or, unlocked,
            # links them to the subscription being deleted).
            while (not scalar(fresh_db, waits) and scalar(fresh_db, linked) == 0 and proc.poll() is None
                   and time.monotonic() < deadline):
                time.sleep(0.01)
            t.commit()
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err[-2000:]
    assert scalar(fresh_db, "SELECT value ->> 'method' FROM villager_migration.state WHERE key = 'rebuild:activity'") \
        == "in_place"
    assert scalar(fresh_db, DANGLING) == 0
    assert scalar(fresh_db, linked) == 0
    assert run_cli("migrate", "verify", database_url=fresh_db).returncode == 0
