"""`bench migration --scales 2,20`: ours at several scales in one invocation, and how it grows
from the smallest scale to the largest against the goals: time linear in the data (at most 5 %
over the scale ratio: 10.5x from scale 2 to 20), the migrator's memory flat (at most 1.2x), no
write stalled 100 ms once the first index exists, no writer error. Each step's growth shows which
one grows faster than the data."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from villager_shop.bench.migration import bench_migration

TIME_SLACK = 1.05  # time at the largest scale <= this x the scale ratio x time at the smallest
RSS_LIMIT = 1.2


def _ratio(hi: float, lo: float) -> float | None:
    return round(hi / lo, 3) if lo else None


def growth(lo: dict[str, Any], hi: dict[str, Any]) -> dict[str, Any]:
    """How ours grew from the run `lo` to the run `hi` (two `bench_migration` results)."""
    scale_ratio = hi["scale"] / lo["scale"]
    a, b = lo["online"], hi["online"]
    time_ratio = _ratio(b["total_s"], a["total_s"])
    rss_ratio = _ratio(b["migrator_peak_rss_mb"], a["migrator_peak_rss_mb"])
    steps = {name: _ratio(secs, a["steps_s"][name]) for name, secs in b["steps_s"].items()
             if a["steps_s"].get(name, 0) >= 0.05}  # steps of milliseconds have no meaningful ratio
    return {"scale_ratio": round(scale_ratio, 3), "time_ratio": time_ratio,
            "time_ratio_limit": round(TIME_SLACK * scale_ratio, 3),
            "rss_ratio": rss_ratio, "rss_ratio_limit": RSS_LIMIT,
            "steps_ratio": dict(sorted(steps.items(), key=lambda kv: -(kv[1] or 0.0)))}


def bench_scales(admin_url: str, scales: list[float], *, say: Callable[[str], None] = lambda _m: None,
                 **options: Any) -> dict[str, Any]:
    """`bench_migration` at each scale (same options), then the growth from the first to the last."""
    scales = sorted(scales)
    runs = {f"{s:g}": bench_migration(admin_url, scale=s, say=say, **options) for s in scales}
    first, last = runs[f"{scales[0]:g}"], runs[f"{scales[-1]:g}"]
    grew = growth(first, last)
    goals = {"time_linear": grew["time_ratio"] is not None and grew["time_ratio"] <= grew["time_ratio_limit"],
             "rss_flat": grew["rss_ratio"] is not None and grew["rss_ratio"] <= RSS_LIMIT,
             "max_stall_after_first_index_lt_100ms": all(r["goals"]["max_stall_after_first_index_lt_100ms"]
                                                         for r in runs.values()),
             "no_writer_errors": all(r["goals"]["no_writer_errors"] for r in runs.values())}
    return {"scales": scales, "runs": runs, "growth": grew, "goals": goals}
