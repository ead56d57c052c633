"""Prometheus counters of the shop service.

With several uvicorn workers, set PROMETHEUS_MULTIPROC_DIR (an empty folder, before the workers
start; `villager-shop serve` does it): every process then writes its values to files there and
`registry()` sums them. Without it, the default in-process registry is used.
"""

from __future__ import annotations

import os

from prometheus_client import REGISTRY, CollectorRegistry, Counter, generate_latest, multiprocess
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CACHE_HITS = Counter("villager_cache_hits_total", "cache reads answered by Redis", ["scope"])
CACHE_MISSES = Counter("villager_cache_misses_total", "cache reads that had to be rebuilt", ["scope"])
CACHE_ERRORS = Counter("villager_cache_errors_total", "Redis errors and timeouts (answered from PostgreSQL)",
                       ["operation"])
CACHE_BYPASSES = Counter("villager_cache_bypassed_total",
                         "cache reads that skipped Redis (circuit breaker open or cache disabled)", ["scope"])
CACHE_INVALIDATIONS = Counter("villager_cache_invalidations_total", "catalog version bumps after a write",
                              ["scope"])
DB_QUERIES = Counter("villager_db_queries_total", "hot-path queries sent to PostgreSQL", ["query"])


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def registry() -> CollectorRegistry:
    """The registry to expose: all workers' values in multiprocess mode, else this process's."""
    if multiprocess_dir():
        reg = CollectorRegistry()
        multiprocess.MultiProcessCollector(reg)
        return reg
    return REGISTRY


def render() -> tuple[bytes, str]:
    """The text exposition format and its content type (for a /metrics endpoint)."""
    return generate_latest(registry()), CONTENT_TYPE_LATEST


def mark_process_dead(pid: int | None = None) -> None:
    """Tell the multiprocess collector a worker is gone (call on worker shutdown)."""
    if multiprocess_dir():
        multiprocess.mark_process_dead(pid or os.getpid())


def sample(name: str, labels: dict[str, str] | None = None) -> float:
    """The current value of one sample (0 when never incremented); for tests and health output."""
    value = registry().get_sample_value(name, labels or {})
    return float(value or 0.0)
