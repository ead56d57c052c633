"""What `bench api` concludes from its scenarios: the cached listing against the ceiling, and the
goals it is held to."""

from __future__ import annotations

import statistics
from typing import Any


def verdict(scenarios: dict[str, Any], users: int) -> dict[str, Any]:
    cached, mix = scenarios["cached_listing"], scenarios["locust_mix"]
    ratios = cached.get("round_ratios") or []
    ratio = round(statistics.median(ratios), 3) if ratios else None
    errors = sum(int(s.get("errors", 0)) for s in scenarios.values() if "skipped" not in s)
    return {
        "ratio_cached_vs_ceiling": ratio,
        "goals": {
            f"listing_p95_lt_20ms_at_{users}_users": mix["listing_p95_ms"] < 20,
            "zero_errors": errors == 0,
            "cached_ge_half_ceiling": ratio is not None and ratio >= 0.5,
        },
    }
