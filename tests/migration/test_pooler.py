"""The migration with a real PgBouncer (transaction pooling) in front of the server, as production
runs it: DATABASE_URL is the pooler, DATABASE_DIRECT_URL the server, and an old application
writes through the same pool. Nothing the migration does may reach another client of the pool."""

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
from tests.pgbouncer import PgBouncer
from villager_shop.workload.writer import LiveWriter, check_expected

pytestmark = pytest.mark.slow

# What a client of the pool must see whatever ran before it on the same server connection.
SESSION_STATE = """
SELECT current_setting('session_replication_role'), current_setting('statement_timeout'),
       current_setting('lock_timeout'), current_setting('synchronous_commit'),
       current_setting('idle_in_transaction_session_timeout'),
       coalesce(current_setting('villager.backfill', true), ''),
       (SELECT count(*) FROM pg_prepared_statements),
       (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()),
       pg_backend_pid()
"""


def server_defaults(direct_url: str) -> tuple[Any, ...]:
    """The settings a fresh session of this database starts with (the server's, the database's)."""
    with psycopg.connect(direct_url) as conn:
        row = conn.execute(SESSION_STATE).fetchone()
    assert row is not None
    return tuple(row[:8])


def every_pooled_connection(pooled_url: str, pool_size: int) -> dict[int, tuple[Any, ...]]:
    """The session state of every server connection of the pool: as many clients as the pool has
    server connections (and more), each holding a transaction open so that each gets its own."""
    clients = [psycopg.connect(pooled_url, prepare_threshold=None) for _ in range(pool_size)]
    try:
        seen: dict[int, tuple[Any, ...]] = {}
        for c in clients:  # each keeps its transaction (and so its server connection) until the end
            row = c.execute(SESSION_STATE).fetchone()
            assert row is not None
            seen[int(row[8])] = tuple(row[:8])
        return seen
    finally:
        for c in clients:
            c.close()


def _backfilling(url: str) -> bool:
    with psycopg.connect(url) as c:
        if not c.execute("SELECT to_regclass('villager_migration.backfill')").fetchone()[0]:  # type: ignore[index]
            return False
        return bool(c.execute("SELECT count(*) FROM villager_migration.backfill WHERE rows_done > 0"
                              " AND finished_at IS NULL").fetchone()[0])  # type: ignore[index]


def test_session_commands_through_a_transaction_pooler_alone_are_refused_before_any_change(
        make_legacy_db: Any, pgbouncer: PgBouncer) -> None:
    url = make_legacy_db(0.01)
    pooled = pgbouncer.pooled(url)
    for args in (["migrate", "run"], ["migrate", "rollback", "--yes"], ["migrate", "complete", "--yes"]):
        res = run_cli(*args, database_url=pooled, timeout=120)
        assert res.returncode == 2, (args, res.stderr)
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and "DATABASE_DIRECT_URL" in lines[0] and "transaction pooler" in lines[0], res.stderr
    # Pointing the direct URL at the pooler is no way round it.
    res = run_cli("migrate", "run", database_url=pooled, DATABASE_DIRECT_URL=pooled, timeout=120)
    assert res.returncode == 2 and "DATABASE_DIRECT_URL" in res.stderr, res.stderr
    with psycopg.connect(url) as c:
        assert c.execute("SELECT to_regnamespace('villager_migration')").fetchone() == (None,)


def test_whole_lifecycle_through_pgbouncer_leaves_every_pooled_connection_as_it_was(
        make_legacy_db: Any, pgbouncer: PgBouncer) -> None:
    url = make_legacy_db(0.2)
    pooled = pgbouncer.pooled(url)
    defaults = server_defaults(url)
    env = {"DATABASE_DIRECT_URL": url, "VILLAGER_BATCH_SIZE": "300", "VILLAGER_TARGET_BATCH_MS": "20",
           "VILLAGER_BATCH_PAUSE_MS": "5"}

    # What other clients of the pool see while the backfill runs: sampled the whole time, and every
    # state that differs from the server's defaults kept (a later clean sample must not hide it).
    samples: list[int] = []
    leaked: list[tuple[int, tuple[Any, ...]]] = []
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.is_set():
            seen = every_pooled_connection(pooled, pgbouncer.pool_size)
            samples.append(len(seen))
            leaked.extend((pid, state) for pid, state in seen.items() if state != defaults)
            time.sleep(0.05)

    # The old application writes through the same pool during the run, the kill and the resume.
    with LiveWriter(pooled, legacy_threads=3, new_threads=1, pause_s=0.005) as writer:
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            proc = subprocess.Popen([sys.executable, "-m", "villager_shop", "migrate", "run"],
                                    env=cli_env(pooled, **env), cwd=ROOT, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, text=True)
            deadline = time.monotonic() + 120
            while not _backfilling(url) and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.02)
            assert proc.poll() is None, f"the run ended before the backfill could be interrupted: {proc.stderr}"
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            res = run_cli("migrate", "run", database_url=pooled, timeout=600, **env)
            assert res.returncode == 0, res.stderr
            time.sleep(0.5)
        finally:
            sampling.set()
            sampler.join()
    stats = writer.stats
    assert stats.errors == 0, stats.error_samples[:5]
    assert stats.ops > 100
    assert check_expected(url, writer) == []
    assert samples and leaked == [], (defaults, leaked[:5])

    for args in (["migrate", "status"], ["migrate", "verify"], ["migrate", "rollback", "--yes"],
                 ["migrate", "run"], ["migrate", "verify"], ["migrate", "complete", "--yes", "--quiet-seconds", "1",
                                                                   "--no-reader-check"]):
        res = run_cli(*args, database_url=pooled, timeout=600, **env)
        assert res.returncode == 0, (args, res.stderr)

    after = every_pooled_connection(pooled, pgbouncer.pool_size)
    assert after and all(state == defaults for state in after.values()), (defaults, after)
    # Nobody holds the run lock: a direct run is not refused.
    with psycopg.connect(url) as c:
        assert c.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND database = (SELECT oid"
                         " FROM pg_database WHERE datname = current_database())").fetchone() == (0,)
