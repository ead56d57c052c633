"""Plans an outside user writes for schemas none of the shipped plans knows (identity and text keys,
serial columns, enums, domains, generated columns), run the whole way: verify, rollback, complete."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import psycopg
import pytest

from tests.helpers import rows, run_cli, scalar
from tests.plans import migrate_by_plan

SERIAL = """
CREATE TABLE tickets (code text PRIMARY KEY, seat_no serial, price numeric(8, 2) CHECK (price >= 0), note text);
INSERT INTO tickets (code, price, note) SELECT 'T' || i, i, 'n' FROM generate_series(1, 200) i;
"""

SERIAL_PLAN = """
version = 1
name = "serial"

[[operation]]
type = "split_child"
parent = "tickets"
child = "ticket_seats"
columns = ["seat_no", "price"]
fk = "ticket_code"
"""


def _run(url: str, tmp_path: Path, schema: str, plan_text: str) -> None:
    migrate_by_plan(url, tmp_path, schema, plan_text)
    res = run_cli("migrate", "verify", database_url=url)
    assert res.returncode == 0, res.stdout[-3000:]


def test_a_moved_serial_column_keeps_its_sequence_through_complete_and_rollback(fresh_db: str, tmp_path: Path) -> None:
    """The child's copy of a serial column draws from the parent's sequence, which belongs to the
    parent's column: `complete` drops that column, and its sequence would go with it (PostgreSQL
    refuses, since the child's default uses it). The child's column owns it; rollback gives it back."""
    _run(fresh_db, tmp_path, SERIAL, SERIAL_PLAN)
    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute("INSERT INTO tickets (code, price) VALUES ('old-app', 3)")
        c.execute("INSERT INTO ticket_seats (ticket_code, price) VALUES ('T1', 4)")
    assert rows(fresh_db, "SELECT t.seat_no = s.seat_no FROM tickets t JOIN ticket_seats s"
                          " ON s.ticket_code = t.code AND s.is_default WHERE t.code = 'old-app'") == [(True,)]
    res = run_cli("migrate", "rollback", "--yes", database_url=fresh_db)
    assert res.returncode == 0, res.stderr[-3000:]
    assert scalar(fresh_db, "SELECT pg_get_serial_sequence('public.tickets', 'seat_no')") == "public.tickets_seat_no_seq"
    _run(fresh_db, tmp_path, "SELECT 1", SERIAL_PLAN)
    res = run_cli("migrate", "complete", "--yes", "--no-reader-check", database_url=fresh_db)
    assert res.returncode == 0, res.stderr[-3000:]
    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute("INSERT INTO tickets (code) VALUES ('new-app')")
        c.execute("INSERT INTO ticket_seats (ticket_code, price, is_default) VALUES ('new-app', 5, true)")
    assert scalar(fresh_db, "SELECT count(DISTINCT seat_no) = count(*) FROM ticket_seats")
    assert scalar(fresh_db, "SELECT pg_get_serial_sequence('public.ticket_seats', 'seat_no')") \
        == "public.tickets_seat_no_seq"


NOT_VALID = """
CREATE TABLE visits (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, city text, minutes integer, blank text);
INSERT INTO visits (city, minutes) SELECT (ARRAY['Paris', ' paris', NULL])[1 + i % 3], i - 5 FROM generate_series(1, 300) i;
ALTER TABLE visits ADD CONSTRAINT visits_minutes_check CHECK (minutes >= 0) NOT VALID;
"""

NOT_VALID_PLAN = """
version = 1
name = "not_valid"

[[operation]]
type = "extract_lookup"
lookup = "cities"
key = "casefold"
sources = [{ table = "visits", column = "{column}" }]
"""


LINK_PLAN = """
[[operation]]
type = "split_child"
parent = "rooms"
child = "room_seats"
columns = ["seats"]

[[operation]]
type = "link_child_reference"
table = "visits"
reference = "room"
child = "room_seats"
fk = "room_id"
"""


def test_a_not_valid_check_that_legacy_rows_violate_is_refused_before_the_backfill_updates_them(
        fresh_db: str, tmp_path: Path) -> None:
    """An UPDATE checks every CHECK constraint of the row it writes, a `NOT VALID` one too: the
    backfill of a lookup reference would stop at the first violating row, and the run with it.
    `migrate plan` names the row; a source whose violating rows are all NULL (the backfill passes
    them by) is fine."""
    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute(NOT_VALID.encode())
    plan = tmp_path / "plan.toml"
    plan.write_text(NOT_VALID_PLAN.replace("{column}", "city"))
    res = run_cli("migrate", "plan", "--plan", str(plan), database_url=fresh_db)
    assert res.returncode == 2, res.stdout[-2000:] + res.stderr[-2000:]
    assert "operation 1 (extract_lookup, line 5), sources[0].table: visits row 1 violates its NOT VALID check" \
           " visits_minutes_check" in res.stderr
    with psycopg.connect(fresh_db, autocommit=True) as c:  # a link's table that cannot be rebuilt
        c.execute("CREATE TABLE rooms (code text PRIMARY KEY, seats integer);"
                  " INSERT INTO rooms VALUES ('R1', 3);"
                  " ALTER TABLE visits ADD room text, ADD CONSTRAINT visits_room_city UNIQUE (room, city);"
                  " ALTER TABLE visits DROP CONSTRAINT visits_minutes_check;"
                  " UPDATE visits SET room = 'R1' WHERE id = 2;"
                  " ALTER TABLE visits ADD CONSTRAINT visits_minutes_check CHECK (minutes >= 0) NOT VALID")
    plan.write_text(NOT_VALID_PLAN.replace("{column}", "blank") + LINK_PLAN)
    res = run_cli("migrate", "plan", "--plan", str(plan), database_url=fresh_db)
    assert res.returncode == 2, res.stdout[-2000:] + res.stderr[-2000:]
    assert "operation 3 (link_child_reference, line 17), table: visits row 2 violates" in res.stderr
    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute("UPDATE visits SET room = 'R1' WHERE id = 7")
        c.execute("DELETE FROM visits WHERE id = 2")
    res = run_cli("migrate", "run", "--plan", str(plan), database_url=fresh_db)
    assert res.returncode == 0, res.stderr[-3000:]
    assert scalar(fresh_db, "SELECT room_id IS NOT NULL FROM visits WHERE id = 7")


VOLATILE = """
CREATE SEQUENCE maker_seq;
CREATE TABLE parts (pid serial PRIMARY KEY, grams integer DEFAULT (100 + floor(random() * 50))::int,
                    maker text DEFAULT 'M-' || nextval('maker_seq'));
