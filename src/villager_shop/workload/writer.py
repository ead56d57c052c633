"""A live workload that plays the old application (writing house_number, category, price, stock)
and, once the normalized tables exist, the new one (writing addresses, categories, variants),
while a migration runs. It records every write's latency and every error, and remembers what it
wrote last to each row it owns, so a test can check that every write is present in both
representations afterwards.

Each thread owns its rows (the ones it inserted, plus existing rows whose id hash falls in its
partition), so the expected final value of a row is the last one its thread committed. The operations
themselves are the two applications' (legacy_app, new_app); this module runs, times and checks them.

Two ways to drive it. Closed loop (`rate=None`): each thread writes again as soon as its last write
returns (plus `pause_s`): the harshest load, for tests. Open loop (`rate` writes/s in all): writes
fall due on a fixed schedule, as an application's requests arrive whether or not the database keeps
up, so a migration that locks the writers out does not also take the load away, and the load
generator (a process on the database's own machine here) takes the same CPU share in every run. A
thread that falls behind catches up without pausing. Either way a write's latency is its own time in
the database, from its first statement to its last result.
"""

from __future__ import annotations

import random
import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import psycopg

from villager_shop.core.db import connect
from villager_shop.workload.category_key import category_key_function
from villager_shop.workload.legacy_app import LEGACY_OPS
from villager_shop.workload.new_app import NEW_OPS, normalized_ready
from villager_shop.workload.recorder import Owned

SLOW_MS = 50.0
SLOW_KEPT = 500


@dataclass
class WriterStats:
    ops: int = 0
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    by_kind: dict[str, int] = field(default_factory=dict)
    # (wall-clock start of the write, its latency in ms, its operation), in completion order.
    samples: list[tuple[float, float, str]] = field(default_factory=list)
    # The slow writes (>= SLOW_MS) with their operation, to tell what waited (at most SLOW_KEPT).
    slow: list[tuple[float, float, str]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies_ms) or [0.0]

        def pct(p: float) -> float:
            return round(lat[min(len(lat) - 1, int(p * len(lat)))], 2)

        return {"writer_ops": self.ops, "writer_errors": self.errors, "writer_p50_ms": pct(0.50),
                "writer_p99_ms": pct(0.99), "writer_max_ms": round(lat[-1], 2),
                "writer_mean_ms": round(statistics.fmean(lat), 2), "by_kind": dict(self.by_kind),
                "error_samples": self.error_samples[:5]}


