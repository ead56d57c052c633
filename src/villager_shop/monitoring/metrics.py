"""Prometheus metrics of the shop service.

With several uvicorn workers, set PROMETHEUS_MULTIPROC_DIR (an empty folder, before the workers
start; `villager-shop serve` does it): every process then writes its values to files there and
`registry()` sums them. Without it, the default in-process registry is used.
"""

from __future__ import annotations

import os
from typing import Final

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CACHE_HITS = Counter("villager_cache_hits_total", "cache reads answered by Redis", ["scope"])
CACHE_MISSES = Counter("villager_cache_misses_total", "cache reads that had to be rebuilt", ["scope"])
CACHE_ERRORS = Counter("villager_cache_errors_total", "Redis errors and timeouts (answered from PostgreSQL)",
                       ["operation"])
CACHE_BYPASSES = Counter("villager_cache_bypassed_total",
                         "cache reads that skipped Redis (circuit breaker open or cache disabled)", ["scope"])
CACHE_INVALIDATIONS = Counter("villager_cache_invalidations_total", "catalog version bumps after a write",
                              ["scope"])
CACHE_LEASE_WAITS = Counter("villager_cache_lease_waits_total",
                            "writes that waited for the other workers to drop their copies, by how the wait ended:"
                            " acked (all acknowledged) or lease_ended (one's lease ran out first)", ["outcome"])
CACHE_LEASE_WAIT = Histogram("villager_cache_lease_wait_seconds",
                             "how long a write waited for the other workers to drop their copies",
                             buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5))
DB_QUERIES = Counter("villager_db_queries_total", "hot-path queries sent to PostgreSQL", ["query"])
CATALOG_READS = Counter("villager_catalog_reads_total",
                        "catalog reads sent to PostgreSQL, by where they were answered: replica (a standby recent"
                        " enough), primary (none was), primary_fallback (a standby failed the read)", ["target"])

# HTTP (monitoring.middleware): `route` is the route template (`/api/products/{product_id}`), never the
# raw path; requests that match no route are counted under `<unmatched>`.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1,
                   0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
HTTP_REQUESTS = Counter("villager_http_requests_total", "HTTP requests answered", ["method", "route", "status"])
HTTP_LATENCY = Histogram("villager_http_request_duration_seconds", "time to answer an HTTP request",
                         ["method", "route"], buckets=LATENCY_BUCKETS)

EVENT_LOOP_LAG = Histogram("villager_event_loop_lag_seconds",
                           "how late a worker's event loop woke a task that was due (monitoring.event_loop)",
                           buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5))

# Business (api.services.orders), after the commit; an idempotent replay is not counted again.
ORDERS = Counter("villager_orders_total", "orders placed (created) and cancelled", ["event"])
REVENUE = Counter("villager_order_revenue_total", "sum of order totals (currency units) placed / cancelled",
                  ["event"])

# Pool of each worker (summed over live workers).
DB_POOL_SIZE = Gauge("villager_db_pool_size", "connections open in the service's pools",
                     multiprocess_mode="livesum")
DB_POOL_MAX = Gauge("villager_db_pool_max", "connections the service's pools may open",
                    multiprocess_mode="livesum")
DB_POOL_AVAILABLE = Gauge("villager_db_pool_available", "idle connections in the service's pools",
                          multiprocess_mode="livesum")
DB_POOL_WAITING = Gauge("villager_db_pool_waiting", "requests waiting for a pool connection",
                        multiprocess_mode="livesum")

# Database-side figures from the views db_performance_summary / slow_queries, sampled every few
# seconds by each worker (api/services/monitoring.py); the most recent sample of any live worker wins.
_RECENT: Final = "livemostrecent"
DB_CONNECTIONS = Gauge("villager_db_connections", "client connections to the server (db_performance_summary)",
                       multiprocess_mode=_RECENT)
DB_CONNECTIONS_THRESHOLD = Gauge("villager_db_connections_threshold", "80 % of max_connections",
                                 multiprocess_mode=_RECENT)
DB_CACHE_HIT_RATIO = Gauge("villager_db_cache_hit_ratio",
                           "buffer cache hit ratio of the current database (0-1; guide threshold 0.90)",
                           multiprocess_mode=_RECENT)
