"""A plan file through a real PgBouncer (transaction pooling), as production runs it: DATABASE_URL is
the pooler, DATABASE_DIRECT_URL the server. The library's plan runs, is killed mid-backfill and
resumed while both of the library's applications write through the same pool; loans is copied and
swapped in; status, verify, rollback, a second run and complete all go through the pooler. Every
write an application was told was done is there in both forms, rollback gives the legacy tables back
as they were, and every server connection of the pool is left as a fresh session of the server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import psycopg
import pytest

from tests.helpers import ROOT, cli_env, run_cli
from tests.migration.test_pooler import every_pooled_connection, server_defaults
from tests.pgbouncer import PgBouncer
from tests.samples.scenario import SAMPLES, SLOW_BACKFILL, backfill_progress, create, same_in_both_forms
from villager_shop.samples.compare import fingerprint, tables_fingerprint
from villager_shop.samples.live import LiveWriter

pytestmark = pytest.mark.slow

ROWS = 3000
LIBRARY = SAMPLES["library"]


def _legacy_rows(c: psycopg.Connection[Any], columns: dict[str, list[str]]) -> dict[str, tuple[int, str]]:
    """Each legacy table's rows, only the columns it had before the run, in the text of its whole row
    (what tables_fingerprint reads once the plan's columns are gone)."""
    out = {}
    for table, key in LIBRARY.generate.TABLES.items():
        cols = ", ".join(f't."{name}"' for name in columns[table])
        out[table] = fingerprint(c, f"SELECT ROW({cols}) AS t FROM public.{table} t ORDER BY t.{key}")
    return out


def _rebuild_method(c: psycopg.Connection[Any]) -> Any:
    return c.execute("SELECT value ->> 'method' FROM villager_migration.state WHERE key = 'rebuild:loans'").fetchone()


def test_library_plan_through_pgbouncer_leaves_every_pooled_connection_as_it_was(
        fresh_db: str, pgbouncer: PgBouncer) -> None:
    url = fresh_db
    create(url, LIBRARY, ROWS)
    pooled = pgbouncer.pooled(url)
    defaults = server_defaults(url)
    with psycopg.connect(url) as c:
        before = tables_fingerprint(c, LIBRARY.generate.TABLES)
    env = {"DATABASE_DIRECT_URL": url, **SLOW_BACKFILL}
    plan = ("--plan", LIBRARY.plan)

    # What other clients of the pool see while the plan runs: sampled the whole time, every state
    # that is not a fresh session's kept (a later sample of the same connection does not hide it).
    sampled: list[int] = []
    changed: list[tuple[int, tuple[Any, ...]]] = []
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.is_set():
            seen = every_pooled_connection(pooled, pgbouncer.pool_size)
            sampled.append(len(seen))
            changed.extend((pid, state) for pid, state in seen.items() if state != defaults)
            time.sleep(0.05)

    # Both applications write through the same pool during the run, the kill and the resume.
    writer = LiveWriter(pooled, [LIBRARY.writer.old_app(ROWS), LIBRARY.writer.new_app(ROWS)], seed=11)
    with writer:
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            time.sleep(0.5)  # the old application writes before the run too
            proc = subprocess.Popen([sys.executable, "-m", "villager_shop", "migrate", "run", *plan],
                                    env=cli_env(pooled, **env), cwd=ROOT, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, text=True)
            deadline = time.monotonic() + 120
            with psycopg.connect(url, autocommit=True) as c:
                while proc.poll() is None and time.monotonic() < deadline:
                    phase, done, _ = backfill_progress(c)
                    if phase == "backfilling" and done > 0:
                        break
                    time.sleep(0.01)
                assert proc.poll() is None, f"the run ended before its backfill could be killed: {proc.stderr}"
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                phase, done, total = backfill_progress(c)
            assert phase == "backfilling" and 0 < done < total, (phase, done, total)
            res = run_cli("migrate", "run", *plan, database_url=pooled, timeout=600, **env)  # resumes
            assert res.returncode == 0, res.stderr[-3000:]
            time.sleep(1.0)  # and both after it
        finally:
            sampling.set()
            sampler.join()
    summary = writer.summary()
    assert summary["old"]["errors"] == 0 and summary["new"]["errors"] == 0, summary
    assert summary["old"]["ops"] > 100 and summary["new"]["ops"] > 20, summary
    with psycopg.connect(url) as c:
        problems = writer.confirm(c, LIBRARY.writer.PROBES)
    assert problems == [], problems[:20]
    assert len(sampled) > 5 and changed == [], (defaults, len(sampled), changed[:10])

    for args in (["migrate", "status"], ["migrate", "verify"]):
        res = run_cli(*args, database_url=pooled, timeout=600, **env)
        assert res.returncode == 0, (args, res.stderr[-3000:])
    same_in_both_forms(url, LIBRARY)
    with psycopg.connect(url) as c:
        # loans was copied and swapped in while both applications wrote; its identity goes on.
        assert _rebuild_method(c) == ("rebuild",)
        assert c.execute("SELECT last_value >= (SELECT max(id) FROM loans) FROM loans_id_seq").fetchone() == (True,)
        assert fingerprint(c, LIBRARY.check.LEGACY_FORM) == fingerprint(c, LIBRARY.check.NORMALIZED_FORM)
        legacy_columns = {t: [col[0] for col in before[t]["columns"]] for t in LIBRARY.generate.TABLES}
        legacy_now = _legacy_rows(c, legacy_columns)

    # Rollback: the legacy tables as they were before it, row for row, and as defined before the run.
    res = run_cli("migrate", "rollback", "--yes", database_url=pooled, timeout=600, **env)
    assert res.returncode == 0, res.stderr[-3000:]
    with psycopg.connect(url) as c:
        after = tables_fingerprint(c, LIBRARY.generate.TABLES)
    assert {t: after[t]["rows"] for t in after} == legacy_now
    assert ({t: {k: v for k, v in after[t].items() if k != "rows"} for t in after}
            == {t: {k: v for k, v in before[t].items() if k != "rows"} for t in before})

    # The plan again, then complete: all through the pooler.
    for args in (["migrate", "run", *plan], ["migrate", "verify"]):
        res = run_cli(*args, database_url=pooled, timeout=600, **env)
        assert res.returncode == 0, (args, res.stderr[-3000:])
    with psycopg.connect(url) as c:
        assert _rebuild_method(c) == ("rebuild",)
        normalized = fingerprint(c, LIBRARY.check.NORMALIZED_FORM)
        assert fingerprint(c, LIBRARY.check.LEGACY_FORM) == normalized
    res = run_cli("migrate", "complete", "--yes", "--no-reader-check", "--quiet-seconds", "0.2",
                  database_url=pooled, timeout=600, **env)
    assert res.returncode == 0, res.stderr[-3000:]
    with psycopg.connect(url) as c:
        assert fingerprint(c, LIBRARY.check.NORMALIZED_FORM) == normalized

    after_all = every_pooled_connection(pooled, pgbouncer.pool_size)
    assert after_all and all(state == defaults for state in after_all.values()), (defaults, after_all)
    # Nobody holds the run lock: a direct run is not refused.
    with psycopg.connect(url) as c:
        assert c.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND database = (SELECT oid"
                         " FROM pg_database WHERE datname = current_database())").fetchone() == (0,)