INSERT INTO parts (grams, maker) SELECT i, CASE WHEN i % 2 = 0 THEN 'Acme' ELSE 'Bolt' END FROM generate_series(1, 100) i;
"""

VOLATILE_PLAN = """
version = 1
name = "volatile"

[[operation]]
type = "derive_column"
table = "parts"
column = "kilos"
column_type = "numeric"
from = "grams / 1000.0"
writes = "grams"
back = "round(kilos * 1000)"

[[operation]]
type = "extract_lookup"
lookup = "makers"
sources = [{ table = "parts", column = "maker" }]
"""


def test_a_new_application_insert_is_kept_when_the_legacy_column_has_a_volatile_default(
        fresh_db: str, tmp_path: Path) -> None:
    """The new application inserts a row by its new columns alone: the legacy columns take their
    defaults, which a trigger cannot tell from a written value by evaluating them again when they
    call random() or nextval(). The row keeps what the new application wrote, and its legacy form
    follows; the old application's inserts still take their defaults."""
    _run(fresh_db, tmp_path, VOLATILE, VOLATILE_PLAN)
    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute("INSERT INTO parts (pid, kilos, makers_id) SELECT 500, 2.5, id FROM makers WHERE name = 'Acme'")
        c.execute("INSERT INTO parts (pid) VALUES (501)")
        c.execute("INSERT INTO parts (pid, grams, maker) VALUES (502, 7, 'Bolt')")
    assert rows(fresh_db, "SELECT p.pid, p.grams, p.kilos, p.maker, m.name FROM parts p"
                          " LEFT JOIN makers m ON m.id = p.makers_id WHERE pid IN (500, 502) ORDER BY 1") == [
        (500, 2500, Decimal("2.5"), "Acme", "Acme"), (502, 7, Decimal("0.007"), "Bolt", "Bolt")]
    assert rows(fresh_db, "SELECT grams BETWEEN 100 AND 150, maker LIKE 'M-%', maker = m.name FROM parts p"
                          " JOIN makers m ON m.id = p.makers_id WHERE pid = 501") == [(True, True, True)]
    res = run_cli("migrate", "verify", database_url=fresh_db)
    assert res.returncode == 0, res.stdout[-3000:]


QUOTED_CHECKS = """
CREATE TABLE products (sku text PRIMARY KEY, price numeric(8, 2) CONSTRAINT "CK_Price Positive" CHECK (price > 0),
                       stock integer CONSTRAINT "order" CHECK (stock >= 0));
INSERT INTO products SELECT 'P' || i, i, i FROM generate_series(1, 100) i;
"""

QUOTED_CHECKS_PLAN = """
version = 1
name = "quoted_checks"

[[operation]]
type = "split_child"
parent = "products"
child = "offers"
columns = ["price", "stock"]
fk = "product_sku"
"""


def test_a_parent_check_whose_name_needs_quotes_comes_along_to_the_child(fresh_db: str, tmp_path: Path) -> None:
    """A CHECK constraint named as SQL must quote it (mixed case, a space, a reserved word) is carried
    to the child under a name that needs quotes too: written bare, the child's CREATE TABLE did not
    parse, and the run stopped at its first step after `migrate plan` had passed it."""
    _run(fresh_db, tmp_path, QUOTED_CHECKS, QUOTED_CHECKS_PLAN)
    assert rows(fresh_db, "SELECT conname FROM pg_constraint WHERE conrelid = 'public.offers'::regclass"
                          " AND contype = 'c' ORDER BY 1") == [("offers_CK_Price Positive",), ("offers_order",)]
    with psycopg.connect(fresh_db, autocommit=True) as c, pytest.raises(psycopg.errors.CheckViolation):
        c.execute("INSERT INTO offers (product_sku, price, stock) VALUES ('P1', -1, 1)")
    res = run_cli("migrate", "complete", "--yes", "--no-reader-check", database_url=fresh_db)
    assert res.returncode == 0, res.stderr[-3000:]
