"""`bench verify`: `migrate verify` against `migrate run` on the same freshly generated data, with
no writer, each as a user runs it (the CLI in a subprocess). The run is the reference measured in the
same session, so the ratio means something on a shared, noisy machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from villager_shop.bench.migration import _checkpoint
from villager_shop.bench.migrator_proc import run_migrator
from villager_shop.core.db import connect, create_database, drop_database
from villager_shop.core.errors import VillagerError
from villager_shop.legacy.generate import generate
from villager_shop.legacy.schema import schema_sql

GOAL = 0.20  # verify's time as a share of the run's


def _verify_cli(url: str) -> tuple[int, dict[str, Any]]:
    env = {**os.environ, "DATABASE_URL": url, "DATABASE_DIRECT_URL": url}
    res = subprocess.run([sys.executable, "-m", "villager_shop", "migrate", "verify", "--json"],
                         env=env, capture_output=True, text=True, check=False)
    if res.returncode not in (0, 5):
        raise VillagerError(f"migrate verify failed: {res.stderr.strip().splitlines()[-1:]}")
    return res.returncode, dict(json.loads(res.stdout))


def bench_verify(admin_url: str, *, scale: float, seed: int = 42, say: Callable[[str], None] = lambda _m: None
                 ) -> dict[str, Any]:
    name = f"vbench_verify_{os.getpid()}"
    out: dict[str, Any] = {"scale": scale, "seed": seed, "writer": "none", "cpus": os.cpu_count(),
                           "load_average_before": [round(x, 2) for x in os.getloadavg()]}
    drop_database(admin_url, name)
    url = create_database(admin_url, name)
    try:
        with connect(url, autocommit=True) as conn:
            conn.execute(schema_sql().encode())
            out["server_version"] = conn.info.server_version
        say(f"generating scale {scale} legacy data …")
        t0 = time.perf_counter()
        out["legacy_rows"] = generate(url, scale=scale, seed=seed).to_dict().get("rows", {})
        out["generate_s"] = round(time.perf_counter() - t0, 2)
        _checkpoint(admin_url)
        say("migrate run …")
        t0 = time.perf_counter()
        run_migrator(url, "online")
        out["run_s"] = round(time.perf_counter() - t0, 3)
        say("migrate verify …")
        t0 = time.perf_counter()
        code, report = _verify_cli(url)
        out["verify_s"] = round(time.perf_counter() - t0, 3)
        out["verify_ok"] = code == 0 and bool(report.get("ok"))
        out["ratio_verify_vs_run"] = round(out["verify_s"] / out["run_s"], 4) if out["run_s"] else None
        out["goal"] = {"ratio_le": GOAL, "met": bool(out["verify_ok"] and out["ratio_verify_vs_run"] is not None
                                                     and out["ratio_verify_vs_run"] <= GOAL)}
        out["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
        return out
    finally:
        drop_database(admin_url, name)
