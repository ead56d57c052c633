"""The monitoring sampler of one worker: database-side figures, migration progress and business
aggregates, read at most every `interval_s` (one sampler per process, cached), plus an in-memory
history (ring buffer, the last hour) for the dashboard.

* `Sampler.snapshot()` answers the cached snapshot while it is younger than `interval_s`; otherwise
  one caller (single-flight lock) refreshes it in a thread on a dedicated connection, in one
  transaction (short statement_timeout, application_name `villager-shop monitor`): the views
  `db_performance_summary` and `slow_queries`, `migration.status.status()`, and every
  `orders_ttl_s` two aggregates over the recent orders (through the per-shop index
  `idx_orders_shop_created_desc`). Scrapes, probes and dashboard requests never run a query of
  their own.
* `Monitor.run()` (started in the app's lifespan) refreshes the snapshot, sets the pool gauges and
  appends a point to the history every `interval_s`: connections, PostgreSQL and Redis cache hit
  ratios, and the p95 latency, error rate and request rate of the last interval, computed from the
  (multiprocess-summed) Prometheus counters, so every worker's history shows all workers' traffic.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import math
import time
from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from villager_shop.core.db import connect
from villager_shop.monitoring import metrics as m

log = logging.getLogger("villager_shop.monitoring")

APP_NAME = "villager-shop monitor"
HISTORY_S = 3600
TOP_SLOW = 10
# Requests of these routes (probes, the dashboard polling itself) do not count in the API's latency
# and error rate shown on the dashboard; Prometheus still has them, labelled by route.
OWN_ROUTES = ("/metrics", "/dashboard", "/api/monitoring", "/health", "/api/health")

_VIEWS = """
SELECT to_regclass('public.db_performance_summary') IS NOT NULL AS summary,
       to_regclass('public.slow_queries') IS NOT NULL AS slow,
       to_regclass('public.idx_orders_shop_created_desc') IS NOT NULL AS orders_index,
       current_setting('max_connections')::int AS max_connections
"""
_SUMMARY = "SELECT metric, value, threshold, status FROM public.db_performance_summary"
_SLOW = f"""
SELECT query, calls, total_exec_time, mean_exec_time, max_exec_time, count(*) OVER () AS n
  FROM public.slow_queries
 LIMIT {TOP_SLOW}
"""
# Orders per hour over the last 7 days (the per-day figures are sums of these), through the
# (shop_id, created_at DESC) index: one short range scan per shop, no scan of the whole table.
_ORDERS_INDEXED = """
SELECT date_trunc('hour', o.created_at) AS hour, count(*) AS orders,
       coalesce(sum(o.total) FILTER (WHERE o.status <> 'cancelled'), 0) AS revenue,
       count(*) FILTER (WHERE o.created_at >= now() - interval '1 hour') AS last_hour
  FROM public.shops s
 CROSS JOIN LATERAL (SELECT x.created_at, x.total, x.status FROM public.orders x
                      WHERE x.shop_id = s.id AND x.created_at >= %(since)s) o
 GROUP BY 1 ORDER BY 1
"""
_ORDERS_PLAIN = """
SELECT date_trunc('hour', o.created_at) AS hour, count(*) AS orders,
       coalesce(sum(o.total) FILTER (WHERE o.status <> 'cancelled'), 0) AS revenue,
       count(*) FILTER (WHERE o.created_at >= now() - interval '1 hour') AS last_hour
  FROM public.orders o WHERE o.created_at >= %(since)s
 GROUP BY 1 ORDER BY 1
