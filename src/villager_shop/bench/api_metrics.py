"""The service's own figures, read from its prometheus multiprocess files: cache and database
counters, and request and event-loop timings, between two moments of a run."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from villager_shop.api.services.monitoring import quantile


class Snapshot:
    """The service's counters and histograms `after_s` into the block (at the end of the ramp);
    taken when the block ends if it ends sooner."""

    def __init__(self, prom_dir: Path, after_s: float) -> None:
        self.prom_dir = prom_dir
        self.counters: dict[str, float] = {}
        self.timed: dict[str, dict[float, float]] = {}
        self._taken = threading.Event()
        self._timer = threading.Timer(after_s, self._take)

    def _take(self) -> None:
        if not self._taken.is_set():
            self.counters, self.timed = cache_counters(self.prom_dir), service_histograms(self.prom_dir)
            self._taken.set()

    def __enter__(self) -> Snapshot:
        self._timer.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._timer.cancel()
        self._timer.join()
        self._take()


def cache_counters(prom_dir: Path) -> dict[str, float]:
    """The cache's, the database's and the catalog reads' counters, summed over the workers."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, str(prom_dir))
    out: dict[str, float] = {}
    for family in registry.collect():
        for sample in family.samples:
            if sample.name in ("villager_cache_hits_total", "villager_cache_misses_total",
                               "villager_cache_bypassed_total", "villager_db_queries_total",
                               "villager_cache_lease_wait_seconds_count"):
                out[sample.name] = out.get(sample.name, 0.0) + sample.value
            elif sample.name == "villager_cache_lease_wait_seconds_sum":  # in ms: the delta is an int
                out["villager_cache_lease_wait_ms_sum"] = out.get("villager_cache_lease_wait_ms_sum", 0.0) \
                    + sample.value * 1000
            elif sample.name == "villager_catalog_reads_total":
                name = f"villager_catalog_reads_{sample.labels.get('target', '')}_total"
                out[name] = out.get(name, 0.0) + sample.value
            elif sample.name in ("villager_cache_errors_total", "villager_cache_lease_waits_total"):
                label = sample.labels.get("operation") or sample.labels.get("outcome", "")
                name = f"{sample.name.removesuffix('_total')}_{label}_total"
                out[name] = out.get(name, 0.0) + sample.value
    return out


def service_histograms(prom_dir: Path) -> dict[str, dict[float, float]]:
    """The service's own timings: "METHOD route" (request time, from the handler's start to the
    answer's last byte) and "event loop lag" -> {bucket upper bound (s): cumulative count}."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, str(prom_dir))
    out: dict[str, dict[float, float]] = {}
    for family in registry.collect():
        for sample in family.samples:
            if sample.name == "villager_http_request_duration_seconds_bucket":
                name = f"{sample.labels['method']} {sample.labels['route']}"
            elif sample.name == "villager_event_loop_lag_seconds_bucket":
                name = "event loop lag"
            else:
                continue
            buckets = out.setdefault(name, {})
            le = float(sample.labels["le"])
            buckets[le] = buckets.get(le, 0.0) + sample.value
    return out


def service_latency(before: dict[str, dict[float, float]],
                    after: dict[str, dict[float, float]]) -> dict[str, dict[str, Any]]:
    """`service_histograms` between two snapshots: count and p50/p95/p99 in ms of each (linear
    within a bucket). A client's figure minus these is the socket, the wait for the event loop
    (its lag is reported too) and the client itself."""
    out: dict[str, dict[str, Any]] = {}
    for name, buckets in after.items():
        delta = {le: n - before.get(name, {}).get(le, 0.0) for le, n in buckets.items()}
        count = max(delta.values(), default=0.0)
        if count <= 0:
            continue
        ms = {f"p{int(q * 100)}_ms": round((quantile(q, delta) or 0.0) * 1000, 2) for q in (0.5, 0.95, 0.99)}
        out[name] = {"count": int(count), **ms}
    return out


def counter_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    """`cache_counters` between two snapshots, named without prefix and suffix, with the hit ratio
    and the mean lease wait."""
    d: dict[str, Any] = {k.removeprefix("villager_").removesuffix("_total"): int(after.get(k, 0) - before.get(k, 0))
         for k in after}
    looked = d.get("cache_hits", 0) + d.get("cache_misses", 0)
    d["cache_hit_ratio"] = round(d.get("cache_hits", 0) / looked, 3) if looked else None
    waits = d.pop("cache_lease_wait_seconds_count", 0)
    waited_ms = d.pop("cache_lease_wait_ms_sum", 0)
    if waits:
        d["cache_lease_wait_mean_ms"] = round(waited_ms / waits, 1)
    return d
