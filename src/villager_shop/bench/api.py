"""`bench api`: the shop service under load, next to a bare-ASGI ceiling measured in the same run.

1. A scratch database: legacy schema, generated data, the online migration, a few customer logins.
2. `villager-shop serve` in a subprocess (N workers), and `bench.ceiling` on uvicorn with the same
   worker count and settings.
3. Scenarios: locust's realistic shop mix (1 s think time) with an independent listing probe, the
   guide's `ab -n 1000 -c 10`, and cached-listing throughput against the service and the ceiling in
   alternating rounds.
Everything it started (servers, locust, the database, its Redis keys) is gone when it returns."""

from __future__ import annotations

import contextlib
import csv
import http.client
import json
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from villager_shop.api.services.monitoring import quantile
from villager_shop.core.config import Settings
from villager_shop.core.db import connect, create_database, drop_database
from villager_shop.core.errors import VillagerError
from villager_shop.core.urls import with_dbname
from villager_shop.legacy.generate import generate
from villager_shop.legacy.schema import schema_sql

Say = Callable[[str], None]
PASSWORD = "bench-shopper-pass"
LOCUSTFILE = Path(__file__).with_name("locustfile.py")
LISTING_NAMES = ("GET /api/products?category=[slug]", "GET /api/products?category=[slug]&cursor=[next]",
                 "GET /api/products")
# The shopper mix (weights, in percent): mostly category listings; see locustfile.py
MIX = {"category_listing": 55, "whole_catalog": 8, "product_page": 25, "categories": 8, "order": 4}
CPU_WARNING = re.compile(r"CPU usage above \d+%")


# -- data ---------------------------------------------------------------------------------------


def prepare_database(admin_url: str, name: str, *, scale: float, seed: int, customers: int,
                     say: Say) -> tuple[str, dict[str, Any]]:
    """Create `name`, fill it (generator + online migration), set customer passwords.
    Returns its URL and what the load needs: slugs, listed product ids, in-stock variant ids, logins."""
    from villager_shop.api.services.accounts import set_password
    from villager_shop.migration.runner import make_context, run

    drop_database(admin_url, name)
    url = create_database(admin_url, name)
    with connect(url, autocommit=True) as conn:
        conn.execute(schema_sql().encode())
    say(f"generating scale {scale} legacy data …")
    generate(url, scale=scale, seed=seed)
    say("running the online migration …")
    ctx = make_context(url, Settings(database_url=url))  # type: ignore[arg-type]
    try:
        run(ctx)
    finally:
        ctx.conn.close()
    with connect(url, autocommit=True) as conn:
        conn.execute("ANALYZE")
        slugs = [r[0] for r in conn.execute(
            """SELECT c.slug FROM public.product_categories c
                WHERE c.is_active AND EXISTS (SELECT 1 FROM public.products p WHERE p.category_id = c.id
                                                AND p.is_available)
                ORDER BY c.slug""").fetchall()]
        hot = conn.execute(
            """SELECT c.slug FROM public.product_categories c JOIN public.products p ON p.category_id = c.id
                WHERE c.is_active AND p.is_available GROUP BY c.slug ORDER BY count(*) DESC, c.slug LIMIT 1""",
        ).fetchone()
        products = [str(r[0]) for r in conn.execute(
            """SELECT p.id FROM public.products p
                WHERE p.is_available
                  AND EXISTS (SELECT 1 FROM public.product_variants v WHERE v.product_id = p.id AND v.is_active)
                ORDER BY md5(p.id::text) LIMIT 2000""").fetchall()]
        variants = [str(r[0]) for r in conn.execute(
            """SELECT v.id FROM public.product_variants v
                 JOIN public.products p ON p.id = v.product_id JOIN public.shops s ON s.id = p.shop_id
                WHERE v.is_active AND p.is_available AND s.is_open AND v.stock > 0
                ORDER BY md5(v.id::text) LIMIT 1000""").fetchall()]
        candidates = [r[0] for r in conn.execute(
            """SELECT email FROM public.users
                WHERE role = 'customer' AND email ~ '^[A-Za-z0-9._%%+-]+@[A-Za-z0-9.-]+$'
                ORDER BY id LIMIT %s""", (customers * 4,)).fetchall()]
        logins: list[str] = []
        for email in candidates:
            if len(logins) >= customers:
                break
            with contextlib.suppress(VillagerError):  # messy data: an email shared with another user's phone
                set_password(conn, email, PASSWORD)
                logins.append(email)
    if not slugs or not products:
        raise VillagerError("the generated catalog has no listed products")
    return url, {"slugs": slugs, "hot_slug": hot[0] if hot else slugs[0], "product_ids": products,
                 "variant_ids": variants, "logins": logins}