class LiveWriter:
    def __init__(self, url: str, *, legacy_threads: int = 3, new_threads: int = 1, pause_s: float = 0.005,
                 seed: int = 7, rate: float | None = None) -> None:
        self.url = url
        self.rate = rate
        self.legacy_threads = legacy_threads
        self.new_threads = new_threads
        self.pause_s = pause_s
        self.seed = seed
        self.stats = WriterStats()
        self.expected: dict[tuple[str, str], dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # --- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> LiveWriter:
        n = self.legacy_threads + self.new_threads
        for i in range(n):
            kind = "legacy" if i < self.legacy_threads else "new"
            t = threading.Thread(target=self._loop, args=(i, n, kind), daemon=True, name=f"writer-{kind}-{i}")
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> WriterStats:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)
        return self.stats

    def __enter__(self) -> LiveWriter:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- the loop ----------------------------------------------------------------------------------

    def _loop(self, index: int, parts: int, kind: str) -> None:
        rng = random.Random(self.seed * 1000 + index)
        conn = connect(self.url, autocommit=True, application_name=f"live-writer {kind}")
        owned: Owned = {t: [] for t in (*_ADOPTED, "created", "ordered")}
        # Each thread's share of the rate, its first write staggered so the threads do not beat together.
        interval = parts / self.rate if self.rate else 0.0
        due = time.perf_counter() + rng.random() * interval
        # The new tables, once they exist, stay until the writer stops (it is stopped before a
        # rollback): asked until then, not before each write.
        ready = False
        try:
            self._adopt(conn, owned, index, parts)
            while not self._stop.is_set():
                if kind == "legacy":
                    op = rng.choice(LEGACY_OPS)
                else:
                    if not ready and not normalized_ready(conn):
                        time.sleep(0.05)
                        due = time.perf_counter()
                        continue
                    ready = True
                    op = rng.choice(NEW_OPS)
                if interval:
                    ahead = due - time.perf_counter()
                    if ahead > 0 and self._stop.wait(ahead):
                        break
                    due += interval
                started, t0 = time.time(), time.perf_counter()
                try:
                    op(self, conn, rng, owned)
                    ok = True
                except psycopg.Error as exc:
                    ok = False
                    err = f"{op.__name__}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                ms = (time.perf_counter() - t0) * 1000
                with self._lock:
                    self.stats.ops += 1
                    self.stats.latencies_ms.append(ms)
                    self.stats.samples.append((started, ms, op.__name__))
                    if ms >= SLOW_MS and len(self.stats.slow) < SLOW_KEPT:
                        self.stats.slow.append((started, ms, op.__name__))
                    self.stats.by_kind[op.__name__] = self.stats.by_kind.get(op.__name__, 0) + 1
                    if not ok:
                        self.stats.errors += 1
                        if len(self.stats.error_samples) < 20:
                            self.stats.error_samples.append(err)
                if self.pause_s and not interval:
                    time.sleep(self.pause_s)
        finally:
            conn.close()

    def _adopt(self, conn: psycopg.Connection[Any], owned: Owned, index: int, parts: int) -> None:
        """Take a bounded sample of existing rows of this thread's partition to update."""
        for table in _ADOPTED:
            rows = conn.execute(
                f"SELECT id::text FROM {table} WHERE abs(hashtext(id::text)) %% %s = %s LIMIT 200",
                (parts, index)).fetchall()
            owned[table].extend(r[0] for r in rows)

    def expect(self, table: str, row_id: str, **values: Any) -> None:
        with self._lock:
            self.expected.setdefault((table, row_id), {}).update(values)

    def forget(self, table: str, row_id: str) -> None:
        with self._lock:
            self.expected[(table, row_id)] = {"deleted": True}


_ADOPTED = ("users", "shops", "products", "orders")



def check_expected(url: str, writer: LiveWriter) -> list[str]:
    """Every write the writer committed is present in the legacy columns (the normalized side is
    checked against them by check_data_integrity()). Returns the differences."""
    problems: list[str] = []
    with psycopg.connect(url) as conn:
        key: str | None = None
        for (table, rid), want in writer.expected.items():
            if want.get("deleted"):
                if conn.execute(f"SELECT 1 FROM {table} WHERE id = %s", (rid,)).fetchone():
                    problems.append(f"{table} {rid}: deleted but present")
                continue
            cols = [c for c in want if c != "category_key_of"]
            if "category_key_of" in want:
                cols.append("category")
            row = conn.execute(f"SELECT {', '.join(cols)} FROM {table} WHERE id = %s", (rid,)).fetchone()
            if row is None:
                problems.append(f"{table} {rid}: missing")
                continue
            got = dict(zip(cols, row, strict=True))
            for col, value in want.items():
                if col == "category_key_of":
                    key = key or category_key_function(conn)
                    same = conn.execute(f"SELECT {key}(%s) IS NOT DISTINCT FROM {key}(%s)".encode(),
                                        (got["category"], value)).fetchone()
                    if not (same and same[0]):
                        problems.append(f"{table} {rid}: category {got['category']!r}, expected {value!r}")
                elif col == "house_number" and isinstance(value, str) and value.startswith("N"):
                    if got[col] != value.upper():
                        problems.append(f"{table} {rid}: house_number {got[col]!r}, expected {value!r}")
                elif got[col] != value:
                    problems.append(f"{table} {rid}: {col} {got[col]!r}, expected {value!r}")
    return problems
