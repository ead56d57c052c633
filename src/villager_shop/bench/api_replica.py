"""`bench api --replica`: the locust shop mix against the service reading the catalog from a
streaming standby, and against the same service reading everything from the primary, in one run.

Both runs use one scratch database on a throwaway primary + standby (embedded.replica), each with a
Redis key prefix of its own and a warmed cache, one after the other. On one machine the primary,
the standby, the service and locust share the same CPUs: a standby adds no capacity here, so the
difference between the runs is what the routing costs (the lag checks, the standby pools, the token
headers), not the gain a standby on its own machine would bring."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from villager_shop.bench.api_clients import ListingProbe, login, warm_catalog
from villager_shop.bench.api_data import Say, drop_redis_keys, dropped_after, prepare_database
from villager_shop.bench.api_locust import MIX, run_locust
from villager_shop.bench.api_metrics import Snapshot, cache_counters, counter_delta, service_histograms, service_latency
from villager_shop.bench.api_server import Server, free_port
from villager_shop.embedded.replica import StreamingPair

MEASURES = ("the cost of routing catalog reads to a standby (lag checks, standby pools, read-your-writes"
            " tokens): primary, standby, service and load generator share this machine's CPUs, so a standby"
            " adds no capacity here; not a speed-up")


def _ready(base: str) -> dict[str, Any]:
    with urllib.request.urlopen(base + "/health/ready", timeout=5) as response:
        body: dict[str, Any] = json.loads(response.read())
        return body


def _one_run(name: str, url: str, standby: str | None, redis_url: str, data: dict[str, Any], *, workers: int,
             db_connections: int, users: int, rate: float, duration_s: int, locust_processes: int,
             workdir: Path, say: Say) -> dict[str, Any]:
    run_dir = workdir / name
    prom = run_dir / "prometheus"
    prom.mkdir(parents=True)
    prefix = f"vbench_api_{os.getpid()}_{secrets.token_hex(3)}"
    env = {**os.environ, "DATABASE_URL": url, "DATABASE_DIRECT_URL": url, "REDIS_URL": redis_url,
           "VILLAGER_CACHE_PREFIX": prefix, "VILLAGER_JWT_SECRET": secrets.token_urlsafe(48),
           "PROMETHEUS_MULTIPROC_DIR": str(prom)}
    env.pop("DATABASE_REPLICA_URLS", None)
    if standby is not None:
        env["DATABASE_REPLICA_URLS"] = standby
    port = free_port()
    service = Server(f"villager-shop serve ({name})", [
        sys.executable, "-m", "villager_shop", "serve", "--host", "127.0.0.1", "--port", str(port),
        "--workers", str(workers), "--db-connections", str(db_connections), "--log-level", "warning",
    ], env, port, "/health/ready", run_dir / "serve.log")
    try:
        with service:
            say(f"{name}: service up on {service.base}; warming the catalog, then {users} users for {duration_s}s …")
            run_data = {**data, "tokens": [login(service.base, email) for email in data["logins"]]}
            data_file = run_dir / "locust-data.json"
            data_file.write_text(json.dumps(run_data))
            warm = warm_catalog(service.base, run_data)
            ramp_end = min(users / rate, duration_s / 2)
            probe_paths = [f"/api/products?category={urllib.parse.quote(data['hot_slug'])}", "/api/products"]
            at_ramp_end = Snapshot(prom, ramp_end)
            with at_ramp_end, ListingProbe(service.base, probe_paths, start_after_s=ramp_end) as probe:
                out = run_locust(service.base, data_file=data_file, users=users, spawn_rate=rate,
                                 duration_s=duration_s, processes=locust_processes, workdir=run_dir)
            out["warm_up"] = warm
            out["listing_probe"] = probe.result()
            out["service_counters"] = counter_delta(at_ramp_end.counters, cache_counters(prom))
            out["service_latency"] = service_latency(at_ramp_end.timed, service_histograms(prom))
            if standby is not None:
                out["replicas_at_end"] = _ready(service.base).get("replicas")
        out["service_log_warnings"] = service.warnings()
        return out
    finally:
        drop_redis_keys(redis_url, prefix)


def _summary(run: dict[str, Any]) -> dict[str, Any]:
    counters = run["service_counters"]
    reads = {t: counters.get(f"catalog_reads_{t}", 0) for t in ("replica", "primary", "primary_fallback")}
    total = sum(reads.values())
    return {"rps": run.get("rps"), "p50_ms": run.get("p50_ms"), "p95_ms": run.get("p95_ms"),
            "listing_p95_ms": run.get("listing_p95_ms"), "errors": run.get("errors"),
            "probe_p50_ms": run["listing_probe"]["p50_ms"], "probe_p95_ms": run["listing_probe"]["p95_ms"],
            "catalog_db_reads": reads,
            "catalog_db_reads_on_replica_share": round(reads["replica"] / total, 3) if total else None}


def bench_api_replica(bindir: Path, redis_url: str, *, scale: float, seed: int = 42, users: int = 1000,
                      duration_s: int = 60, workers: int = 2, db_connections: int = 20,
                      spawn_rate: float | None = None, locust_processes: int = 1, customers: int = 10,
                      mix: dict[str, int] | None = None, say: Say = lambda _m: None) -> dict[str, Any]:
    tag = f"vbench_api_{os.getpid()}"
    rate = spawn_rate or users / min(10.0, max(0.5, duration_s / 4))
    out: dict[str, Any] = {"mode": "replica", "measures": MEASURES, "scale": scale, "seed": seed, "workers": workers,
                           "db_connections": db_connections, "cpus": os.cpu_count(),
                           "load_generator": "same machine", "servers": "primary + streaming standby, same machine"}
    workdir = Path(tempfile.mkdtemp(prefix="villager-bench-api-replica-"))
    say(f"starting a primary and a streaming standby ({bindir}) …")
    pair = StreamingPair(bindir, durable=True).start()
    try:
        admin = pair.primary_url()
        with dropped_after(admin, tag, keep=False):
            t0 = time.perf_counter()
            url, data = prepare_database(admin, tag, scale=scale, seed=seed, customers=customers, say=say)
            pair.wait_caught_up(timeout_s=300)
            out["prepare_s"] = round(time.perf_counter() - t0, 1)
            data["weights"] = {**MIX, **(mix or {})}
            standby = pair.standby_url(tag)
            common: dict[str, Any] = dict(workers=workers, db_connections=db_connections, users=users, rate=rate,
                                          duration_s=duration_s, locust_processes=locust_processes, workdir=workdir,
                                          say=say)
            runs = {"primary_only": _one_run("primary_only", url, None, redis_url, data, **common),
                    "with_replica": _one_run("with_replica", url, standby, redis_url, data, **common)}
        out["mix_percent"] = data["weights"]
        out["runs"] = runs
        alone, routed = _summary(runs["primary_only"]), _summary(runs["with_replica"])
        out["side_by_side"] = {"primary_only": alone, "with_replica": routed}
        if alone["rps"] and routed["rps"]:
            out["routing_cost"] = {
                "rps_ratio_with_replica_vs_primary_only": round(routed["rps"] / alone["rps"], 3),
                "p95_ms_delta": round((routed["p95_ms"] or 0) - (alone["p95_ms"] or 0), 1),
                "probe_p50_ms_delta": round(routed["probe_p50_ms"] - alone["probe_p50_ms"], 2),
            }
        out["goals"] = {"zero_errors": not alone["errors"] and not routed["errors"],
                        "reads_reached_the_replica": bool(routed["catalog_db_reads"]["replica"])}
        return out
    finally:
        pair.stop()
        shutil.rmtree(workdir, ignore_errors=True)