"""


def _num(v: Any) -> Any:
    return float(v) if isinstance(v, Decimal) else v


@dataclass
class Snapshot:
    seq: int
    at: float  # unix time of the sample
    db: dict[str, Any] = field(default_factory=dict)
    slow: dict[str, Any] = field(default_factory=dict)
    migration: dict[str, Any] = field(default_factory=dict)
    orders: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


class Sampler:
    def __init__(self, database_url: str, *, interval_s: float = 5.0, orders_ttl_s: float = 60.0,
                 statement_timeout_ms: int = 2000, connect_timeout_s: int = 3) -> None:
        self.database_url = database_url
        self.interval_s = interval_s
        self.orders_ttl_s = orders_ttl_s
        self.statement_timeout_ms = statement_timeout_ms
        self.connect_timeout_s = connect_timeout_s
        self._conn: psycopg.Connection[Any] | None = None
        self._lock = asyncio.Lock()
        self._snapshot: Snapshot | None = None
        self._taken = -math.inf
        self._orders: dict[str, Any] = {}
        self._orders_at = -math.inf
        self._seq = 0

    def fresh(self) -> Snapshot | None:
        if self._snapshot is not None and time.monotonic() - self._taken < self.interval_s:
            return self._snapshot
        return None

    async def snapshot(self) -> Snapshot:
        snap = self.fresh()
        if snap is not None:
            return snap
        async with self._lock:
            snap = self.fresh()
            if snap is not None:
                return snap
            self._seq += 1
            try:
                snap = await asyncio.to_thread(self._collect, self._seq)
                m.MONITOR_SAMPLES.inc()
                m.MONITOR_LAST.set(snap.at)
                _publish(snap)
            except Exception as exc:
                m.MONITOR_ERRORS.inc()
                log.warning("monitoring sample failed: %s", exc)
                await asyncio.to_thread(self._drop_connection)
                old = self._snapshot
                snap = Snapshot(self._seq, time.time(), error=f"{type(exc).__name__}: {exc}".strip()[:300])
                if old is not None:  # keep the last known figures, marked stale by the error
                    snap.db, snap.slow, snap.migration, snap.orders = old.db, old.slow, old.migration, old.orders
            # a failure is cached too: a database in trouble is not hammered by every scrape
            self._snapshot, self._taken = snap, time.monotonic()
            return snap

    async def close(self) -> None:
        async with self._lock:
            await asyncio.to_thread(self._drop_connection)

    # --- in the worker thread, under the lock -------------------------------------------------
    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            # core.db.connect: no named prepared statement when the URL is a transaction pooler
            self._conn = connect(self.database_url, autocommit=True, connect_timeout=self.connect_timeout_s,
                                 application_name=APP_NAME)
        return self._conn

    def _settings(self) -> bytes:
        """The sample's settings, local to its transaction: the same on the server itself and
        through a transaction pooler, where a session setting would reach other clients (one
        round trip per sample, every few seconds)."""
        return (f"SELECT set_config('statement_timeout', '{int(self.statement_timeout_ms)}', true),"
                " set_config('lock_timeout', '500', true), set_config('TimeZone', 'UTC', true)").encode()

    def _drop_connection(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None

    def _collect(self, seq: int) -> Snapshot:
        conn = self._connection()
        with conn.transaction():
            conn.execute(self._settings())
            return self._collect_in(conn, seq)

    def _collect_in(self, conn: psycopg.Connection[Any], seq: int) -> Snapshot:
        from villager_shop.migration.status import status

        snap = Snapshot(seq, time.time())
        with conn.cursor(row_factory=dict_row) as cur:
            present = cur.execute(_VIEWS).fetchone()
            assert present is not None
            m.DB_QUERIES.labels("monitoring_views").inc()
            db: dict[str, Any] = {"max_connections": present["max_connections"]}
            if present["summary"]:
                for r in cur.execute(_SUMMARY).fetchall():
                    db[r["metric"]] = {"value": _num(r["value"]), "threshold": _num(r["threshold"]),
                                       "status": r["status"]}
            snap.db = db
            slow: dict[str, Any] = {"available": False, "count": 0, "top": [], "note": None}
            if present["slow"]:
                rows = cur.execute(_SLOW).fetchall()
                if rows and rows[0]["calls"] is None:  # the view explains why it has no data
                    slow["note"] = rows[0]["query"]
                else:
                    slow["available"] = True
                    slow["count"] = int(rows[0]["n"]) if rows else 0
                    slow["top"] = [{"query": r["query"][:500], "calls": int(r["calls"]),
                                    "mean_ms": round(r["mean_exec_time"], 2),
                                    "max_ms": round(r["max_exec_time"], 2),
                                    "total_ms": round(r["total_exec_time"], 1)} for r in rows]
            else:
                slow["note"] = "view slow_queries not installed (run the migration)"
            snap.slow = slow
        st = status(conn)
        snap.migration = {k: st.get(k) for k in ("phase", "running", "steps_done", "steps_total", "backfill",
                                                  "paused", "throttle")}
        if time.monotonic() - self._orders_at >= self.orders_ttl_s:
            self._orders = self._collect_orders(conn, bool(present["orders_index"]))
            self._orders_at = time.monotonic()
        snap.orders = self._orders
        return snap

    def _collect_orders(self, conn: psycopg.Connection[Any], indexed: bool) -> dict[str, Any]:
        now = dt.datetime.now(dt.UTC)
        today = now.replace(hour=0, minute=0, second=0, microsecond=0)
        since = today - dt.timedelta(days=6)
        with conn.cursor(row_factory=dict_row) as cur:
            m.DB_QUERIES.labels("monitoring_orders").inc()
            rows = cur.execute(_ORDERS_INDEXED if indexed else _ORDERS_PLAIN, {"since": since}).fetchall()
        hours = {r["hour"]: r for r in rows}
        first_hour = now.replace(minute=0, second=0, microsecond=0) - dt.timedelta(hours=23)
        per_hour = []
        for i in range(24):
            h = first_hour + dt.timedelta(hours=i)
            r = hours.get(h)
            per_hour.append({"t": int(h.timestamp()), "orders": int(r["orders"]) if r else 0,
                             "revenue": float(r["revenue"]) if r else 0.0})
        per_day = []
        for i in range(7):
            d = since + dt.timedelta(days=i)
            day_rows = [r for h, r in hours.items() if d <= h < d + dt.timedelta(days=1)]
            per_day.append({"t": int(d.timestamp()), "orders": sum(int(r["orders"]) for r in day_rows),
                            "revenue": round(sum(float(r["revenue"]) for r in day_rows), 2)})
        return {
            "computed_at": now.isoformat().replace("+00:00", "Z"),
            "indexed": indexed,
            "last_hour": sum(int(r["last_hour"]) for r in rows),
            "revenue_today": per_day[-1]["revenue"],
            "orders_today": per_day[-1]["orders"],
            "per_hour": per_hour,
            "per_day": per_day,
        }


def _publish(snap: Snapshot) -> None:
    """Set the gauges of the database and migration from a good snapshot."""
    conn = snap.db.get("connection_count")
    if conn:
        m.DB_CONNECTIONS.set(conn["value"])
        m.DB_CONNECTIONS_THRESHOLD.set(conn["threshold"])
    hit = snap.db.get("cache_hit_ratio")
    if hit and hit["value"] is not None:
        m.DB_CACHE_HIT_RATIO.set(hit["value"] / 100.0)
    for metric in ("connection_count", "cache_hit_ratio"):
        row = snap.db.get(metric)
        m.DB_METRIC_CRITICAL.labels(metric).set(1 if row and row["status"] == "CRITICAL" else 0)
    m.DB_SLOW_AVAILABLE.set(1 if snap.slow.get("available") else 0)
    m.DB_SLOW_STATEMENTS.set(snap.slow.get("count", 0))
    top = snap.slow.get("top") or []
    m.DB_SLOWEST_MEAN.set(top[0]["mean_ms"] / 1000.0 if top else 0)
    from villager_shop.migration.state import PHASES

    phase = snap.migration.get("phase")
    for p in PHASES:
        m.MIGRATION_PHASE.labels(p).set(1 if p == phase else 0)
    m.MIGRATION_STEPS_DONE.set(snap.migration.get("steps_done", 0))
    m.MIGRATION_STEPS_TOTAL.set(snap.migration.get("steps_total", 0))
    for b in snap.migration.get("backfill", []):
        labels = (b["step"], b["table"])
        m.MIGRATION_ROWS_DONE.labels(*labels).set(b["rows_done"])
        m.MIGRATION_ROWS_TOTAL.labels(*labels).set(b["rows_total"])
        m.MIGRATION_ROWS_RATE.labels(*labels).set(0 if b["finished"] else b["rows_per_s"])
    set_throttle_gauges(snap.migration.get("paused"), snap.migration.get("throttle") or {})


def set_throttle_gauges(paused: Any, throttle: dict[str, Any]) -> None:
    """What holds the migration now (`migrate status` shows the same)."""
    m.MIGRATION_PAUSED.set(1 if paused else 0)
    holding = throttle.get("signal") if throttle.get("throttled") else None
    for signal in m.THROTTLE_SIGNALS:
        m.MIGRATION_THROTTLED.labels(signal).set(1 if signal == holding else 0)
        m.MIGRATION_THROTTLE_VALUE.labels(signal).set(float(throttle.get("value") or 0) if signal == holding else 0)
        m.MIGRATION_THROTTLE_LIMIT.labels(signal).set(float(throttle.get("limit") or 0) if signal == holding else 0)
    m.MIGRATION_THROTTLED_SECONDS.set(float(throttle.get("total_throttled_s") or 0))
    for sb in throttle.get("standbys") or []:
        m.MIGRATION_REPLICA_LAG_MS.labels(sb["name"]).set(sb["lag_ms"])
        m.MIGRATION_REPLICA_LAG_BYTES.labels(sb["name"]).set(sb["lag_bytes"])


def update_pool_gauges(pool: AsyncConnectionPool[Any]) -> dict[str, int]:
    stats = pool.get_stats()
    out = {"size": stats.get("pool_size", 0), "available": stats.get("pool_available", 0),
           "waiting": stats.get("requests_waiting", 0), "max": stats.get("pool_max", 0)}
    m.DB_POOL_SIZE.set(out["size"])
    m.DB_POOL_AVAILABLE.set(out["available"])
    m.DB_POOL_WAITING.set(out["waiting"])
    m.DB_POOL_MAX.set(out["max"])
    return out


# --- history -------------------------------------------------------------------------------------

@dataclass
class Counters:
    """The traffic counters the history needs, summed over workers and routes."""

    at: float
    requests: float = 0.0
    errors: float = 0.0  # 5xx
    buckets: dict[float, float] = field(default_factory=dict)  # le -> cumulative count
    cache_hits: float = 0.0
    cache_misses: float = 0.0


def _own(route: str) -> bool:
    return route.startswith(OWN_ROUTES)


def read_counters() -> Counters:
    c = Counters(time.time())
    for (name, labels), value in m.samples().items():
        lab = dict(labels)
        if name == "villager_http_requests_total":
            if _own(lab.get("route", "")):
                continue
            c.requests += value
            if lab.get("status", "").startswith("5"):
                c.errors += value
        elif name == "villager_http_request_duration_seconds_bucket":
            if _own(lab.get("route", "")):
                continue
            le = float(lab["le"])
            c.buckets[le] = c.buckets.get(le, 0.0) + value
        elif name == "villager_cache_hits_total":
            c.cache_hits += value
        elif name == "villager_cache_misses_total":
            c.cache_misses += value
    return c


def quantile(q: float, buckets: dict[float, float]) -> float | None:
    """Prometheus' histogram_quantile on cumulative bucket counts (linear inside a bucket)."""
    items = sorted(buckets.items())
    if not items or items[-1][1] <= 0:
        return None
    total = items[-1][1]
    rank = q * total
    prev_le, prev_count = 0.0, 0.0
    for le, count in items:
        if count >= rank:
            if math.isinf(le):
                return prev_le
            if count == prev_count:
                return le
            return prev_le + (le - prev_le) * (rank - prev_count) / (count - prev_count)
        prev_le, prev_count = le, count
    return prev_le


