"""`monitoring = true`: the guide's views and check_data_integrity() for a plan file's database.
The function names every row the plan's verify names (a legacy value its normalized form does not
match), nothing on a consistent database; complete replaces it by the checks that hold without
the legacy columns; rollback drops all three; `migrate plan` refuses to replace a view or a
function of those names that the database has already."""

from __future__ import annotations

from pathlib import Path

import psycopg

from tests.helpers import rows, run_cli, scalar

SCHEMA = """
CREATE TABLE books (isbn text PRIMARY KEY, title text NOT NULL, publisher text, price numeric(8, 2));
INSERT INTO books SELECT 'isbn-' || i, 'Book ' || i, (ARRAY['Penguin', ' penguin', 'Faber', NULL])[1 + i % 4],
  CASE WHEN i % 10 = 0 THEN 0 ELSE i END FROM generate_series(1, 300) i;
"""

PLAN = """
version = 1
name = "watched"
monitoring = true

[[operation]]
type = "extract_lookup"
lookup = "publishers"
key = "casefold"
sources = [{ table = "books", column = "publisher", fk = "publisher_id" }]

[[operation]]
type = "quarantine_rule"
table = "books"
reason = "non_positive_price"
when = "price <= 0"
"""

OBJECTS = ("SELECT to_regclass('public.db_performance_summary') IS NOT NULL, to_regclass('public.slow_queries')"
           " IS NOT NULL, to_regproc('public.check_data_integrity') IS NOT NULL")


def test_a_plans_monitoring_names_what_verify_names_and_goes_with_rollback(fresh_db: str, tmp_path: Path) -> None:
    plan = tmp_path / "watched.toml"
    plan.write_text(PLAN)
    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute(SCHEMA)
    res = run_cli("migrate", "run", "--plan", str(plan), database_url=fresh_db)
    assert res.returncode == 0, res.stderr
    assert rows(fresh_db, OBJECTS) == [(True, True, True)]
    assert scalar(fresh_db, "SELECT count(*) FROM db_performance_summary WHERE metric = 'connection_count'") == 1
    assert scalar(fresh_db, "SELECT count(*) FROM check_data_integrity()") == 0

    # Changes the triggers do not see (replication role) are named, row by row, as verify names them.
    with psycopg.connect(fresh_db, autocommit=True) as c, c.transaction():
        c.execute("SET LOCAL session_replication_role = replica")
        c.execute("UPDATE books SET publisher = 'Faber' WHERE isbn = 'isbn-1'")  # was ' penguin'
        c.execute("UPDATE books SET price = -1 WHERE isbn = 'isbn-3'")  # not quarantined
        c.execute("DELETE FROM villager_migration.plan_quarantine WHERE row_key = 'isbn-10'")
    assert rows(fresh_db, "SELECT kind, table_name, row_id FROM check_data_integrity() ORDER BY 3") == [
        ("lookup_mismatch", "books", "isbn-1"), ("not_quarantined", "books", "isbn-10"),
        ("not_quarantined", "books", "isbn-3")]
    assert run_cli("migrate", "verify", database_url=fresh_db).returncode != 0
    with psycopg.connect(fresh_db, autocommit=True) as c:  # the applications' writes put it right
        c.execute("UPDATE books SET publisher = 'PENGUIN' WHERE isbn = 'isbn-1'")
        c.execute("UPDATE books SET price = price WHERE isbn IN ('isbn-3', 'isbn-10')")
    assert scalar(fresh_db, "SELECT count(*) FROM check_data_integrity()") == 0

    rolled = run_cli("migrate", "rollback", "--yes", database_url=fresh_db)
    assert rolled.returncode == 0, rolled.stderr
    assert rows(fresh_db, OBJECTS) == [(False, False, False)]

    res = run_cli("migrate", "run", "--plan", str(plan), database_url=fresh_db)
    assert res.returncode == 0, res.stderr
    done = run_cli("migrate", "complete", "--yes", "--no-reader-check", database_url=fresh_db)
    assert done.returncode == 0, done.stderr
    # Without the legacy columns the function still runs (it read them before complete).
    assert scalar(fresh_db, "SELECT count(*) FROM check_data_integrity()") == 0
    assert "publisher" not in str(scalar(fresh_db, "SELECT pg_get_functiondef('public.check_data_integrity'::regproc)"))


def test_monitoring_does_not_replace_the_databases_own_view(fresh_db: str, tmp_path: Path) -> None:
    plan = tmp_path / "watched.toml"
    plan.write_text(PLAN)
    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute(SCHEMA)
        c.execute("CREATE VIEW slow_queries AS SELECT 1 AS mine")
    res = run_cli("migrate", "plan", "--plan", str(plan), database_url=fresh_db)
    assert res.returncode == 2
    assert "file, monitoring: public.slow_queries already exists (a view)" in res.stdout + res.stderr
    assert scalar(fresh_db, "SELECT to_regnamespace('villager_migration') IS NULL")
    plan.write_text(PLAN.replace("monitoring = true", "monitoring = false"))
    assert run_cli("migrate", "plan", "--plan", str(plan), database_url=fresh_db).returncode == 0
