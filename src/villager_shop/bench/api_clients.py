"""The benchmark's own HTTP clients of the service: a customer's login, the warm-up, and the listing
probe that measures latency beside the load generator."""

from __future__ import annotations

import http.client
import json
import threading
import time
import urllib.parse
import urllib.request
from typing import Any

from villager_shop.bench.api_data import PASSWORD


def login(base: str, email: str) -> str:
    data = urllib.parse.urlencode({"username": email, "password": PASSWORD}).encode()
    req = urllib.request.Request(base + "/api/auth/token", data=data, method="POST",
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return str(json.loads(resp.read())["access_token"])


def warm_catalog(base: str, data: dict[str, Any]) -> dict[str, Any]:
    """Ask once for every page the shoppers will ask for (each category's first listing, the
    unfiltered listing, the categories, every product page of the data set), so the mix measures a
    running shop, whose caches are warm after its first minutes, not a cold start: otherwise the
    first thousands of requests are all misses, and that stampede is the figure."""
    parsed = urllib.parse.urlsplit(base)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 80
    paths = ["/api/products", "/api/categories",
             *(f"/api/products?category={urllib.parse.quote(s)}" for s in data["slugs"]),
             *(f"/api/products/{p}" for p in data["product_ids"])]
    started, failed = time.perf_counter(), 0
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        for path in paths:
            try:
                conn.request("GET", path)
                response = conn.getresponse()
                response.read()
                failed += response.status != 200
            except (OSError, http.client.HTTPException):
                failed += 1
                conn.close()
                conn = http.client.HTTPConnection(host, port, timeout=10)
    finally:
        conn.close()
    return {"requests": len(paths), "failed": failed, "seconds": round(time.perf_counter() - started, 1)}


class ListingProbe:
    """One client of its own, keep-alive, a listing every `interval_s` while locust runs (after its
    ramp): the service's latency as seen by a client that is not queued behind 1000 greenlets of a
    CPU-bound load generator on the same machine. Reported next to locust's figures, never instead."""

    def __init__(self, base: str, paths: list[str], *, start_after_s: float, interval_s: float = 0.02) -> None:
        parsed = urllib.parse.urlsplit(base)
        self.host, self.port = parsed.hostname or "127.0.0.1", parsed.port or 80
        self.paths = paths
        self.start_after_s = start_after_s
        self.interval_s = interval_s
        self.latencies_ms: list[float] = []
        self.samples: list[tuple[float, float]] = []  # (seconds since the probe started, ms)
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="listing probe", daemon=True)

    def __enter__(self) -> ListingProbe:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        if self._stop.wait(self.start_after_s):
            return
        conn = http.client.HTTPConnection(self.host, self.port, timeout=5)
        began = time.perf_counter()
        i = 0
        while not self._stop.is_set():
            path = self.paths[i % len(self.paths)]
            i += 1
            started = time.perf_counter()
            try:
                conn.request("GET", path)
                response = conn.getresponse()
                response.read()
                ok = response.status == 200
            except (OSError, http.client.HTTPException):
                ok = False
                conn.close()
                conn = http.client.HTTPConnection(self.host, self.port, timeout=5)
            if ok:
                ms = (time.perf_counter() - started) * 1000
                self.latencies_ms.append(ms)
                self.samples.append((started - began, ms))
            else:
                self.errors += 1
            self._stop.wait(self.interval_s)
        conn.close()

    def result(self) -> dict[str, Any]:
        lat = sorted(self.latencies_ms)

        def q(f: float) -> float:
            return round(lat[min(len(lat) - 1, int(f * len(lat)))], 2) if lat else 0.0

        return {"p50_ms": q(0.50), "p95_ms": q(0.95), "p99_ms": q(0.99), "max_ms": round(lat[-1], 2) if lat else 0.0,
                "requests": len(lat) + self.errors, "errors": self.errors, "paths": self.paths,
                "rps": round(1 / self.interval_s, 1)}