def _ratio(num: float, den: float) -> float | None:
    return num / den if den > 0 else None


class History:
    def __init__(self, interval_s: float, horizon_s: float = HISTORY_S) -> None:
        self.points: deque[dict[str, Any]] = deque(maxlen=max(2, int(horizon_s / interval_s) + 1))
        self._last: Counters | None = None

    def record(self, snap: Snapshot, now: Counters) -> dict[str, Any]:
        prev = self._last
        self._last = now
        point: dict[str, Any] = {"t": round(now.at, 3), "seq": snap.seq}
        conn = snap.db.get("connection_count") or {}
        hit = snap.db.get("cache_hit_ratio") or {}
        point["connections"] = conn.get("value")
        point["connections_threshold"] = conn.get("threshold")
        point["pg_hit_pct"] = hit.get("value")
        p95 = err = rps = redis_hit = None
        if prev is not None:
            dt_s = max(now.at - prev.at, 1e-6)
            req = now.requests - prev.requests
            rps = round(req / dt_s, 2)
            if req > 0:
                err = round(100.0 * (now.errors - prev.errors) / req, 3)
                delta = {le: now.buckets.get(le, 0.0) - prev.buckets.get(le, 0.0) for le in now.buckets}
                q = quantile(0.95, delta)
                p95 = round(q * 1000.0, 2) if q is not None else None
            hits, misses = now.cache_hits - prev.cache_hits, now.cache_misses - prev.cache_misses
            r = _ratio(hits, hits + misses)
            redis_hit = round(100.0 * r, 2) if r is not None else None
        point.update(p95_ms=p95, error_pct=err, rps=rps, redis_hit_pct=redis_hit)
        self.points.append(point)
        return point

    def since(self, t: float | None = None) -> list[dict[str, Any]]:
        return [p for p in self.points if t is None or p["t"] > t]


