"""`bench api --database NAME` (built once, reused, never dropped, someone else's database refused)
and `--cold-start S` (the restart with an empty cache under the whole mix), end to end and tiny;
and how the cold start reads its one-second windows."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from tests.helpers import run_cli
from villager_shop.bench.api_cold_start import probe_windows, reached_at, service_windows
from villager_shop.bench.api_data import reused_database
from villager_shop.core.db import create_database, drop_database
from villager_shop.core.errors import VillagerError
from villager_shop.core.urls import dbname_of

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def db_name(pg_admin_url: str) -> Iterator[str]:
    name = f"vbench_reuse_{uuid.uuid4().hex[:8]}"
    try:
        yield name
    finally:
        drop_database(pg_admin_url, name)


def _exists(admin_url: str, name: str) -> bool:
    with psycopg.connect(admin_url) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None


def test_a_named_database_is_built_once_reused_and_kept_and_the_cold_start_measured(
        pg_admin_url: str, redis_url: str, db_name: str) -> None:
    res = run_cli("bench", "api", "--scale", "0.05", "--users", "20", "--duration", "4", "--workers", "1",
                  "--guide-requests", "50", "--cached-requests", "150", "--cached-concurrency", "5",
                  "--database", db_name, "--cold-start", "4", "--json",
                  database_url=pg_admin_url, redis=redis_url, timeout=200)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["database_reused"] is False and out["kept_database"] == db_name
    cold = out["cold_start"]
    assert cold["restart_to_ready_s"] > 0 and cold["errors"] == 0, cold
    assert cold["locust"]["requests"] > 0 and cold["probe"]["requests"] > 0
    assert len(cold["probe_windows"]) >= 3 and len(cold["service_listing_windows"]) >= 3
    assert sum(w["count"] for w in cold["service_listing_windows"]) > 0
    assert set(cold["goals"]) == {"listing_p95_lt_20ms_within_10s", "no_request_over_500ms", "zero_errors"}
    assert {f"cold_start_{k}" for k in cold["goals"]} <= set(out["goals"])
    assert cold["max_request_ms"] >= cold["probe"]["max_ms"] > 0
    assert _exists(pg_admin_url, db_name)  # kept for the next run

    url, data, reused = reused_database(pg_admin_url, db_name, scale=0.05, seed=42, customers=3,
                                        say=lambda _m: None)
    assert reused and dbname_of(url) == db_name and data["slugs"] and len(data["logins"]) == 3
    with pytest.raises(VillagerError, match=r"scale 0\.1"):  # another scale: refused, not replaced
        reused_database(pg_admin_url, db_name, scale=0.1, seed=42, customers=3, say=lambda _m: None)
    assert _exists(pg_admin_url, db_name)


def test_a_database_without_the_mark_is_refused_and_left_alone(pg_admin_url: str, db_name: str) -> None:
    url = create_database(pg_admin_url, db_name)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE precious (x int)")
    with pytest.raises(VillagerError, match="no such mark"):
        reused_database(pg_admin_url, db_name, scale=0.05, seed=42, customers=3, say=lambda _m: None)
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT to_regclass('precious') IS NOT NULL").fetchone() == (True,)


def test_goals_are_reached_at_the_first_window_from_which_all_meet_them() -> None:
    def w(t: float, p95: float | None) -> dict[str, object]:
        return {"t_s": t, "p95_ms": p95}

    assert reached_at([w(0, 300), w(1, 40), w(2, 5), w(3, 25), w(4, 3), w(5, None), w(6, 4)]) == 4.0
    assert reached_at([w(0, 3), w(1, 4)]) == 0.0
    assert reached_at([w(0, 3), w(1, 21)]) is None  # not held at the end: not reached
    assert reached_at([]) is None


def test_service_windows_read_p95_and_slow_requests_between_samples() -> None:
    inf = float("inf")
    route = "GET /api/products"
    points = [
        (0.0, {route: {0.01: 0.0, 0.5: 0.0, inf: 0.0}}),
        (1.0, {route: {0.01: 90.0, 0.5: 98.0, inf: 100.0}}),  # 2 over 500 ms
        (2.0, {route: {0.01: 190.0, 0.5: 198.0, inf: 200.0}}),
    ]
    first, second = service_windows(points)
    assert first["t_s"] == 0.0 and first["count"] == 100 and first["over_500ms"] == 2
    assert first["p95_ms"] == pytest.approx(10 + 490 * 5 / 8, abs=0.01)  # rank 95 of the (10, 500] ms bucket
    assert second["count"] == 100 and second["over_500ms"] == 0 and second["p95_ms"] == pytest.approx(9.5)
    windows = probe_windows([(0.1, 2.0), (0.5, 4.0), (2.2, 30.0)])
    assert [x["count"] for x in windows] == [2, 0, 1]
    assert windows[0]["max_ms"] == 4.0 and windows[1]["p95_ms"] is None and windows[2]["p95_ms"] == 30.0
