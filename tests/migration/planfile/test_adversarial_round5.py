"""Races between the sync triggers and the new application's concurrent writes, each played out
deterministically on two connections: one transaction holds its write uncommitted, the other
connection's write must wait for it (a lock wait, seen in pg_stat_activity), then the first
commits and the outcome is checked. The plan's foreign keys come after the backfill and may be
withdrawn (`migrate rollback --step`): the triggers must take the locks those keys would."""

from __future__ import annotations

import time
from pathlib import Path

import psycopg
import pytest

from tests.helpers import rows, run_cli, scalar
from tests.migration.planfile.test_adversarial_round3 import _Writer
from tests.plans import migrate_by_plan

POSTS = """
CREATE TABLE posts (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, author text, body text);
INSERT INTO posts (author, body) SELECT (ARRAY['Ann', 'bob', ' ANN'])[1 + i % 3], 'b' || i FROM generate_series(1, 30) i;
"""

POSTS_PLAN = """
version = 1
name = "authors"

[[operation]]
type = "extract_lookup"
lookup = "authors"
key = "casefold"
sources = [{ table = "posts", column = "author", fk = "author_id" }]
"""

AUTHORS_FK = "fk_posts_author_id"
DANGLING = ("SELECT count(*) FROM posts p WHERE p.author_id IS NOT NULL"
            " AND NOT EXISTS (SELECT 1 FROM authors a WHERE a.id = p.author_id)")
MISMATCHED = ("SELECT count(*) FROM posts p JOIN authors a ON a.id = p.author_id"
              " WHERE villager_migration.authors_key_of(p.author) IS DISTINCT FROM a.name_key")


def _waiting(url: str, statement: str) -> _Writer:
    """`statement` on a connection of its own, once it waits for a lock or has ended."""
    w = _Writer(url, statement)
    w.start()
    while w.is_alive() and not (w.pid and scalar(url, "SELECT wait_event_type = 'Lock' FROM pg_stat_activity"
                                                      f" WHERE pid = {w.pid}")):
        time.sleep(0.01)
    return w


def _author(url: str, name: str) -> str:
    return str(scalar(url, f"INSERT INTO authors (name) VALUES ('{name}') RETURNING id"))


def test_a_lookup_row_deleted_while_a_row_is_given_its_reference_leaves_no_dangling_reference(
        fresh_db: str, tmp_path: Path) -> None:
    """The new application gives a row the reference of a lookup row another transaction deletes:
    the write waits for the delete, then is refused as the foreign key would refuse it."""
    migrate_by_plan(fresh_db, tmp_path, POSTS, POSTS_PLAN)
    res = run_cli("migrate", "rollback", "--step", f"constraint_{AUTHORS_FK}", "--yes", database_url=fresh_db)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert scalar(fresh_db, f"SELECT count(*) FROM pg_constraint WHERE conname = '{AUTHORS_FK}'") == 0

    for i, write in enumerate(["INSERT INTO posts (author_id, body) VALUES ('{id}', 'new')",
                               "UPDATE posts SET author_id = '{id}' WHERE id = 1"]):
        gone = _author(fresh_db, f"Gone {i}")
        with psycopg.connect(fresh_db) as t:
            t.execute("DELETE FROM authors WHERE id = %s", (gone,))
            w = _waiting(fresh_db, write.format(id=gone))
            assert w.is_alive(), w.error or f"{write} did not wait for the delete"
            t.commit()
        w.join()
        assert "violates foreign key constraint" in w.error, w.error

    assert scalar(fresh_db, DANGLING) == 0
    res = run_cli("migrate", "run", "--reinstate", f"constraint_{AUTHORS_FK}", database_url=fresh_db)
    assert res.returncode == 0, res.stderr[-2000:]
    assert run_cli("migrate", "verify", database_url=fresh_db).returncode == 0


