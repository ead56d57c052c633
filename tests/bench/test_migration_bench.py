"""`villager-shop bench migration --json`: the contract of its output, on a tiny data set."""

from __future__ import annotations

import json

import pytest

from tests.helpers import run_cli

pytestmark = pytest.mark.slow


def test_bench_migration_reports_both_strategies_and_the_floor(pg_admin_url: str) -> None:
    res = run_cli("bench", "migration", "--scale", "0.02", "--writer-threads", "1", "--rounds", "2", "--json",
                  database_url=pg_admin_url, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout)
    for strategy in ("guide", "online"):
        r = out[strategy]
        assert {"total_s", "backfill_rows_per_s", "writer_ops", "writer_errors", "writer_p50_ms", "writer_p99_ms",
                "writer_max_ms"} <= set(r), r
        assert r["total_s"] > 0 and r["writer_ops"] > 0 and r["writer_errors"] == 0, (strategy, r)
        # The stall is a write's time beyond its operation's median before the run: never above its time.
        assert 0 <= r["writer_max_stall_ms"] <= r["writer_max_ms"], (strategy, r)
    assert out["writer_rate_ops_per_s"] == 200.0, out
    assert set(out["goals"]) == {"total_le_1_5x_guide", "max_write_stall_lt_100ms", "max_write_latency_lt_100ms",
                                 "no_writer_errors"}, out
    # we backfill every table (the guide skips order_items and orders); the floor is that skipped update
    assert out["online"]["backfill_rows"] > out["guide"]["backfill_rows"], out
    assert out["order_items_floor"]["rows"] > 0 and out["order_items_floor"]["total_s"] > 0, out
    assert out["total_ratio_online_vs_guide_plus_order_items_floor"] < out["total_ratio_online_vs_guide"], out
    # Two rounds, alternating; the figures above are those of one measured round (the lower median).
    rounds = out["rounds"]
    assert len(rounds) == 2 and all(r["online_writer_errors"] == 0 for r in rounds), rounds
    assert out["total_ratio_online_vs_guide"] == min(r["total_ratio_online_vs_guide"] for r in rounds), out
    assert out["online"]["total_s"] in {r["online_total_s"] for r in rounds}, out
    assert out["total_ratio_median"] >= out["total_ratio_online_vs_guide"], out
