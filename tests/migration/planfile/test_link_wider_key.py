"""A link whose reference is an `integer` while its parent's key is a `bigint` (a foreign key
PostgreSQL accepts, and a common schema: `serial` references to a `bigserial` key, or the other way
round): `migrate plan` takes it, the run links every row, both applications write through it, and
verify, rollback and complete hold."""

from __future__ import annotations

from pathlib import Path

import psycopg

from tests.helpers import rows, run_cli, scalar
from tests.migration.planfile.test_link_rebuild import PLAN as PARTS_PLAN

SCHEMA = """
CREATE TABLE authors (id bigserial PRIMARY KEY, name text NOT NULL, fee numeric(8,2));
CREATE TABLE posts (id serial PRIMARY KEY, author_id integer REFERENCES authors (id) ON DELETE CASCADE,
                    title text NOT NULL);
CREATE TABLE notes (id serial PRIMARY KEY, author_ref smallint, body text);
INSERT INTO authors (name, fee) SELECT 'A' || i, CASE WHEN i % 9 = 0 THEN NULL ELSE i END FROM generate_series(1, 300) i;
INSERT INTO posts (author_id, title) SELECT 1 + i % 300, 'P' || i FROM generate_series(1, 3000) i;
INSERT INTO notes (author_ref, body) SELECT CASE WHEN i % 50 = 0 THEN NULL ELSE 1 + i % 320 END, 'N' || i
  FROM generate_series(1, 2000) i;
"""

PLAN = """
version = 1
name = "wider"

[[operation]]
type = "split_child"
parent = "authors"
child = "author_fees"
columns = ["fee"]
fk = "author_id"

[[operation]]
type = "link_child_reference"
table = "posts"
reference = "author_id"
child = "author_fees"
fk = "author_fee_id"

[[operation]]
type = "link_child_reference"
table = "notes"
reference = "author_ref"
child = "author_fees"
fk = "author_fee_id"
"""

LINKED = ("SELECT count(*) FROM {t} x LEFT JOIN author_fees f ON f.id = x.author_fee_id"
          " WHERE f.author_id IS DISTINCT FROM (SELECT a.id FROM authors a WHERE a.id = x.{ref})")


def test_an_integer_reference_to_a_bigint_key(fresh_db: str, tmp_path: Path) -> None:
    plan = tmp_path / "wider.toml"
    plan.write_text(PLAN)
    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute(SCHEMA)
    checked = run_cli("migrate", "plan", "--plan", str(plan), database_url=fresh_db)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    res = run_cli("migrate", "run", "--plan", str(plan), database_url=fresh_db)
    assert res.returncode == 0, res.stderr
    for table, ref in (("posts", "author_id"), ("notes", "author_ref")):
        assert scalar(fresh_db, LINKED.format(t=table, ref=ref)) == 0
    # Notes naming no author (300 < ref <= 320, or NULL) keep a NULL link.
    assert scalar(fresh_db, "SELECT count(*) FROM notes WHERE author_fee_id IS NOT NULL AND author_ref > 300") == 0

    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute("INSERT INTO authors (id, name, fee) VALUES (310, 'late', 7)")  # notes naming 310 are linked
        c.execute("INSERT INTO posts (author_id, title) VALUES (310, 'new')")
        c.execute("UPDATE author_fees SET fee = 9 WHERE author_id = 5")
        c.execute("DELETE FROM authors WHERE id = 6")
        c.execute("INSERT INTO notes (author_ref, body) VALUES (7, 'n')")
    assert scalar(fresh_db, "SELECT fee FROM authors WHERE id = 5") == 9
    for table, ref in (("posts", "author_id"), ("notes", "author_ref")):
        assert scalar(fresh_db, LINKED.format(t=table, ref=ref)) == 0
    assert scalar(fresh_db, "SELECT count(*) FROM notes n JOIN author_fees f ON f.id = n.author_fee_id"
                            " WHERE n.author_ref = 310") > 0
    assert run_cli("migrate", "verify", database_url=fresh_db).returncode == 0

    before = rows(fresh_db, "SELECT id, author_id, title FROM posts ORDER BY id")
    rolled = run_cli("migrate", "rollback", "--yes", database_url=fresh_db)
    assert rolled.returncode == 0, rolled.stderr
    assert rows(fresh_db, "SELECT id, author_id, title FROM posts ORDER BY id") == before
    assert scalar(fresh_db, "SELECT format_type(atttypid, atttypmod) FROM pg_attribute"
                            " WHERE attrelid = 'posts'::regclass AND attname = 'author_id'") == "integer"

    assert run_cli("migrate", "run", "--plan", str(plan), database_url=fresh_db).returncode == 0
    done = run_cli("migrate", "complete", "--yes", "--no-reader-check", database_url=fresh_db)
    assert done.returncode == 0, done.stderr
    assert run_cli("migrate", "verify", database_url=fresh_db).returncode == 0


def test_a_varchar_reference_to_a_text_key(fresh_db: str, tmp_path: Path) -> None:
    plan = tmp_path / "codes.toml"
    plan.write_text(PARTS_PLAN)  # parts -> part_prices, lines linked by their text code
    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute("CREATE TABLE parts (code text PRIMARY KEY, price numeric(8,2));"
                  "CREATE TABLE lines (id serial PRIMARY KEY, code varchar(12) REFERENCES parts (code) ON UPDATE CASCADE);"
                  "INSERT INTO parts SELECT 'P' || i, i FROM generate_series(1, 200) i;"
                  "INSERT INTO lines (code) SELECT 'P' || (1 + i % 200) FROM generate_series(1, 2000) i;")
    res = run_cli("migrate", "run", "--plan", str(plan), database_url=fresh_db)
    assert res.returncode == 0, res.stdout + res.stderr
    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute("UPDATE parts SET code = 'Q1' WHERE code = 'P1'")  # cascades to lines, which follow
        c.execute("INSERT INTO lines (code) VALUES ('P2')")
    assert scalar(fresh_db, "SELECT count(*) FROM lines l LEFT JOIN part_prices p ON p.id = l.part_price_id"
                            " WHERE p.part_code IS DISTINCT FROM l.code") == 0
    assert run_cli("migrate", "verify", database_url=fresh_db).returncode == 0
    assert run_cli("migrate", "rollback", "--yes", database_url=fresh_db).returncode == 0
