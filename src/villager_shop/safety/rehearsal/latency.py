"""What the live writer felt while the migration ran: its slowest writes and the steps running then,
its latency over time, and the longest lock waits and holds the application could have met."""

from __future__ import annotations

from typing import Any

from villager_shop.safety.report.model import StepResult

LATENCY_BUCKETS = 240


def locks(steps: list[StepResult], backfill: list[dict[str, Any]], writer: dict[str, Any]) -> dict[str, Any]:
    """The longest waits and holds the application could have felt."""
    worst = max(backfill, key=lambda b: b["max_batch_ms"], default=None)
    brief = [s for s in steps if s.phase in ("expand", "sync") and s.seconds is not None]
    longest = max(brief, key=lambda s: s.seconds or 0.0, default=None)
    return {
        "max_backfill_batch_ms": worst["max_batch_ms"] if worst else None,
        "max_backfill_batch_table": worst["table"] if worst else None,
        "ddl_lock_retries": sum(s.lock_retries for s in steps),
        "ddl_retried_steps": [{"step": s.name, "attempts": s.attempts, "lock_retries": s.lock_retries}
                              for s in steps if s.lock_retries],
        "longest_brief_lock_step": longest.name if longest else None,
        "longest_brief_lock_step_ms": round((longest.seconds or 0.0) * 1000, 1) if longest else None,
        "writer_max_ms": writer.get("writer_max_ms"),
        "writer_p99_ms": writer.get("writer_p99_ms"),
    }


def slowest_writes(slow: list[tuple[float, float, str]], steps: list[StepResult], origin: float,
                   top: int = 10) -> list[dict[str, Any]]:
    """The slowest writes, each with the migration step(s) running while it waited."""
    out = []
    for t, ms, op in sorted(slow, key=lambda x: -x[1])[:top]:
        during = [s.name for s in steps if s.start is not None and s.end is not None
                  and s.start <= t + ms / 1000 and t <= s.end]
        out.append({"t": round(t - origin, 3), "ms": round(ms, 1), "op": op, "during": during})
    return out


def latency_series(samples: list[tuple[float, float, str]], origin: float,
                   buckets: int = LATENCY_BUCKETS) -> list[dict[str, float]]:
    """Writer latency over time, bucketed: seconds since `origin`, writes, p50 and max per bucket."""
    if not samples:
        return []
    ordered = sorted(samples)
    first, last = ordered[0][0], ordered[-1][0]
    width = max((last - first) / buckets, 0.05)
    groups: dict[int, list[float]] = {}
    for t, ms, _op in ordered:
        groups.setdefault(min(buckets - 1, int((t - first) / width)), []).append(ms)
    out = []
    for i in sorted(groups):
        lat = sorted(groups[i])
        out.append({"t": round(first - origin + (i + 0.5) * width, 3), "n": len(lat),
                    "p50_ms": round(lat[len(lat) // 2], 2), "max_ms": round(lat[-1], 2)})
    return out