# -- processes ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str, timeout: float = 2.0) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            resp.read()
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


class Server:
    """A server in its own process group; `stop()` ends the whole group (uvicorn's workers too)."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], port: int, ready_path: str,
                 log: Path) -> None:
        self.name, self.argv, self.env, self.port, self.ready_path, self.log = name, argv, env, port, ready_path, log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 90) -> Server:
        with open(self.log, "wb") as fh:
            self.proc = subprocess.Popen(self.argv, env=self.env, stdout=fh, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = self.log.read_text(errors="replace").strip().splitlines()[-3:]
                raise VillagerError(f"{self.name} exited with {self.proc.returncode}: {' | '.join(tail)}")
            if _get(self.base + self.ready_path, timeout=1) == 200:
                time.sleep(1.0)  # let the other workers finish their startup too
                return self
            time.sleep(0.2)
        self.stop()
        raise VillagerError(f"{self.name} did not become ready in {timeout_s:.0f}s (log: {self.log})")

    def stop(self) -> None:
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
        with contextlib.suppress(ProcessLookupError):  # a worker that outlived its parent
            os.killpg(proc.pid, signal.SIGKILL)

    def warnings(self, limit: int = 5) -> dict[str, Any]:
        """Count and first distinct WARNING/ERROR lines of its log (e.g. the cache's breaker opening)."""
        lines = [ln.strip() for ln in self.log.read_text(errors="replace").splitlines()
                 if re.search(r"\b(WARNING|ERROR|CRITICAL|Traceback)\b", ln)] if self.log.exists() else []
        distinct: list[str] = []
        for ln in lines:
            short = re.sub(r"\d+(\.\d+)?", "N", ln)[:200]
            if short not in distinct:
                distinct.append(short)
        return {"count": len(lines), "first": distinct[:limit]}

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def login(base: str, email: str) -> str:
    data = urllib.parse.urlencode({"username": email, "password": PASSWORD}).encode()
    req = urllib.request.Request(base + "/api/auth/token", data=data, method="POST",
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return str(json.loads(resp.read())["access_token"])


# -- ab -----------------------------------------------------------------------------------------


def parse_mix(text: str) -> dict[str, int]:
    """'order=1,product_page=28' -> weights that override MIX (unknown names are refused)."""
    out: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, value = part.partition("=")
        if name.strip() not in MIX or not value.strip().isdigit():
            raise VillagerError(f"--mix: expected NAME=WEIGHT with NAME in {', '.join(MIX)}, got {part!r}",
                                exit_code=2)
        out[name.strip()] = int(value)
    return out


def parse_ab(text: str, percentiles_csv: Path | None = None) -> dict[str, Any]:
    """Figures from ab's report (and its `-e` CSV of percentiles, finer than the ms table)."""

    def grab(pattern: str, cast: Callable[[str], Any] = int, default: Any = 0) -> Any:
        m = re.search(pattern, text, re.MULTILINE)
        return cast(m.group(1)) if m else default

    pct: dict[int, float] = {}
    if percentiles_csv is not None and percentiles_csv.exists():
        with open(percentiles_csv, newline="") as fh:
            for row in csv.reader(fh):
                if len(row) == 2 and row[0].strip().isdigit():
                    pct[int(row[0])] = float(row[1])
    if not pct:
        pct = {int(p): float(ms) for p, ms in re.findall(r"^\s+(\d+)%\s+(\d+)", text, re.MULTILINE)}
    complete = grab(r"^Complete requests:\s+(\d+)")
    failed = grab(r"^Failed requests:\s+(\d+)")
    length_failures = grab(r"Length: (\d+)")
    non_2xx = grab(r"^Non-2xx responses:\s+(\d+)")
    return {
        "p50_ms": round(pct.get(50, 0.0), 2), "p95_ms": round(pct.get(95, 0.0), 2),
        "p99_ms": round(pct.get(99, 0.0), 2),
        "rps": grab(r"^Requests per second:\s+([\d.]+)", float, 0.0),
        "requests": complete,
        # ab counts a body whose length differs from the first one as "failed": not an HTTP error
        "errors": failed - length_failures + non_2xx,
        "non_2xx": non_2xx, "length_mismatches": length_failures,
        "mean_ms": grab(r"^Time per request:\s+([\d.]+) \[ms\] \(mean\)$", float, 0.0),
    }


# The cached listing and the ceiling are measured in alternating rounds, both servers up (one idle
# while the other is measured): the machine's background load, which shifts over seconds, then hits
# both sides of each round alike; the ratio is the median of the rounds' ratios.
ROUNDS = 3


def combine_rounds(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One scenario from ab rounds: totals, rps over the total time, the median round's percentiles."""
    if any("skipped" in r for r in rounds):
        return rounds[0]
    requests = sum(r["requests"] for r in rounds)
    seconds = sum(r["requests"] / r["rps"] for r in rounds if r["rps"])
    out: dict[str, Any] = {key: round(statistics.median(r[key] for r in rounds), 2)
                           for key in ("p50_ms", "p95_ms", "p99_ms", "mean_ms")}
    out.update(rps=round(requests / seconds, 2) if seconds else 0.0, requests=requests,
               errors=sum(r["errors"] for r in rounds), non_2xx=sum(r["non_2xx"] for r in rounds),
               length_mismatches=sum(r["length_mismatches"] for r in rounds),
               round_rps=[r["rps"] for r in rounds], command=rounds[0]["command"])
    return out


def run_ab(url: str, *, requests: int, concurrency: int, keepalive: bool, workdir: Path,
           tag: str) -> dict[str, Any]:
    ab = shutil.which("ab")
    if ab is None:
        return {"skipped": "ab (apache2-utils) is not installed: apt-get install -y apache2-utils"}
    pct_file = workdir / f"ab-{tag}.csv"
    argv = [ab, "-n", str(requests), "-c", str(concurrency), *(["-k"] if keepalive else []), "-e", str(pct_file), url]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=900, check=False)
    if res.returncode != 0 and "Complete requests" not in res.stdout:
        last = (res.stderr.strip().splitlines() or ["?"])[-1]
        raise VillagerError(f"ab failed ({res.returncode}): {last}")
    out = parse_ab(res.stdout, pct_file)
    out["command"] = " ".join(["ab", *argv[1:]]).replace(f" -e {pct_file}", "")
    return out


# -- locust -------------------------------------------------------------------------------------


def _num(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        return 0.0


def parse_locust(prefix: Path, log_text: str) -> dict[str, Any]:
    stats_file = Path(f"{prefix}_stats.csv")
    if not stats_file.exists():
        tail = " | ".join(log_text.strip().splitlines()[-3:])
        raise VillagerError(f"locust wrote no statistics: {tail}")
    by_name: dict[str, dict[str, Any]] = {}
    total: dict[str, Any] = {}
    with open(stats_file, newline="") as fh:
        for row in csv.DictReader(fh):
            entry = {"p50_ms": _num(row["50%"]), "p95_ms": _num(row["95%"]), "p99_ms": _num(row["99%"]),
                     "rps": round(_num(row["Requests/s"]), 1), "requests": int(_num(row["Request Count"])),
                     "errors": int(_num(row["Failure Count"])), "max_ms": round(_num(row["Max Response Time"]), 1)}
            if row["Name"] == "Aggregated":
                total = entry
            else:
                by_name[row["Name"]] = entry
    failures: list[dict[str, Any]] = []
    failures_file = Path(f"{prefix}_failures.csv")
    if failures_file.exists():
        with open(failures_file, newline="") as fh:
            failures = [{"name": r["Name"], "error": r["Error"][:200], "count": int(_num(r["Occurrences"]))}
                        for r in csv.DictReader(fh)][:10]
    listing = [by_name[n] for n in LISTING_NAMES if n in by_name]
    orders_ok = by_name.get("POST /api/orders", {}).get("requests", 0)
    return {**total, "listing_p95_ms": max((e["p95_ms"] for e in listing), default=0.0),
            "listing_p99_ms": max((e["p99_ms"] for e in listing), default=0.0),
            "orders_placed": orders_ok - by_name.get("POST /api/orders", {}).get("errors", 0),
            "orders_out_of_stock_409": by_name.get("POST /api/orders [409 out of stock]", {}).get("requests", 0),
            "by_name": by_name, "failures": failures,
            "locust_cpu_warning": bool(CPU_WARNING.search(log_text))}


def run_locust(host: str, *, data_file: Path, users: int, spawn_rate: float, duration_s: int, processes: int,
               workdir: Path) -> dict[str, Any]:
    prefix = workdir / "locust"
    log = workdir / "locust.log"
    argv = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "-u", str(users),
            "-r", f"{spawn_rate:g}", "-t", f"{duration_s}s", "--host", host, "--csv", str(prefix),
            "--only-summary", "--reset-stats", "--stop-timeout", "3", "--exit-code-on-error", "0"]
    if processes > 1:
        argv += ["--processes", str(processes)]
    env = {**os.environ, "VILLAGER_BENCH_DATA": str(data_file)}
    with open(log, "wb") as fh:
        proc = subprocess.Popen(argv, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            proc.wait(timeout=duration_s + 120)
        except subprocess.TimeoutExpired:
            pass
        finally:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
            with contextlib.suppress(ProcessLookupError):  # --processes children
                os.killpg(proc.pid, signal.SIGKILL)
    log_text = log.read_text(errors="replace")
    out = parse_locust(prefix, log_text)
    out.update(users=users, spawn_rate=spawn_rate, ramp_s=round(users / spawn_rate, 1), duration_s=duration_s,
               locust_processes=processes, think_time_s=1.0)
    return out


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


class _Snapshot:
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

    def __enter__(self) -> _Snapshot:
        self._timer.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._timer.cancel()
        self._timer.join()
        self._take()


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
                self.latencies_ms.append((time.perf_counter() - started) * 1000)
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


# -- cache counters (the service's prometheus multiprocess files) -------------------------------


def cache_counters(prom_dir: Path) -> dict[str, float]:
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

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
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

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


def _delta(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    d: dict[str, Any] = {k.removeprefix("villager_").removesuffix("_total"): int(after.get(k, 0) - before.get(k, 0))
         for k in after}
    looked = d.get("cache_hits", 0) + d.get("cache_misses", 0)
    d["cache_hit_ratio"] = round(d.get("cache_hits", 0) / looked, 3) if looked else None
    waits = d.pop("cache_lease_wait_seconds_count", 0)
    waited_ms = d.pop("cache_lease_wait_ms_sum", 0)
    if waits:
        d["cache_lease_wait_mean_ms"] = round(waited_ms / waits, 1)
    return d


# -- the benchmark ------------------------------------------------------------------------------


@contextlib.contextmanager
def _scratch(admin_url: str, name: str, keep: bool) -> Iterator[None]:
    try:
        yield
    finally:
        if not keep:
            drop_database(admin_url, name)


def _drop_redis_keys(redis_url: str, prefix: str) -> None:
    import redis

    with contextlib.suppress(redis.RedisError, OSError):
        client = redis.Redis.from_url(redis_url, socket_timeout=5)
        try:
            batch = list(client.scan_iter(match=f"{prefix}:*", count=1000))
            for i in range(0, len(batch), 500):
                client.delete(*batch[i:i + 500])
        finally:
            client.close()


def bench_api(admin_url: str, redis_url: str, *, scale: float, seed: int = 42, users: int = 1000,
              duration_s: int = 60, workers: int = 2, db_connections: int = 20, spawn_rate: float | None = None,
              locust_processes: int = 1, guide_requests: int = 1000, cached_requests: int = 20000,
              cached_concurrency: int = 50, customers: int = 10, mix: dict[str, int] | None = None,
              keep: bool = False, pooler_url: str | None = None,
              say: Say = lambda _m: None) -> dict[str, Any]:
    tag = f"vbench_api_{os.getpid()}"
    prefix = f"{tag}_{secrets.token_hex(3)}"
    rate = spawn_rate or users / min(10.0, max(0.5, duration_s / 4))  # ramp: 10 s, or a quarter of a short run
    out: dict[str, Any] = {"scale": scale, "seed": seed, "workers": workers, "db_connections": db_connections,
                           "database": "through a transaction pooler" if pooler_url else "direct",
                           "cpus": os.cpu_count(), "load_generator": "same machine"}
    workdir = Path(tempfile.mkdtemp(prefix="villager-bench-api-"))
    try:
        with _scratch(admin_url, tag, keep):
            t0 = time.perf_counter()
            url, data = prepare_database(admin_url, tag, scale=scale, seed=seed, customers=customers, say=say)
            out["prepare_s"] = round(time.perf_counter() - t0, 1)
            out["catalog"] = {"categories": len(data["slugs"]), "hot_category": data["hot_slug"]}
            if keep:
                out["kept_database"] = tag
            prom = workdir / "prometheus"
            prom.mkdir()
            # The service's DATABASE_URL: the scratch database, through the pooler if one is given;
            # its listener's (and any DATABASE_DIRECT_URL of the environment replaced): the server's.
            served = with_dbname(pooler_url, tag) if pooler_url else url
            env = {**os.environ, "DATABASE_URL": served, "DATABASE_DIRECT_URL": url, "REDIS_URL": redis_url,
                   "VILLAGER_CACHE_PREFIX": prefix,
                   "VILLAGER_JWT_SECRET": secrets.token_urlsafe(48), "PROMETHEUS_MULTIPROC_DIR": str(prom)}
            port = free_port()
            service = Server("villager-shop serve", [
                sys.executable, "-m", "villager_shop", "serve", "--host", "127.0.0.1", "--port", str(port),
                "--workers", str(workers), "--db-connections", str(db_connections), "--log-level", "warning",
            ], env, port, "/health/ready", workdir / "serve.log")
            scenarios: dict[str, Any] = {}
            with service:
                say(f"service up on {service.base} ({workers} worker(s)); logging in {len(data['logins'])} customers")
                data["tokens"] = [login(service.base, email) for email in data["logins"]]
                data["weights"] = {**MIX, **(mix or {})}
                data_file = workdir / "locust-data.json"
                data_file.write_text(json.dumps(data))
                say(f"warming the catalog: {len(data['slugs'])} category listings, {len(data['product_ids'])} "
                    "product pages …")
                warm = warm_catalog(service.base, data)
                say(f"ab_guide: ab -n {guide_requests} -c 10 {service.base}/api/products")
                scenarios["ab_guide"] = run_ab(service.base + "/api/products", requests=guide_requests,
                                               concurrency=10, keepalive=False, workdir=workdir, tag="guide")
                hot = f"{service.base}/api/products?category={urllib.parse.quote(data['hot_slug'])}"
                say(f"locust_mix: {users} users, spawn rate {rate:g}/s, {duration_s}s, "
                    f"{locust_processes} locust process(es) …")
                # Every figure of the mix covers the time after the ramp (locust --reset-stats), at full load.
                ramp_end = min(users / rate, duration_s / 2)
                at_ramp_end = _Snapshot(prom, ramp_end)
                probe_paths = [f"/api/products?category={urllib.parse.quote(data['hot_slug'])}", "/api/products"]
                with at_ramp_end, ListingProbe(service.base, probe_paths, start_after_s=ramp_end) as probe:
                    scenarios["locust_mix"] = run_locust(service.base, data_file=data_file, users=users,
                                                         spawn_rate=rate, duration_s=duration_s,
                                                         processes=locust_processes, workdir=workdir)
                scenarios["listing_probe"] = probe.result()
                mix_out = scenarios["locust_mix"]
                mix_out["mix_percent"] = data["weights"]
                mix_out["warm_up"] = warm
                mix_out["service_counters"] = _delta(at_ramp_end.counters, cache_counters(prom))
                mix_out["service_latency"] = service_latency(at_ramp_end.timed, service_histograms(prom))
                ceiling_port = free_port()
                ceiling = Server("ceiling (bare ASGI on uvicorn)", [
                    sys.executable, "-m", "uvicorn", "villager_shop.bench.ceiling:app", "--host", "127.0.0.1",
                    "--port", str(ceiling_port), "--workers", str(workers), "--no-access-log", "--log-level",
                    "warning", "--http", "httptools", "--loop", "uvloop",
                ], env, ceiling_port, "/", workdir / "ceiling.log")
                with ceiling:
                    each = max(1, cached_requests // ROUNDS)
                    say(f"cached_listing vs ceiling: {ROUNDS} alternating rounds of ab -k -n {each} "
                        f"-c {cached_concurrency}: {hot} | {ceiling.base}/")
                    rounds = [(run_ab(hot, requests=each, concurrency=cached_concurrency, keepalive=True,
                                      workdir=workdir, tag=f"cached-{r}"),
                               run_ab(ceiling.base + "/", requests=each, concurrency=cached_concurrency,
                                      keepalive=True, workdir=workdir, tag=f"ceiling-{r}"))
                              for r in range(ROUNDS)]
                scenarios["cached_listing"] = combine_rounds([c for c, _ in rounds])
                scenarios["ceiling"] = combine_rounds([k for _, k in rounds])
                ratios = [c["rps"] / k["rps"] for c, k in rounds
                          if "skipped" not in c and "skipped" not in k and k.get("rps")]
                if ratios:
                    scenarios["cached_listing"]["round_ratios"] = [round(r, 3) for r in ratios]
            out["service_log_warnings"] = service.warnings()
            out["scenarios"] = scenarios
            out.update(_verdict(scenarios, users))
            return out
    finally:
        _drop_redis_keys(redis_url, prefix)
        shutil.rmtree(workdir, ignore_errors=True)


def _verdict(scenarios: dict[str, Any], users: int) -> dict[str, Any]:
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
