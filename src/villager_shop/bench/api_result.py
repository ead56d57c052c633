"""What `bench api` concludes from its scenarios: the cached listing against the ceiling, and the
goals it is held to."""

from __future__ import annotations

import statistics
from typing import Any


def listing_p95_ms(scenarios: dict[str, Any]) -> dict[str, float | None]:
    """The listing p95 under the mix as the goal reads it: the service's own (its request
    histogram) and the independent probe's. Locust's own figure is reported beside them, not held
    to the goal: it is CPU-bound on the same cores and adds its own queueing to every request."""
    mix = scenarios["locust_mix"]
    service = (mix.get("service_latency") or {}).get("GET /api/products") or {}
    probe = scenarios.get("listing_probe") or {}
    return {"service": service.get("p95_ms"), "probe": probe.get("p95_ms"), "locust": mix.get("listing_p95_ms")}


def verdict(scenarios: dict[str, Any], users: int) -> dict[str, Any]:
    cached = scenarios["cached_listing"]
    ratios = cached.get("round_ratios") or []
    ratio = round(statistics.median(ratios), 3) if ratios else None
    errors = sum(int(s.get("errors", 0)) for s in scenarios.values() if "skipped" not in s)
    p95 = listing_p95_ms(scenarios)
    return {
        "ratio_cached_vs_ceiling": ratio,
        "listing_p95_ms": p95,
        "goals": {
            f"listing_p95_lt_20ms_at_{users}_users": all(p95[k] is not None and float(p95[k] or 0) < 20
                                                         for k in ("service", "probe")),
            "zero_errors": errors == 0,
            "cached_ge_half_ceiling": ratio is not None and ratio >= 0.5,
        },
    }
