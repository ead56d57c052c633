"""link_child_reference copies the referencing table and swaps the copy in: a table keyed by a
GENERATED ALWAYS identity, with a serial column and a stored generated column, keeps all three
through the swap while an application inserts, updates and deletes its rows; the run is killed
mid-copy and resumed; rollback gives the table back with the same columns, defaults, identity and
generation, and its sequences where they were."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import psycopg

from tests.helpers import rows, run_cli, run_killed_once, scalar

SCHEMA = """
CREATE TABLE parts (code text PRIMARY KEY, title text NOT NULL, price numeric(8,2) NOT NULL);
CREATE TABLE lines (
  id bigint GENERATED ALWAYS AS IDENTITY (START WITH 1000 INCREMENT BY 3) PRIMARY KEY,
  code text NOT NULL REFERENCES parts (code) ON UPDATE CASCADE,
  ticket serial NOT NULL,
  qty integer NOT NULL CHECK (qty > 0),
  doubled integer GENERATED ALWAYS AS (qty * 2) STORED);
CREATE INDEX lines_code_idx ON lines (code);
INSERT INTO parts SELECT 'P' || i, 'Part ' || i, 1 + i % 90 FROM generate_series(1, 2000) i;
INSERT INTO lines (code, qty) SELECT 'P' || (1 + i % 2000), 1 + i % 7 FROM generate_series(1, 30000) i;
"""

PLAN = """
version = 1
name = "parts"

[[operation]]
type = "split_child"
parent = "parts"
child = "part_prices"
columns = ["price"]
fk = "part_code"

[[operation]]
type = "link_child_reference"
table = "lines"
reference = "code"
child = "part_prices"
fk = "part_price_id"
"""

SHAPE = """
SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, a.attidentity, a.attgenerated,
       pg_get_expr(d.adbin, d.adrelid), pg_get_serial_sequence('public.lines', a.attname)
  FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
 WHERE a.attrelid = 'public.lines'::regclass AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum
"""


class Inserter:
    """Inserts lines (identity and serial from their defaults), changes and deletes some, until
    stopped; every error is kept."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.errors: list[str] = []
        self.ids: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Inserter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        i = 0
        with psycopg.connect(self.url, autocommit=True) as c:
            while not self._stop.is_set():
                i += 1
                try:
                    row = c.execute("INSERT INTO lines (code, qty) VALUES (%s, %s) RETURNING id",
                                    (f"P{1 + i % 2000}", 1 + i % 5)).fetchone()
                    assert row is not None
                    self.ids.append(int(row[0]))
                    if i % 3 == 0:
                        c.execute("UPDATE lines SET qty = qty + 1, code = %s WHERE id = %s",
                                  (f"P{1 + (i * 7) % 2000}", 1000 + 3 * (i % 30000)))
                    if i % 5 == 0:
                        c.execute("DELETE FROM lines WHERE id = %s", (1000 + 3 * ((i * 11) % 30000),))
                except psycopg.Error as e:
                    self.errors.append(f"{type(e).__name__}: {e}".splitlines()[0])
                time.sleep(0.002)


def test_identity_serial_and_generated_columns_go_through_the_swap(fresh_db: str, tmp_path: Path) -> None:
    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute(SCHEMA)
    plan = tmp_path / "parts.toml"
    plan.write_text(PLAN)
    shape = rows(fresh_db, SHAPE)

    def copying() -> bool:
        return bool(scalar(fresh_db, "SELECT to_regclass('villager_migration.lines') IS NOT NULL")) and bool(
            scalar(fresh_db, "SELECT count(*) > 0 FROM villager_migration.lines"))

    with Inserter(fresh_db) as app:  # killed once the copy has begun, then resumed
        res = run_killed_once(fresh_db, ["migrate", "run", "--plan", str(plan)], copying,
                              VILLAGER_BATCH_SIZE="300", VILLAGER_BACKFILL_WORKERS="1")
        assert res.returncode == 0, res.stderr[-2000:]
        time.sleep(0.3)  # the application goes on writing after the swap
    assert app.errors == [] and len(app.ids) > 50, app.errors[:5]
    assert scalar(fresh_db, "SELECT value ->> 'method' FROM villager_migration.state WHERE key = 'rebuild:lines'") \
        == "rebuild"
    # Same identity (its options), serial default and generation; the identity went on from where it was.
    after = rows(fresh_db, SHAPE)
    assert after[:-1] == shape and after[-1][0] == "part_price_id", after
    assert app.ids == sorted(app.ids) and len(set(app.ids)) == len(app.ids)
    assert all((i - 1000) % 3 == 0 for i in app.ids)
    with psycopg.connect(fresh_db, autocommit=True) as c:
        new_id = c.execute("INSERT INTO lines (code, qty) VALUES ('P1', 4) RETURNING id").fetchone()
        assert new_id is not None and new_id[0] == app.ids[-1] + 3
        assert c.execute("SELECT count(*) FROM lines WHERE doubled IS DISTINCT FROM qty * 2").fetchone() == (0,)
        assert c.execute("SELECT count(DISTINCT ticket) = count(*) FROM lines").fetchone() == (True,)
        assert c.execute("SELECT count(*) FROM lines l LEFT JOIN part_prices p ON p.id = l.part_price_id"
                         " WHERE p.part_code IS DISTINCT FROM l.code").fetchone() == (0,)
        assert c.execute("SELECT to_regclass('villager_migration_retired.lines')").fetchone() == (None,)
    res = run_cli("migrate", "verify", database_url=fresh_db)
    assert res.returncode == 0, res.stdout[-2000:]

    res = run_cli("migrate", "rollback", "--yes", database_url=fresh_db)
    assert res.returncode == 0, res.stderr[-2000:]
    assert rows(fresh_db, SHAPE) == shape
    with psycopg.connect(fresh_db, autocommit=True) as c:
        new_id = c.execute("INSERT INTO lines (code, qty) VALUES ('P2', 1) RETURNING id").fetchone()
        assert new_id is not None and new_id[0] == app.ids[-1] + 6