def test_a_lookup_row_still_referenced_is_not_deleted(fresh_db: str, tmp_path: Path) -> None:
    """With its foreign key withdrawn, a lookup row that rows name is refused deletion as the key
    would refuse it (also one a row is being given in a transaction not yet committed: the delete
    waits for it); an unused one goes."""
    migrate_by_plan(fresh_db, tmp_path, POSTS, POSTS_PLAN)
    res = run_cli("migrate", "rollback", "--step", f"constraint_{AUTHORS_FK}", "--yes", database_url=fresh_db)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    used = scalar(fresh_db, "SELECT author_id::text FROM posts WHERE id = 2")
    with psycopg.connect(fresh_db) as c, pytest.raises(psycopg.errors.ForeignKeyViolation):
        c.execute("DELETE FROM authors WHERE id = %s", (used,))
    spare = _author(fresh_db, "Nobody")
    with psycopg.connect(fresh_db) as c:
        assert c.execute("DELETE FROM authors WHERE id = %s", (spare,)).rowcount == 1

    taken = _author(fresh_db, "Carol")
    with psycopg.connect(fresh_db) as t:
        t.execute("UPDATE posts SET author_id = %s WHERE id = 1", (taken,))
        w = _waiting(fresh_db, f"DELETE FROM authors WHERE id = '{taken}'")
        assert w.is_alive(), w.error or "the delete did not wait for the write"
        t.commit()
    w.join()
    assert "violates foreign key constraint" in w.error, w.error
    assert scalar(fresh_db, DANGLING) == 0
    res = run_cli("migrate", "run", "--reinstate", f"constraint_{AUTHORS_FK}", database_url=fresh_db)
    assert res.returncode == 0, res.stderr[-2000:]


def test_a_lookup_row_renamed_while_a_row_is_given_its_reference_renames_that_row_too(
        fresh_db: str, tmp_path: Path) -> None:
    """The new application gives a row the reference of a lookup row another transaction renames
    (the rename's trigger renames the text of the rows it sees): the write waits for the rename and
    takes the new name, with the foreign key in place (it locks the lookup row only after the
    trigger has copied the text)."""
    migrate_by_plan(fresh_db, tmp_path, POSTS, POSTS_PLAN)
    for i, write in enumerate(["INSERT INTO posts (author_id, body) VALUES ('{id}', 'new')",
                               "UPDATE posts SET author_id = '{id}' WHERE id = (SELECT min(id) FROM posts"
                               " WHERE author = 'bob')"]):
        renamed = _author(fresh_db, f"Old {i}")
        with psycopg.connect(fresh_db) as t:
            t.execute("UPDATE authors SET name = %s WHERE id = %s", (f"New {i}", renamed))
            w = _waiting(fresh_db, write.format(id=renamed))
            assert w.is_alive(), w.error or f"{write} did not wait for the rename"
            t.commit()
        w.join()
        assert w.error == ""
        assert rows(fresh_db, f"SELECT DISTINCT author FROM posts WHERE author_id = '{renamed}'") == [(f"New {i}",)]

    assert scalar(fresh_db, MISMATCHED) == 0
    assert run_cli("migrate", "verify", database_url=fresh_db).returncode == 0


ITEMS = """
CREATE TABLE items (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name text, price numeric(8, 2));
INSERT INTO items (name, price) SELECT 'i' || i, i FROM generate_series(1, 20) i;
"""

ITEMS_PLAN = """
version = 1
name = "offers"

[[operation]]
type = "split_child"
parent = "items"
child = "offers"
columns = ["price"]
fk = "item_id"
when = "price > 0"
active_flag = "is_active"
"""

ACTIVE_UNQUALIFIED = ("SELECT count(*) FROM items i JOIN offers o ON o.item_id = i.id AND o.is_default"
                      " WHERE o.is_active AND NOT coalesce(i.price > 0, false)")


