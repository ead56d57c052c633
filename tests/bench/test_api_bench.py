"""`villager-shop bench api` end to end, tiny: the JSON shape and no errors (timings are not asserted;
speed belongs to the benchmark itself, run by hand at scale 1 with 1000 users, see README)."""

from __future__ import annotations

import json
import shutil
import statistics

import psycopg
import pytest

from tests.helpers import run_cli
from villager_shop.bench.api_metrics import service_latency

pytestmark = pytest.mark.timeout(180)

SCENARIO_KEYS = {"p50_ms", "p95_ms", "p99_ms", "rps", "requests", "errors"}


def _scratch_dbs(admin_url: str) -> set[str]:
    with psycopg.connect(admin_url) as conn:
        return {r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'vbench_api_%'")}


def test_bench_api_json(pg_admin_url: str, redis_url: str) -> None:
    before = _scratch_dbs(pg_admin_url)
    res = run_cli("bench", "api", "--scale", "0.05", "--users", "20", "--duration", "5", "--workers", "1",
                  "--guide-requests", "200", "--cached-requests", "500", "--cached-concurrency", "10", "--json",
                  database_url=pg_admin_url, redis=redis_url, timeout=150)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    scenarios = out["scenarios"]
    assert set(scenarios) == {"locust_mix", "listing_probe", "ab_guide", "cached_listing", "ceiling"}
    mix = scenarios["locust_mix"]
    assert set(mix) >= SCENARIO_KEYS
    assert mix["requests"] > 0 and mix["errors"] == 0, mix["failures"]
    assert {"GET /api/products?category=[slug]", "GET /api/products/[id]"} <= set(mix["by_name"])
    probe = scenarios["listing_probe"]  # the independent client during the mix, after the ramp
    assert set(probe) >= SCENARIO_KEYS and probe["requests"] > 10 and probe["errors"] == 0, probe
    assert 0 < probe["p50_ms"] <= probe["p95_ms"] <= probe["p99_ms"] <= probe["max_ms"]
    # the shoppers' pages were asked for once before the mix (a running shop, not a cold start)
    warm = mix["warm_up"]
    assert warm["failed"] == 0 and warm["requests"] > 2 + out["catalog"]["categories"], warm
    # the service's own timings over the mix after its ramp (its histograms): listings and the loop's lag
    timed = mix["service_latency"]
    listing = timed["GET /api/products"]
    assert listing["count"] >= mix["by_name"]["GET /api/products?category=[slug]"]["requests"]
    assert 0 < listing["p50_ms"] <= listing["p95_ms"] <= listing["p99_ms"]
    assert timed["event loop lag"]["count"] > 0
    for name in ("ab_guide", "cached_listing", "ceiling"):
        s = scenarios[name]
        if shutil.which("ab") is None:
            assert "skipped" in s
            continue
        assert set(s) >= SCENARIO_KEYS, s
        assert s["requests"] > 0 and s["errors"] == 0, s
    assert set(out["goals"]) == {"listing_p95_lt_20ms_at_20_users", "zero_errors", "cached_ge_half_ceiling"}
    assert out["goals"]["zero_errors"] is True
    # the listing goal reads the service's own p95 and the probe's; locust's is reported beside them
    assert out["listing_p95_ms"] == {"service": listing["p95_ms"], "probe": probe["p95_ms"],
                                     "locust": mix["listing_p95_ms"]}
    assert out["goals"]["listing_p95_lt_20ms_at_20_users"] is (listing["p95_ms"] < 20 and probe["p95_ms"] < 20)
    if shutil.which("ab"):
        ratios = scenarios["cached_listing"]["round_ratios"]  # alternating rounds, the median is the ratio
        assert len(ratios) == 3 and out["ratio_cached_vs_ceiling"] == round(statistics.median(ratios), 3)
        assert scenarios["cached_listing"]["requests"] == scenarios["ceiling"]["requests"] == 3 * (500 // 3)
    assert _scratch_dbs(pg_admin_url) <= before  # its scratch database is gone


def test_service_latency_reads_quantiles_between_two_snapshots() -> None:
    inf = float("inf")
    before = {"GET /x": {0.001: 10.0, 0.01: 10.0, inf: 10.0}}
    # since `before`: 100 more, 50 within 1 ms, 40 within (1, 10] ms, 10 above 10 ms
    after = {"GET /x": {0.001: 60.0, 0.01: 100.0, inf: 110.0}, "GET /idle": {0.001: 0.0, 0.01: 0.0, inf: 0.0}}
    out = service_latency(before, after)
    assert set(out) == {"GET /x"}  # nothing timed since: not reported
    x = out["GET /x"]
    assert x["count"] == 100
    assert x["p50_ms"] == pytest.approx(1.0)
    assert x["p95_ms"] == pytest.approx(10.0)  # beyond the last finite bound: that bound
    # inside a bucket: linear (20 within 1 ms, 80 in (1, 10] ms: the 50th is 30/80 into that bucket)
    mid = service_latency(before, {"GET /x": {0.001: 30.0, 0.01: 110.0, inf: 110.0}})["GET /x"]
    assert mid["p50_ms"] == pytest.approx(1.0 + 9.0 * 30 / 80, abs=0.01)
