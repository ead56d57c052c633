"""The migration next to a real streaming standby: it holds while the standby lags, goes on when it
catches up, does not wait forever for a standby that is gone, and obeys pause / resume / throttle
given from another process while it runs."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from tests.helpers import ROOT, cli_env, run_cli
from villager_shop.api.services.monitoring import Sampler
from villager_shop.embedded.replica import StreamingPair
from villager_shop.monitoring import metrics

pytestmark = pytest.mark.slow

SLOW_WALK = {"VILLAGER_BATCH_SIZE": "200", "VILLAGER_TARGET_BATCH_MS": "20", "VILLAGER_BATCH_PAUSE_MS": "20",
             "VILLAGER_BACKFILL_WORKERS": "1"}


def status(url: str) -> dict[str, Any]:
    res = run_cli("migrate", "status", "--json", database_url=url, timeout=60)
    assert res.returncode in (0, 1), res.stderr
    return dict(json.loads(res.stdout))


def wait_for(what: Callable[[], Any], timeout_s: float = 60, every_s: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = what()
        if got:
            return got
        time.sleep(every_s)
    raise AssertionError("timed out")


def rows_done(url: str) -> int:
    with psycopg.connect(url) as c:
        if c.execute("SELECT to_regclass('villager_migration.backfill')").fetchone() == (None,):
            return 0
        return int(c.execute("SELECT coalesce(sum(rows_done), 0) FROM villager_migration.backfill").fetchone()[0])  # type: ignore[index]


def start_run(url: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "villager_shop", "migrate", "run"], env=cli_env(url, **env),
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def test_run_holds_while_a_standby_lags_and_goes_on_when_it_catches_up(
        replicated_legacy_db: Any, streaming_pair: StreamingPair) -> None:
    url = replicated_legacy_db(0.1)
    streaming_pair.pause_replay()
    try:
        proc = start_run(url, VILLAGER_MAX_REPLICA_LAG_MS="300", **SLOW_WALK)
        held = wait_for(lambda: (status(url).get("throttle") or {}).get("throttled") and status(url))
        th = held["throttle"]
        assert th["signal"] == "replica_lag_ms" and th["limit"] == 300 and th["value"] > 300, th
        assert th["standbys"] and th["standbys"][0]["lag_bytes"] > 0, th
        # Held: nothing moves while the standby stays behind.
        before = rows_done(url)
        time.sleep(1.5)
        assert rows_done(url) == before
        assert proc.poll() is None
    finally:
        streaming_pair.resume_replay()
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert "holding the backfill: replica_lag_ms" in err
    done = status(url)
    assert done["throttle"]["throttled"] is False and done["throttle"]["total_throttled_s"] >= 1.5, done["throttle"]
    assert run_cli("migrate", "verify", database_url=url, timeout=300).returncode == 0


def test_a_standby_that_disappears_is_reported_and_not_waited_for_forever(
        replicated_legacy_db: Any, streaming_pair: StreamingPair) -> None:
    url = replicated_legacy_db(0.05)
    proc = start_run(url, VILLAGER_STANDBY_TIMEOUT_S="2", **SLOW_WALK)
    try:
        wait_for(lambda: rows_done(url) > 0, timeout_s=120, every_s=0.05)
        streaming_pair.stop_standby()
        _, err = proc.communicate(timeout=300)
    finally:
        streaming_pair.start_standby()
        streaming_pair.wait_streaming()
    assert proc.returncode == 0, err
    assert "has been gone for" in err and "going on without it" in err, err
    with psycopg.connect(url) as c:
        assert c.execute("SELECT count(*) FROM villager_migration.events WHERE kind = 'throttle'"
                         " AND message LIKE '%%gone%%'").fetchone()[0] >= 1  # type: ignore[index]


def test_pause_resume_and_throttle_change_a_running_backfill(make_legacy_db: Any) -> None:
    url = make_legacy_db(0.2)
    proc = start_run(url, **SLOW_WALK)
    try:
        wait_for(lambda: rows_done(url) > 0, timeout_s=120, every_s=0.05)
        res = run_cli("migrate", "pause", "--reason", "peak hour", database_url=url)
        assert res.returncode == 0, res.stderr
        st = wait_for(lambda: (s := status(url))["throttle"].get("throttled") and s)
        assert st["paused"]["reason"] == "peak hour" and "@" in st["paused"]["by"], st["paused"]
        assert st["throttle"]["signal"] == "operator_pause"
        # /metrics exports the same (the service's sampler reads the migration's state).
        sampler = Sampler(url, interval_s=0.1)
        try:
            snap = asyncio.run(sampler.snapshot())
        finally:
            asyncio.run(sampler.close())
        assert snap.error is None, snap.error
        assert metrics.sample("villager_migration_paused") == 1
        assert metrics.sample("villager_migration_throttled", {"signal": "operator_pause"}) == 1
        assert metrics.sample("villager_migration_throttled", {"signal": "replica_lag_ms"}) == 0
        first = rows_done(url)
        # While paused the old application's writes still reach the new columns (sync triggers).
        with psycopg.connect(url, autocommit=True) as c:
            pid = c.execute("SELECT id FROM products WHERE price > 0 ORDER BY id DESC LIMIT 1").fetchone()[0]  # type: ignore[index]
            c.execute("UPDATE products SET price = 4242.42 WHERE id = %s", (pid,))
            assert c.execute("SELECT price FROM product_variants WHERE product_id = %s AND is_default",
                             (pid,)).fetchone()[0] == Decimal("4242.42")  # type: ignore[index]
        time.sleep(1.5)
        assert rows_done(url) == first, "the backfill went on while paused"
        res = run_cli("migrate", "throttle", "--pause-ms", "400", "--json", database_url=url)
        assert res.returncode == 0 and json.loads(res.stdout)["pause_ms"] == 400, res.stderr
        assert run_cli("migrate", "resume", database_url=url).returncode == 0
        wait_for(lambda: rows_done(url) > first, timeout_s=30, every_s=0.05)
        with psycopg.connect(url) as c:
            b0 = c.execute("SELECT sum(batches) FROM villager_migration.backfill").fetchone()[0]  # type: ignore[index]
            time.sleep(2.0)
            b1 = c.execute("SELECT sum(batches) FROM villager_migration.backfill").fetchone()[0]  # type: ignore[index]
        assert 1 <= b1 - b0 <= 7, (b0, b1)  # one batch per 400 ms at most, plus the batches' own time
        assert run_cli("migrate", "throttle", "--reset", database_url=url).returncode == 0
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
    assert run_cli("migrate", "verify", database_url=url, timeout=300).returncode == 0
    with psycopg.connect(url) as c:
        kinds = [r[0] for r in c.execute("SELECT kind FROM villager_migration.events"
                                         " WHERE kind IN ('pause', 'resume', 'throttle') ORDER BY id")]
    assert kinds[:3] == ["pause", "throttle", "resume"], kinds
