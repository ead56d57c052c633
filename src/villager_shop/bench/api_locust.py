"""The locust run: the realistic shopper mix (locustfile.py), and its figures from locust's CSV."""

from __future__ import annotations

import contextlib
import csv
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from villager_shop.core.errors import VillagerError

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
LISTING_NAMES = ("GET /api/products?category=[slug]", "GET /api/products?category=[slug]&cursor=[next]",
                 "GET /api/products")
# The shopper mix (weights, in percent): mostly category listings; see locustfile.py
MIX = {"category_listing": 55, "whole_catalog": 8, "product_page": 25, "categories": 8, "order": 4}
CPU_WARNING = re.compile(r"CPU usage above \d+%")


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
               workdir: Path, reset_stats: bool = True, tag: str = "locust", nice: int = 0) -> dict[str, Any]:
    """`reset_stats`: the figures cover the time after the ramp only (else the whole run). `nice`:
    locust's scheduling niceness; on a machine it shares with the service, a positive one gives the
    service (and the probe) the CPU first, as a load generator on another machine would."""
    prefix = workdir / tag
    log = workdir / f"{tag}.log"
    argv = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "-u", str(users),
            "-r", f"{spawn_rate:g}", "-t", f"{duration_s}s", "--host", host, "--csv", str(prefix),
            "--only-summary", "--stop-timeout", "3", "--exit-code-on-error", "0"]
    if reset_stats:
        argv.append("--reset-stats")
    if processes > 1:
        argv += ["--processes", str(processes)]
    env = {**os.environ, "VILLAGER_BENCH_DATA": str(data_file)}
    with open(log, "wb") as fh:
        proc = subprocess.Popen(argv, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=(lambda: os.nice(nice)) if nice else None)
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
               locust_processes=processes, think_time_s=1.0, locust_nice=nice)
    return out
