"""`bench api`: the shop service under load, next to a bare-ASGI ceiling measured in the same run.

1. A scratch database: legacy schema, generated data, the online migration, a few customer logins.
2. `villager-shop serve` in a subprocess (N workers), and `bench.ceiling` on uvicorn with the same
   worker count and settings.
3. Scenarios: locust's realistic shop mix (1 s think time) with an independent listing probe, the
   guide's `ab -n 1000 -c 10`, and cached-listing throughput against the service and the ceiling in
   alternating rounds.
Everything it started (servers, locust, the database, its Redis keys) is gone when it returns."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Any

from villager_shop.bench.api_ab import ROUNDS, combine_rounds, run_ab
from villager_shop.bench.api_clients import ListingProbe, login, warm_catalog
from villager_shop.bench.api_cold_start import run_cold_start
from villager_shop.bench.api_data import Say, drop_redis_keys, dropped_after, prepare_database, reused_database
from villager_shop.bench.api_locust import MIX, run_locust
from villager_shop.bench.api_metrics import Snapshot, cache_counters, counter_delta, service_histograms, service_latency
from villager_shop.bench.api_result import verdict
from villager_shop.bench.api_server import Server, free_port
from villager_shop.core.urls import with_dbname


def bench_api(admin_url: str, redis_url: str, *, scale: float, seed: int = 42, users: int = 1000,
              duration_s: int = 60, workers: int = 2, db_connections: int = 20, spawn_rate: float | None = None,
              locust_processes: int = 1, guide_requests: int = 1000, cached_requests: int = 20000,
              cached_concurrency: int = 50, customers: int = 10, mix: dict[str, int] | None = None,
              keep: bool = False, pooler_url: str | None = None, database: str | None = None,
              cold_start_s: int = 0, locust_nice: int = 0, say: Say = lambda _m: None) -> dict[str, Any]:
    """`database`: a database of that name, built on the first run and reused (never dropped) by the
    next ones (api_data.reused_database). `cold_start_s`: then the cold-start section
    (api_cold_start), that long, after the other scenarios."""
    tag = database or f"vbench_api_{os.getpid()}"
    keep = keep or database is not None
    prefix = f"{tag}_{secrets.token_hex(3)}"
    rate = spawn_rate or users / min(10.0, max(0.5, duration_s / 4))  # ramp: 10 s, or a quarter of a short run
    out: dict[str, Any] = {"scale": scale, "seed": seed, "workers": workers, "db_connections": db_connections,
                           "database": "through a transaction pooler" if pooler_url else "direct",
                           "cpus": os.cpu_count(), "load_generator": "same machine"}
    workdir = Path(tempfile.mkdtemp(prefix="villager-bench-api-"))
    try:
        with dropped_after(admin_url, tag, keep):
            t0 = time.perf_counter()
            if database is not None:
                url, data, reused = reused_database(admin_url, database, scale=scale, seed=seed,
                                                    customers=customers, say=say)
                out["database_reused"] = reused
            else:
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
            cold: dict[str, Any] = {}
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
                at_ramp_end = Snapshot(prom, ramp_end)
                probe_paths = [f"/api/products?category={urllib.parse.quote(data['hot_slug'])}", "/api/products"]
                with at_ramp_end, ListingProbe(service.base, probe_paths, start_after_s=ramp_end) as probe:
                    scenarios["locust_mix"] = run_locust(service.base, data_file=data_file, users=users,
                                                         spawn_rate=rate, duration_s=duration_s,
                                                         processes=locust_processes, workdir=workdir,
                                                         nice=locust_nice)
                scenarios["listing_probe"] = probe.result()
                mix_out = scenarios["locust_mix"]
                mix_out["mix_percent"] = data["weights"]
                mix_out["warm_up"] = warm
                mix_out["service_counters"] = counter_delta(at_ramp_end.counters, cache_counters(prom))
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
                if cold_start_s > 0:
                    say(f"cold_start: the service restarted with an empty cache, then {users} users at once for"
                        f" {cold_start_s}s …")
                    cold = run_cold_start(service, redis_url=redis_url, prefix=prefix, data_file=data_file,
                                          users=users, window_s=cold_start_s, prom_dir=prom,
                                          probe_paths=probe_paths, workdir=workdir, locust_nice=locust_nice)
                    cold["cache_warm_pages"] = env.get("VILLAGER_CACHE_WARM", "default")
            out["service_log_warnings"] = service.warnings()
            out["scenarios"] = scenarios
            out.update(verdict(scenarios, users))
            if cold:
                out["cold_start"] = cold
                out["goals"].update({f"cold_start_{k}": v for k, v in cold["goals"].items()})
            return out
    finally:
        drop_redis_keys(redis_url, prefix)
        shutil.rmtree(workdir, ignore_errors=True)