class Monitor:
    """The sampler, the history and the pool gauges of one worker; `run()` is the background task."""

    def __init__(self, sampler: Sampler, pool: AsyncConnectionPool[Any]) -> None:
        self.sampler = sampler
        self.pool = pool
        self.history = History(sampler.interval_s)
        self.started = time.time()

    async def tick(self) -> dict[str, Any]:
        snap = await self.sampler.snapshot()
        update_pool_gauges(self.pool)
        counters = await asyncio.to_thread(read_counters)
        return self.history.record(snap, counters)

    async def run(self) -> None:
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("monitoring tick failed")
            await asyncio.sleep(self.sampler.interval_s)

    async def summary(self) -> dict[str, Any]:
        snap = await self.sampler.snapshot()
        pool = update_pool_gauges(self.pool)
        counters = await asyncio.to_thread(read_counters)
        last = self.history.points[-1] if self.history.points else {}
        conn = snap.db.get("connection_count")
        hit = snap.db.get("cache_hit_ratio")
        redis_ratio = _ratio(counters.cache_hits, counters.cache_hits + counters.cache_misses)
        badges = {"connections": conn["status"] if conn else "UNKNOWN",
                  "pg_cache_hit": (hit["status"] if hit and hit["value"] is not None else "UNKNOWN")}
        return {
            "seq": snap.seq,
            "sampled_at": dt.datetime.fromtimestamp(snap.at, dt.UTC).isoformat().replace("+00:00", "Z"),
            "interval_s": self.sampler.interval_s,
            "status": "CRITICAL" if "CRITICAL" in badges.values() else "OK",
            "badges": badges,
            "error": snap.error,
            "connections": {**(conn or {"value": None, "threshold": None, "status": "UNKNOWN"}),
                            "max_connections": snap.db.get("max_connections")},
            "pg_cache_hit": hit or {"value": None, "threshold": 90, "status": "UNKNOWN"},
            "redis_cache_hit": {"value": round(100.0 * redis_ratio, 2) if redis_ratio is not None else None,
                                "hits": int(counters.cache_hits), "misses": int(counters.cache_misses)},
            "latency_p95_ms": last.get("p95_ms"),
            "error_pct": last.get("error_pct"),
            "rps": last.get("rps"),
            "requests_total": int(counters.requests),
            "pool": pool,
            "orders": snap.orders,
            "slow_queries": snap.slow,
            "migration": snap.migration,
        }
