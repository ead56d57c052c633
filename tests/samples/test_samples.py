"""Each sample (blog, library) through its plan from plans/, on a real server: a run killed with
SIGKILL mid-backfill resumes and verifies; verify names one changed value; rollback gives the
legacy tables back byte for byte; both applications write through a whole run and every write they
were told was done is there in both forms; complete drops the legacy columns and the normalized data
still equals what the legacy data said."""

from __future__ import annotations

import json
import time
from typing import Any

import psycopg
import pytest

from tests.helpers import run_cli, scalar
from tests.samples.scenario import (
    SAMPLES,
    SLOW_BACKFILL,
    Sample,
    backfill_progress,
    create,
    run_killed_mid_backfill,
    same_in_both_forms,
)
from villager_shop.samples.compare import fingerprint, tables_fingerprint
from villager_shop.samples.live import LiveWriter

ROWS = 3000


def _flip(c: psycopg.Connection[Any], sample: Sample) -> tuple[str, str]:
    """Change one value on the normalized side only (sync triggers off); the row's key, and the SQL
    that puts it back."""
    c.execute("SET session_replication_role = replica")
    if sample.name == "blog":
        pid, before = c.execute("SELECT id, author_id FROM posts WHERE author_id IS NOT NULL ORDER BY id"
                                " OFFSET 100 LIMIT 1").fetchone()  # type: ignore[misc]
        c.execute("UPDATE posts SET author_id = (SELECT id FROM authors WHERE name_key <> (SELECT name_key FROM"
                  " authors WHERE id = %s) ORDER BY name_key LIMIT 1) WHERE id = %s", (before, pid))
        return str(pid), f"UPDATE posts SET author_id = '{before}' WHERE id = {pid}"
    isbn, before = c.execute("SELECT book_isbn, price FROM editions WHERE is_default ORDER BY book_isbn"
                             " OFFSET 100 LIMIT 1").fetchone()  # type: ignore[misc]
    c.execute("UPDATE editions SET price = price + 1 WHERE book_isbn = %s AND is_default", (isbn,))
    return isbn, f"UPDATE editions SET price = {before} WHERE book_isbn = '{isbn}' AND is_default"