DB_METRIC_CRITICAL = Gauge("villager_db_metric_critical", "1 when db_performance_summary says CRITICAL",
                           ["metric"], multiprocess_mode=_RECENT)
DB_SLOW_STATEMENTS = Gauge("villager_db_slow_statements", "statements of this database with mean time > 100 ms",
                           multiprocess_mode=_RECENT)
DB_SLOWEST_MEAN = Gauge("villager_db_slow_statement_max_mean_seconds", "mean time of the slowest statement",
                        multiprocess_mode=_RECENT)
DB_SLOW_AVAILABLE = Gauge("villager_db_slow_statements_available", "1 when pg_stat_statements is loaded",
                          multiprocess_mode=_RECENT)

# Migration progress (villager_migration state, via migration.status).
MIGRATION_PHASE = Gauge("villager_migration_phase", "1 for the migration's current phase", ["phase"],
                        multiprocess_mode=_RECENT)
MIGRATION_STEPS_DONE = Gauge("villager_migration_steps_done", "steps done", multiprocess_mode=_RECENT)
MIGRATION_STEPS_TOTAL = Gauge("villager_migration_steps_total", "steps of the plan", multiprocess_mode=_RECENT)
MIGRATION_ROWS_DONE = Gauge("villager_migration_backfill_rows_done", "rows backfilled", ["step", "table"],
                            multiprocess_mode=_RECENT)
MIGRATION_ROWS_TOTAL = Gauge("villager_migration_backfill_rows_total", "rows to backfill", ["step", "table"],
                             multiprocess_mode=_RECENT)
MIGRATION_ROWS_RATE = Gauge("villager_migration_backfill_rows_per_second", "backfill rate", ["step", "table"],
                            multiprocess_mode=_RECENT)
MIGRATION_PAUSED = Gauge("villager_migration_paused", "1 while an operator has paused the migration",
                         multiprocess_mode=_RECENT)
MIGRATION_THROTTLED = Gauge("villager_migration_throttled", "1 for the signal holding the backfill now (operator_pause,"
                            " replica_lag_ms, replica_lag_mb, wal_mb_per_s, archive_pending_segments, autovacuum,"
                            " standby_gone_s)", ["signal"], multiprocess_mode=_RECENT)
MIGRATION_THROTTLE_VALUE = Gauge("villager_migration_throttle_value", "the holding signal's value", ["signal"],
                                 multiprocess_mode=_RECENT)
MIGRATION_THROTTLE_LIMIT = Gauge("villager_migration_throttle_limit", "the holding signal's limit", ["signal"],
                                 multiprocess_mode=_RECENT)
MIGRATION_THROTTLED_SECONDS = Gauge("villager_migration_throttled_seconds", "time the run has been held in all",
                                    multiprocess_mode=_RECENT)
MIGRATION_REPLICA_LAG_MS = Gauge("villager_migration_replica_lag_ms", "each standby's replay lag as the throttle"
                                 " measured it", ["standby"], multiprocess_mode=_RECENT)
MIGRATION_REPLICA_LAG_BYTES = Gauge("villager_migration_replica_lag_bytes", "each standby's replay lag in bytes",
                                    ["standby"], multiprocess_mode=_RECENT)
THROTTLE_SIGNALS = ("operator_pause", "replica_lag_ms", "replica_lag_mb", "wal_mb_per_s", "archive_pending_segments",
                    "autovacuum", "standby_gone_s")

# The sampler itself.
MONITOR_SAMPLES = Counter("villager_monitoring_samples_total", "samples of the database views and migration state")
MONITOR_ERRORS = Counter("villager_monitoring_sample_errors_total", "samples that failed")
MONITOR_LAST = Gauge("villager_monitoring_last_sample_timestamp_seconds", "unix time of the last good sample",
                     multiprocess_mode="livemax")


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


def samples(reg: CollectorRegistry | None = None) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the registry by (name, sorted labels): for the dashboard's history."""
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in (reg or registry()).collect():
        for s in family.samples:
            labels = tuple(sorted((k, v) for k, v in s.labels.items() if k != "pid"))
            out[(s.name, labels)] = out.get((s.name, labels), 0.0) + float(s.value)
    return out


def sample(name: str, labels: dict[str, str] | None = None) -> float:
    """The current value of one sample (0 when never incremented); for tests and health output."""
    value = registry().get_sample_value(name, labels or {})
    return float(value or 0.0)