def test_a_default_child_made_active_while_its_parent_stops_meeting_when_ends_inactive(
        fresh_db: str, tmp_path: Path) -> None:
    """The new application makes a child the active default of a parent (with the parent's values:
    its trigger does not write the parent) while the old application makes the parent stop meeting
    `when` (its trigger deactivates the default child it sees, not that one): one waits for the
    other, and the child ends inactive."""
    migrate_by_plan(fresh_db, tmp_path, ITEMS, ITEMS_PLAN)

    # Another child becomes the default, with the parent's values.
    with psycopg.connect(fresh_db) as t:
        t.execute("UPDATE offers SET is_default = false WHERE item_id = 1 AND is_default")
        t.execute("INSERT INTO offers (item_id, price, is_default) VALUES (1, 1, true)")
        w = _waiting(fresh_db, "UPDATE items SET price = 0 WHERE id = 1")
        assert w.is_alive(), w.error or "the parent's update did not wait for the new default"
        t.commit()
    w.join()
    assert w.error == ""
    assert scalar(fresh_db, ACTIVE_UNQUALIFIED) == 0

    # The default child, made inactive by the new application, is made active again.
    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute("UPDATE offers SET is_active = false WHERE item_id = 2 AND is_default")
    with psycopg.connect(fresh_db) as t:
        t.execute("UPDATE offers SET is_active = true WHERE item_id = 2 AND is_default")
        w = _waiting(fresh_db, "UPDATE items SET price = -2 WHERE id = 2")
        assert w.is_alive(), w.error or "the parent's update did not wait for the reactivation"
        t.commit()
    w.join()
    assert w.error == ""

    assert scalar(fresh_db, ACTIVE_UNQUALIFIED) == 0
    assert run_cli("migrate", "verify", database_url=fresh_db).returncode == 0


ORDERS = ITEMS + """
UPDATE items SET price = 0 WHERE id IN (5, 6);
CREATE TABLE orders (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, item_id bigint REFERENCES items, qty integer);
INSERT INTO orders (item_id, qty) SELECT 1 + i % 20, i FROM generate_series(1, 40) i;
"""

ORDERS_PLAN = ITEMS_PLAN + """
[[operation]]
type = "link_child_reference"
table = "orders"
reference = "item_id"
child = "offers"
fk = "offer_id"
"""


def test_a_row_written_while_the_new_application_gives_its_parent_a_default_child_is_linked_to_it(
        fresh_db: str, tmp_path: Path) -> None:
    """A parent that does not meet `when` has no default child until the new application makes one
    (with the parent's values: the parent is not written). An order written meanwhile cannot see
    it, and the new child's trigger links only the orders it sees: one waits for the other."""
    migrate_by_plan(fresh_db, tmp_path, ORDERS, ORDERS_PLAN)
    assert scalar(fresh_db, "SELECT count(*) FROM offers WHERE item_id IN (5, 6)") == 0
    with psycopg.connect(fresh_db) as t:
        made = t.execute("INSERT INTO offers (item_id, price, is_default) VALUES (5, 0, true) RETURNING id").fetchone()
        assert made
        w = _waiting(fresh_db, "INSERT INTO orders (item_id, qty) VALUES (5, -1)")
        assert w.is_alive(), w.error or "the order did not wait for the new default child"
        t.commit()
    w.join()
    assert w.error == ""
    assert scalar(fresh_db, "SELECT offer_id FROM orders WHERE qty = -1") == made[0]

    # The order first: the new child waits for it, then links it.
    with psycopg.connect(fresh_db) as t:
        t.execute("INSERT INTO orders (item_id, qty) VALUES (6, -2)")
        w = _waiting(fresh_db, "INSERT INTO offers (item_id, price, is_default) VALUES (6, 0, true)")
        assert w.is_alive(), w.error or "the new default child did not wait for the order"
        t.commit()
    w.join()
    assert w.error == ""
    assert scalar(fresh_db, "SELECT o.offer_id = c.id FROM orders o JOIN offers c ON c.item_id = 6"
                            " WHERE o.qty = -2") is True
    assert run_cli("migrate", "verify", database_url=fresh_db).returncode == 0


SHELF = """
CREATE TABLE books (isbn text PRIMARY KEY, price numeric(8,2) NOT NULL, copies integer NOT NULL DEFAULT 1);
CREATE TABLE loans (id integer GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
                    isbn text NOT NULL REFERENCES books (isbn) ON UPDATE CASCADE, member text);
INSERT INTO books SELECT 'B' || i, i, 1 + i % 3 FROM generate_series(1, 6) i;
INSERT INTO loans (isbn, member) SELECT 'B' || (1 + i % 6), 'm' || i FROM generate_series(1, 30) i;
"""

