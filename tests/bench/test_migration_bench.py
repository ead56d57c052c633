"""`villager-shop bench migration --json`: the contract of its output, on a tiny data set."""

from __future__ import annotations

import json
import os

import pytest

from tests.helpers import run_cli
from tests.plans import plans_step_names
from villager_shop.core.db import drop_database
from villager_shop.core.urls import with_dbname
from villager_shop.migration.planfile import bundled

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
    assert set(out["goals"]) == {"total_le_1_5x_guide", "total_le_guide", "max_write_stall_lt_100ms",
                                 "max_stall_after_first_index_lt_100ms", "max_write_latency_lt_100ms",
                                 "no_writer_errors"}, out
    assert out["goals"]["total_le_guide"] == (out["total_ratio_online_vs_guide"] <= 1.0), out
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


def test_bench_migration_at_two_scales_reports_steps_memory_and_growth(pg_admin_url: str) -> None:
    """`--scales` runs ours alone (`--no-guide`) at each scale and reports how it grew; `--reuse-data`
    keeps the generated data for the next invocation, which reuses it."""
    prefix = f"wt_benchtest_{os.getpid()}"
    args = ("bench", "migration", "--scales", "0.02,0.04", "--no-guide", "--reuse-data", "--db-prefix", prefix,
            "--writer-threads", "1", "--json")
    try:
        res = run_cli(*args, database_url=pg_admin_url, timeout=600)
        assert res.returncode == 0, res.stderr[-2000:]
        out = json.loads(res.stdout)
        assert out["scales"] == [0.02, 0.04] and set(out["runs"]) == {"0.02", "0.04"}, out
        plans = plans_step_names(with_dbname(pg_admin_url, f"{prefix}_legacy_s0_02_seed42"))  # the data kept
        for run in out["runs"].values():
            assert "guide" not in run and run["data_reused"] is False and run["generate_s"] > 0, run
            o = run["online"]
            # Every step of the plan, in plan order, with its time; the slowest named.
            assert list(o["steps_s"]) in plans, o["steps_s"]
            assert list(o["steps_s"])[-1] == "analyze" and all(v >= 0 for v in o["steps_s"].values()), o
            assert o["slowest_steps"][0] == max(o["steps_s"], key=o["steps_s"].get), o
            assert sum(o["steps_s"].values()) <= o["total_s"], o
            assert {"copy_s", "index_s", "catch_up_s", "swap_s", "validate_s", "drop_old_s"} <= set(o["rebuild_stages_s"])
            # The migrator's own process: tens of MB, not the parent's writers and generator.
            assert 20 < o["migrator_peak_rss_mb"] < 500, o
            assert 0 <= o["writer_max_stall_after_first_index_ms"] <= o["writer_max_stall_ms"], o
            worst = o["worst_stalls_after_first_index"]
            assert worst and abs(worst[0]["stall_ms"] - o["writer_max_stall_after_first_index_ms"]) <= 0.1, o
            assert o["writer_errors"] == 0, o
        grew = out["growth"]
        assert grew["scale_ratio"] == 2 and grew["time_ratio_limit"] == 2.1 and grew["rss_ratio_limit"] == 1.2, grew
        lo, hi = out["runs"]["0.02"]["online"], out["runs"]["0.04"]["online"]
        assert grew["time_ratio"] == round(hi["total_s"] / lo["total_s"], 3), grew
        assert grew["rss_ratio"] == round(hi["migrator_peak_rss_mb"] / lo["migrator_peak_rss_mb"], 3), grew
        assert set(grew["steps_ratio"]) <= set(lo["steps_s"]), grew
        assert out["goals"]["time_linear"] == (grew["time_ratio"] <= 2.1), out["goals"]
        assert set(out["goals"]) == {"time_linear", "rss_flat", "max_stall_after_first_index_lt_100ms",
                                     "no_writer_errors"}, out["goals"]
        again = run_cli("bench", "migration", "--scale", "0.02", "--no-guide", "--reuse-data", "--db-prefix", prefix,
                        "--writer-threads", "1", "--json", database_url=pg_admin_url, timeout=600)
        assert again.returncode == 0, again.stderr[-2000:]
        reused = json.loads(again.stdout)
        assert reused["data_reused"] is True and reused["generate_s"] is None, reused
        assert reused["legacy_rows"] == out["runs"]["0.02"]["legacy_rows"], reused
    finally:
        for scale in ("0_02", "0_04"):
            drop_database(pg_admin_url, f"{prefix}_legacy_s{scale}_seed42")


def test_bench_migration_runs_a_plan_file_as_ours(pg_admin_url: str) -> None:
    """`--plan FILE`: ours is `migrate run --plan FILE` (plans/villager.toml), under the same writers
    (the new application's among them); a file that cannot be read is refused before anything runs."""
    res = run_cli("bench", "migration", "--scale", "0.02", "--writer-threads", "1", "--no-guide", "--json",
                  "--plan", str(bundled.path()), database_url=pg_admin_url, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout)
    assert out["plan"] == "villager", out
    r = out["online"]
    assert r["writer_errors"] == 0 and r["writer_ops"] > 0, r
    # The plan file's own steps ran (one walk of products for its four operations) and were timed.
    assert {"plan_functions", "backfill_products", "sync_triggers"} <= set(r["steps_s"]), r["steps_s"]
    assert "writer_max_stall_after_first_index_ms" in r, r
    bad = run_cli("bench", "migration", "--scale", "0.02", "--no-guide", "--plan", "/nonexistent/plan.toml",
                  database_url=pg_admin_url, timeout=60)
    assert bad.returncode == 2 and "--plan" in bad.stderr and "Traceback" not in bad.stderr, bad.stderr