def loans_rebuilt(url: str) -> None:
    """loans was copied and swapped in while both applications wrote; its identity went on."""
    assert scalar(url, "SELECT value ->> 'method' FROM villager_migration.state WHERE key = 'rebuild:loans'") \
        == "rebuild"
    assert scalar(url, "SELECT last_value >= (SELECT max(id) FROM loans) FROM loans_id_seq") is True


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_killed_mid_backfill_resumes_verify_finds_one_change_and_rollback_is_lossless(fresh_db: str, name: str) -> None:
    sample = SAMPLES[name]
    create(fresh_db, sample, ROWS)
    with psycopg.connect(fresh_db) as c:
        before = tables_fingerprint(c, sample.generate.TABLES)
    phase, done, total = run_killed_mid_backfill(fresh_db, sample)
    assert phase == "backfilling" and 0 < done < total, (phase, done, total)
    res = run_cli("migrate", "run", database_url=fresh_db)  # resumes the recorded plan, at full speed
    assert res.returncode == 0, res.stderr[-3000:]
    with psycopg.connect(fresh_db) as c:
        phase, done, total = backfill_progress(c)
        rows = c.execute("SELECT table_name, sum(rows_done), sum(rows_total) FROM villager_migration.backfill"
                         " GROUP BY 1").fetchall()
    assert phase == "migrated" and all(d == t for _, d, t in rows), rows
    res = run_cli("migrate", "verify", "--json", database_url=fresh_db)
    assert res.returncode == 0, res.stdout[-3000:]
    same_in_both_forms(fresh_db, sample)
    if name == "library":
        loans_rebuilt(fresh_db)

    # One value changed on the normalized side: verify fails (exit 5) naming that row, and only it.
    with psycopg.connect(fresh_db, autocommit=True) as c:
        key, undo = _flip(c, sample)
    res = run_cli("migrate", "verify", "--json", database_url=fresh_db)
    assert res.returncode == 5, res.stdout[-3000:]
    failed = [(ck["name"], [e["row_id"] for e in ck["examples"]]) for ck in json.loads(res.stdout)["checks"]
              if not ck["ok"]]
    assert failed == [(f"{'lookup_mismatch:posts' if name == 'blog' else 'child_mismatch:books'}", [key])], failed
    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute("SET session_replication_role = replica")
        c.execute(undo)
    assert run_cli("migrate", "verify", database_url=fresh_db).returncode == 0

    # Rollback: the legacy tables as they were, row for row and definition for definition.
    res = run_cli("migrate", "rollback", "--yes", database_url=fresh_db)
    assert res.returncode == 0, res.stderr[-3000:]
    with psycopg.connect(fresh_db) as c:
        after = tables_fingerprint(c, sample.generate.TABLES)
    assert after == before


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_both_applications_write_through_the_run_then_complete_keeps_the_data(fresh_db: str, name: str) -> None:
    sample = SAMPLES[name]
    create(fresh_db, sample, ROWS)
    writer = LiveWriter(fresh_db, [sample.writer.old_app(ROWS), sample.writer.new_app(ROWS)], seed=11)
    with writer:
        time.sleep(0.5)  # the old application writes before the run too
        res = run_cli("migrate", "run", "--plan", sample.plan, database_url=fresh_db, **SLOW_BACKFILL)
        time.sleep(1.0)  # and both after it
    summary = writer.summary()
    print(name, summary)
    assert res.returncode == 0, res.stderr[-3000:]
    assert summary["old"]["errors"] == 0 and summary["new"]["errors"] == 0, summary
    assert summary["old"]["ops"] > 100 and summary["new"]["ops"] > 20, summary
    with psycopg.connect(fresh_db) as c:
        problems = writer.confirm(c, sample.writer.PROBES)
    assert problems == [], problems[:20]
    # The lookup sees a write that is not there: one acknowledged value made wrong is one problem.
    key, values = next((k, v) for k, v in writer.ledgers["old"].rows.items() if v)
    writer.ledgers["old"].rows[key] = {**values, next(iter(values)): "never written"}
    with psycopg.connect(fresh_db) as c:
        assert len(writer.confirm(c, sample.writer.PROBES)) == 1
    writer.ledgers["old"].rows[key] = values
    res = run_cli("migrate", "verify", "--json", database_url=fresh_db)
    assert res.returncode == 0, res.stdout[-3000:]
    same_in_both_forms(fresh_db, sample)
    if name == "library":
        loans_rebuilt(fresh_db)
    with psycopg.connect(fresh_db) as c:
        legacy, normalized = fingerprint(c, sample.check.LEGACY_FORM), fingerprint(c, sample.check.NORMALIZED_FORM)
    assert legacy == normalized

    complete = ("migrate", "complete", "--yes", "--quiet-seconds", "0.2", "--no-reader-check")
    res = run_cli(*complete, database_url=fresh_db)
    assert res.returncode == 0, res.stderr[-3000:]
    with psycopg.connect(fresh_db) as c:
        left = c.execute("SELECT table_name || '.' || column_name FROM information_schema.columns"
                         " WHERE table_schema = 'public' AND (table_name, column_name) IN"
                         " (('posts', 'author_name'), ('posts', 'tag'), ('comments', 'author_name'),"
                         "  ('books', 'publisher'), ('books', 'price'), ('books', 'copies'))").fetchall()
        assert left == []
        assert fingerprint(c, sample.check.NORMALIZED_FORM) == normalized
        if name == "library":  # books.copies' CHECK went with the column; editions carries it
            assert c.execute("SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'editions'::regclass"
                             " AND conname = 'editions_copies_check'").fetchone() == ("CHECK ((copies >= 0))",)
    res = run_cli("migrate", "verify", "--json", database_url=fresh_db)
    assert res.returncode == 0, res.stdout[-3000:]
