"""`sample create` through the real command line: deterministic for a seed, messy as documented,
and refused (one line, exit 2, nothing changed) where its tables already exist."""

from __future__ import annotations

import psycopg

from tests.helpers import run_cli
from villager_shop.samples.compare import tables_fingerprint
from villager_shop.samples.library import generate as library


def test_same_seed_same_rows_and_a_second_create_is_refused(fresh_db: str, pg_admin_url: str) -> None:
    assert run_cli("sample", "create", "library", "--rows", "500", "--seed", "3", database_url=fresh_db).returncode == 0
    with psycopg.connect(fresh_db) as c:
        first = tables_fingerprint(c, library.TABLES)
        messy = c.execute("SELECT count(*) FILTER (WHERE publisher IS NULL), count(*) FILTER (WHERE price <= 0),"
                          " count(DISTINCT publisher), count(DISTINCT lower(publisher)) FROM books").fetchone()
    assert messy is not None and messy[0] > 0 and messy[2] > messy[3]
    res = run_cli("sample", "create", "library", "--rows", "500", database_url=fresh_db)
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "already exist" in res.stderr, res.stderr
    with psycopg.connect(fresh_db) as c:
        assert tables_fingerprint(c, library.TABLES) == first
    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute("DROP TABLE loans, books")
    assert run_cli("sample", "create", "library", "--rows", "500", "--seed", "3", database_url=fresh_db).returncode == 0
    with psycopg.connect(fresh_db) as c:
        assert tables_fingerprint(c, library.TABLES) == first
    res = run_cli("sample", "create", "shop", database_url=fresh_db)
    assert res.returncode == 2 and "unknown sample" in res.stderr


def test_blog_titles_blank_to_the_eye_are_what_the_plan_quarantines(fresh_db: str) -> None:
    assert run_cli("sample", "create", "blog", "--rows", "3000", database_url=fresh_db).returncode == 0
    with psycopg.connect(fresh_db) as c:
        spaces_only, invisible = c.execute(
            "SELECT count(*) FILTER (WHERE btrim(title) = ''),"
            " count(*) FILTER (WHERE title !~ '[^[:space:]\\u00a0\\u200b-\\u200d\\u2060\\ufeff]') FROM posts").fetchone()  # type: ignore[misc]
    assert 0 < spaces_only < invisible  # btrim alone would miss the no-break and zero-width ones
    assert run_cli("migrate", "run", "--plan", "plans/blog.toml", database_url=fresh_db).returncode == 0
    with psycopg.connect(fresh_db) as c:
        quarantined = c.execute("SELECT count(*) FROM villager_migration.plan_quarantine"
                                " WHERE table_name = 'posts' AND reason = 'blank_title'").fetchone()
    assert quarantined == (invisible,)
