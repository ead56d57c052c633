"""sql: the plan's own statements. `up` runs once the new tables, columns and sync triggers exist
(a view over the lookup, a statement-level notification trigger on the new table); when `check`
does not hold after it, none of it stays, the step is not recorded done and the run stops; rollback runs `down` before the plan's tables go; complete runs `complete` before the legacy
columns go; `migrate plan` shows the SQL and refuses a table that does not exist."""

from __future__ import annotations

from pathlib import Path

import psycopg

from tests.helpers import run_cli, scalar

SCHEMA = """
CREATE TABLE posts (id bigserial PRIMARY KEY, title text NOT NULL, author_name text);
INSERT INTO posts (title, author_name) SELECT 'P' || i, (ARRAY['Ann', ' ann ', 'Bob', NULL])[1 + i % 4]
  FROM generate_series(1, 400) i;
CREATE TABLE audit (what text NOT NULL);
"""

PLAN = """
version = 1
name = "hooks"

[[operation]]
type = "extract_lookup"
lookup = "authors"
key = "casefold"
sources = [{ table = "posts", column = "author_name", fk = "author_id" }]

[[operation]]
type = "sql"
name = "authors_hooks"
tables = ["posts"]
up = '''
CREATE VIEW public.posts_per_author AS
  SELECT a.name, count(p.id) AS posts FROM public.authors a LEFT JOIN public.posts p ON p.author_id = a.id
   GROUP BY a.name;
CREATE FUNCTION public.authors_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO public.audit VALUES (TG_OP); RETURN NULL; END $$;
CREATE TRIGGER authors_changed AFTER INSERT OR UPDATE OR DELETE ON public.authors
  FOR EACH STATEMENT EXECUTE FUNCTION public.authors_changed();
'''
down = '''
DROP VIEW IF EXISTS public.posts_per_author;
DROP TRIGGER IF EXISTS authors_changed ON public.authors;
DROP FUNCTION IF EXISTS public.authors_changed();
'''
check = "to_regclass('public.posts_per_author') IS NOT NULL AND CHECK_EXTRA"
complete = "INSERT INTO public.audit VALUES ('completed')"
locks = "ACCESS EXCLUSIVE on authors (new, empty)"
"""


def _plan(tmp_path: Path, check_extra: str) -> Path:
    plan = tmp_path / "hooks.toml"
    plan.write_text(PLAN.replace("CHECK_EXTRA", check_extra))
    return plan


def test_the_plans_own_sql_runs_is_checked_and_is_undone_and_completed(fresh_db: str, tmp_path: Path) -> None:
    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute(SCHEMA)
    shown = run_cli("migrate", "plan", "--plan", str(_plan(tmp_path, "true")), "--sql", database_url=fresh_db)
    assert shown.returncode == 0, shown.stderr
    assert "CREATE VIEW public.posts_per_author" in shown.stdout
    assert "ACCESS EXCLUSIVE on authors (new, empty)" in shown.stdout

    # A check that does not hold: the step is not recorded done, the run stops before the backfill.
    failing = run_cli("migrate", "run", "--plan", str(_plan(tmp_path, "false")), database_url=fresh_db)
    assert failing.returncode != 0
    assert "sql operation authors_hooks: check does not hold after up" in failing.stderr
    assert "Traceback" not in failing.stderr
    assert scalar(fresh_db, "SELECT status FROM villager_migration.steps WHERE name = 'sql_authors_hooks'") != "done"
    assert scalar(fresh_db, "SELECT count(*) FROM posts WHERE author_id IS NOT NULL") == 0
    assert scalar(fresh_db, "SELECT to_regclass('public.posts_per_author') IS NULL")  # none of `up` kept

    rolled = run_cli("migrate", "rollback", "--yes", database_url=fresh_db)
    assert rolled.returncode == 0, rolled.stderr
    assert scalar(fresh_db, "SELECT to_regclass('public.posts_per_author') IS NULL")

    res = run_cli("migrate", "run", "--plan", str(_plan(tmp_path, "true")), database_url=fresh_db)
    assert res.returncode == 0, res.stderr
    assert scalar(fresh_db, "SELECT status FROM villager_migration.steps WHERE name = 'sql_authors_hooks'") == "done"
    # The view sees what the backfill filled: 'Ann' and ' ann ' are one author.
    assert scalar(fresh_db, "SELECT posts FROM posts_per_author WHERE lower(name) = 'ann'") == 200
    # The trigger is live: an old-application write of a new name creates an author through the sync.
    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute("UPDATE posts SET author_name = 'Cid' WHERE id = 3")
    assert scalar(fresh_db, "SELECT count(*) FROM audit WHERE what = 'INSERT'") == 1

    rolled = run_cli("migrate", "rollback", "--yes", database_url=fresh_db)
    assert rolled.returncode == 0, rolled.stderr
    assert scalar(fresh_db, "SELECT to_regclass('public.posts_per_author') IS NULL")
    assert scalar(fresh_db, "SELECT to_regprocedure('public.authors_changed()') IS NULL")

    res = run_cli("migrate", "run", "--plan", str(_plan(tmp_path, "true")), database_url=fresh_db)
    assert res.returncode == 0, res.stderr
    done = run_cli("migrate", "complete", "--yes", "--no-reader-check", database_url=fresh_db)
    assert done.returncode == 0, done.stderr
    assert scalar(fresh_db, "SELECT count(*) FROM audit WHERE what = 'completed'") == 1
    assert scalar(fresh_db, "SELECT posts FROM posts_per_author WHERE lower(name) = 'ann'") == 200  # kept
    assert scalar(fresh_db, "SELECT count(*) FROM information_schema.columns WHERE table_name = 'posts'"
                            " AND column_name = 'author_name'") == 0


def test_a_sql_operation_over_a_table_that_does_not_exist_or_without_down_is_refused(
        fresh_db: str, tmp_path: Path) -> None:
    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute(SCHEMA)
    plan = tmp_path / "bad.toml"
    plan.write_text(PLAN.replace('tables = ["posts"]', 'tables = ["postz"]').replace("CHECK_EXTRA", "true"))
    res = run_cli("migrate", "plan", "--plan", str(plan), database_url=fresh_db)
    assert res.returncode == 2
    assert "operation 2 (sql, line 11), tables[0]: there is no table public.postz" in res.stdout + res.stderr
    plan.write_text(PLAN.replace("down = '''", "downn = '''").replace("CHECK_EXTRA", "true"))
    res = run_cli("migrate", "plan", "--plan", str(plan), database_url=fresh_db)
    assert res.returncode == 2
    assert "operation 2 (sql, line 11), down: missing" in res.stdout + res.stderr
    assert scalar(fresh_db, "SELECT to_regnamespace('villager_migration') IS NULL")