SHELF_PLAN = """
version = 1
name = "shelf"

[[operation]]
type = "split_child"
parent = "books"
child = "editions"
columns = ["price", "copies"]
fk = "book_isbn"

[[operation]]
type = "link_child_reference"
table = "loans"
reference = "isbn"
child = "editions"
fk = "edition_id"
"""


def test_a_child_moved_to_another_parent_takes_its_rows_along_and_a_default_one_stays(
        fresh_db: str, tmp_path: Path) -> None:
    """The new application moves an edition to another book: the loans linked to it name that book
    now (their reference is their edition's book). A book's default edition cannot move, as it
    cannot be deleted, while the legacy columns are its; a renamed book's key still carries its
    editions and loans."""
    migrate_by_plan(fresh_db, tmp_path, SHELF, SHELF_PLAN)
    with psycopg.connect(fresh_db, autocommit=True) as c:
        extra = c.execute("INSERT INTO editions (book_isbn, price, copies) VALUES ('B1', 9, 1) RETURNING id").fetchone()
        assert extra
        loan = c.execute("INSERT INTO loans (edition_id, member) VALUES (%s, 'x') RETURNING id", extra).fetchone()
        assert loan
        assert c.execute("SELECT isbn FROM loans WHERE id = %s", loan).fetchone() == ("B1",)
        c.execute("UPDATE editions SET book_isbn = 'B2' WHERE id = %s", extra)
        assert c.execute("SELECT isbn, edition_id FROM loans WHERE id = %s", loan).fetchone() == ("B2", extra[0])

        with pytest.raises(psycopg.errors.RestrictViolation):
            c.execute("UPDATE editions SET book_isbn = 'B4' WHERE book_isbn = 'B3' AND is_default")
        c.execute("UPDATE books SET isbn = 'B5-renamed' WHERE isbn = 'B5'")
        assert c.execute("SELECT count(*) FROM editions WHERE book_isbn = 'B5-renamed' AND is_default").fetchone() == (1,)
    assert scalar(fresh_db, "SELECT count(*) FROM loans l JOIN editions e ON e.id = l.edition_id"
                            " WHERE l.isbn IS DISTINCT FROM e.book_isbn") == 0
    assert scalar(fresh_db, "SELECT count(*) FROM loans WHERE isbn = 'B5-renamed' AND edition_id IS NOT NULL") == 5
    res = run_cli("migrate", "verify", database_url=fresh_db)
    assert res.returncode == 0, res.stdout[-2000:]


def test_a_row_linked_to_a_child_while_it_moves_follows_it(fresh_db: str, tmp_path: Path) -> None:
    """The move of a child and a write that links a row to it wait for each other, in either
    order: the row ends naming the child's new parent."""
    migrate_by_plan(fresh_db, tmp_path, SHELF, SHELF_PLAN)
    for first_the_move, parents in ((True, ("B1", "B2")), (False, ("B3", "B4"))):
        extra = scalar(fresh_db, f"INSERT INTO editions (book_isbn, price, copies) VALUES ('{parents[0]}', 9, 1)"
                                 " RETURNING id")
        move = f"UPDATE editions SET book_isbn = '{parents[1]}' WHERE id = '{extra}'"
        link = f"INSERT INTO loans (edition_id, member) VALUES ('{extra}', 'race')"
        with psycopg.connect(fresh_db) as t:
            t.execute((move if first_the_move else link).encode())
            w = _waiting(fresh_db, link if first_the_move else move)
            assert w.is_alive(), w.error or "the second write did not wait for the first"
            t.commit()
        w.join()
        assert w.error == ""
        assert scalar(fresh_db, f"SELECT isbn FROM loans WHERE edition_id = '{extra}'") == parents[1]
    res = run_cli("migrate", "verify", database_url=fresh_db)
    assert res.returncode == 0, res.stdout[-2000:]
