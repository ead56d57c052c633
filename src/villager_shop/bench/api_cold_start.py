"""`bench api --cold-start S`: the service restarted with an empty cache (a deploy, or a Redis that
lost its data), and the whole locust mix arriving as soon as it says ready. How long until the
listing p95 is back under the goal, and the slowest request meanwhile.

The time goes by one-second windows from the first request: the service's own listing p95 (its
request histograms, read every second) and the independent probe's. "Reached" is the start of the
first window from which every later window meets the goal."""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path
from typing import Any

from villager_shop.api.services.monitoring import quantile
from villager_shop.bench.api_clients import ListingProbe
from villager_shop.bench.api_data import drop_redis_keys
from villager_shop.bench.api_locust import run_locust
from villager_shop.bench.api_metrics import service_histograms
from villager_shop.bench.api_server import Server

LISTING_ROUTE = "GET /api/products"
GOAL_P95_MS = 20.0
SLOW_MS = 500.0


class HistogramSampler:
    """The service's request histograms every `every_s` seconds, timestamped, in a thread."""

    def __init__(self, prom_dir: Path, every_s: float = 1.0) -> None:
        self.prom_dir, self.every_s = prom_dir, every_s
        self.points: list[tuple[float, dict[str, dict[float, float]]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="histogram sampler", daemon=True)
        self.started = 0.0

    def __enter__(self) -> HistogramSampler:
        self.started = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._sample()

    def _sample(self) -> None:
        self.points.append((time.perf_counter() - self.started, service_histograms(self.prom_dir)))

    def _run(self) -> None:
        self._sample()
        while not self._stop.wait(self.every_s):
            self._sample()


def service_windows(points: list[tuple[float, dict[str, dict[float, float]]]],
                    route: str = LISTING_ROUTE) -> list[dict[str, Any]]:
    """Each interval between two samples: its start (s), the route's request count, p95 (ms) and
    the requests over SLOW_MS (by the histogram's 0.5 s bound)."""
    out: list[dict[str, Any]] = []
    for (t0, before), (_t1, after) in itertools.pairwise(points):
        b, a = before.get(route, {}), after.get(route, {})
        delta = {le: n - b.get(le, 0.0) for le, n in a.items()}
        count = max(delta.values(), default=0.0)
        p95 = quantile(0.95, delta) if count > 0 else None
        within = delta.get(SLOW_MS / 1000, count)
        out.append({"t_s": round(t0, 1), "count": int(count),
                    "p95_ms": round(p95 * 1000, 2) if p95 is not None else None, "over_500ms": int(count - within)})
    return out


def probe_windows(samples: list[tuple[float, float]], width_s: float = 1.0) -> list[dict[str, Any]]:
    """The probe's (time, ms) samples by window of `width_s`: start, count, p95, max."""
    by: dict[int, list[float]] = {}
    for t, ms in samples:
        by.setdefault(int(t // width_s), []).append(ms)
    out = []
    for k in range(max(by, default=-1) + 1):
        lat = sorted(by.get(k, []))
        out.append({"t_s": round(k * width_s, 1), "count": len(lat),
                    "p95_ms": round(lat[min(len(lat) - 1, int(0.95 * len(lat)))], 2) if lat else None,
                    "max_ms": round(lat[-1], 2) if lat else None})
    return out


def reached_at(windows: list[dict[str, Any]], goal_ms: float = GOAL_P95_MS) -> float | None:
    """The start of the first window from which every window meets `goal_ms` (a window without
    requests meets it); None when the last one does not."""
    reached: float | None = None
    for w in windows:
        if w["p95_ms"] is not None and w["p95_ms"] >= goal_ms:
            reached = None
        elif reached is None:
            reached = float(w["t_s"])
    return reached


def run_cold_start(service: Server, *, redis_url: str, prefix: str, data_file: Path, users: int, window_s: int,
                   prom_dir: Path, probe_paths: list[str], workdir: Path, locust_nice: int = 0) -> dict[str, Any]:
    """Stop the service, drop its cache, start it again, and put the whole mix on it as soon as it
    says ready (all users within a second), for `window_s` seconds."""
    service.stop()
    drop_redis_keys(redis_url, prefix)
    t0 = time.perf_counter()
    service.start(settle_s=0)
    ready_s = time.perf_counter() - t0
    probe = ListingProbe(service.base, probe_paths, start_after_s=0)
    with HistogramSampler(prom_dir) as sampler, probe:
        mix = run_locust(service.base, data_file=data_file, users=users, spawn_rate=users, duration_s=window_s,
                         processes=1, workdir=workdir, reset_stats=False, tag="cold", nice=locust_nice)
    served = service_windows(sampler.points)
    probed = probe_windows(probe.samples)
    at_service, at_probe = reached_at(served), reached_at(probed)
    reached = None if at_service is None or at_probe is None else max(at_service, at_probe)
    slow = sum(w["over_500ms"] for w in served)
    max_ms = max(float(mix.get("max_ms", 0.0)), probe.result()["max_ms"])
    errors = int(mix.get("errors", 0)) + probe.errors
    return {
        "restart_to_ready_s": round(ready_s, 2),
        "window_s": window_s,
        "goals_reached_after_s": reached,
        "service_listing_p95_reached_after_s": at_service,
        "probe_listing_p95_reached_after_s": at_probe,
        "max_request_ms": round(max_ms, 1),
        "service_requests_over_500ms": slow,
        "errors": errors,
        "locust": {k: mix.get(k) for k in ("requests", "errors", "rps", "p50_ms", "p95_ms", "p99_ms", "max_ms",
                                           "listing_p95_ms", "failures")},
        "probe": probe.result(),
        "service_listing_windows": served,
        "probe_windows": probed,
        "goals": {
            "listing_p95_lt_20ms_within_10s": reached is not None and reached <= 10,
            "no_request_over_500ms": max_ms < SLOW_MS and slow == 0,
            "zero_errors": errors == 0,
        },
    }
