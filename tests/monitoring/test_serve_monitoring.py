"""`villager-shop serve` in a subprocess: /metrics adds up over two workers, and the dashboard draws
live data in headless Chromium with the same figures as /api/monitoring/summary."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.conftest import ASHA, BALA, PASSWORD, RADIO, ShopDb, forget_keys, make_config
from tests.cli.test_serve import free_port
from tests.helpers import ROOT, cli_env, stop_process, wait_ready
from tests.monitoring.browser import Chromium, chromium_binary
from tests.monitoring.test_http_metrics import parse, value

ARTIFACTS = ROOT / "artifacts"


@contextmanager
def serving(db_url: str, redis_url: str, data_dir: Path, workers: int = 1, **env: str) -> Iterator[str]:
    """The real CLI on a free port; stopped (and its cache keys removed) whatever happens."""
    port = free_port()
    prefix = f"vtest:mon{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "villager_shop", "serve", "--port", str(port), "--workers", str(workers),
         "--db-connections", "4"],
        env=cli_env(db_url, redis_url, VILLAGER_DATA_DIR=str(data_dir), VILLAGER_CACHE_PREFIX=prefix, **env),
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, proc)
        yield base
    finally:
        stop_process(proc)
        forget_keys(make_config(db_url, redis_url, cache_prefix=prefix))


def login(base: str, user: str) -> dict[str, str]:
    r = httpx.post(f"{base}/api/auth/token", data={"username": user, "password": PASSWORD}, timeout=10)
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def place_and_cancel(base: str) -> dict[str, Any]:
    page = httpx.get(f"{base}/api/products/{RADIO}", timeout=10).json()
    variant = next(v for v in page["variants"] if v["is_default"])["id"]
    r = httpx.post(f"{base}/api/orders", headers=login(base, BALA), timeout=10,
                   json={"items": [{"variant_id": variant, "quantity": 1}]})
    assert r.status_code == 201, r.text
    order: dict[str, Any] = r.json()
    r = httpx.patch(f"{base}/api/orders/{order['id']}", headers=login(base, ASHA), timeout=10,
                    json={"status": "cancelled"})
    assert r.status_code == 200, r.text
    return order


def test_metrics_add_up_over_two_workers(shop_db: ShopDb, redis_url: str, tmp_path: Path) -> None:
    with serving(shop_db.url, redis_url, tmp_path, workers=2) as base:
        n = 30
        for i in range(n):  # new connections, so the kernel spreads them over both workers
            assert httpx.get(f"{base}/api/products?limit={1 + i % 3}", timeout=10).status_code == 200
        order = place_and_cancel(base)
        folder = tmp_path / "prometheus"
        pids = {p.stem.rsplit("_", 1)[-1] for p in folder.rglob("counter_*.db")}
        assert len(pids) == 2, f"requests reached one worker only: {sorted(pids)}"
        for _ in range(4):  # whichever worker answers the scrape, the sums are the same
            samples = parse(httpx.get(f"{base}/metrics", timeout=10).text)
            route = {"method": "GET", "route": "/api/products"}
            assert value(samples, "villager_http_requests_total", **route, status="200") == n
            assert value(samples, "villager_http_request_duration_seconds_count", **route) == n
            assert value(samples, "villager_orders_total", event="created") == 1
            assert value(samples, "villager_orders_total", event="cancelled") == 1
            assert value(samples, "villager_order_revenue_total", event="created") == pytest.approx(order["total"])
            assert value(samples, "villager_db_pool_max") == 4  # 2 connections per worker, summed
            assert value(samples, "villager_migration_phase", phase="migrated") == 1
            assert value(samples, "villager_db_connections") >= 2
            # each worker times its event loop's wake-ups (every 50 ms while it runs)
            assert value(samples, "villager_event_loop_lag_seconds_count") >= 2


DOM = """JSON.stringify(Object.fromEntries(Array.from(document.querySelectorAll('[data-testid]'))
  .map(e => [e.dataset.testid, e.dataset.points !== undefined ? Number(e.dataset.points) : e.dataset.value])))"""
CHARTS = ("chart-connections", "chart-p95", "chart-errors", "chart-cache", "chart-orders", "chart-revenue")


def _num(v: Any) -> str:
    """How the page writes a number into data-value (String(v) in JavaScript)."""
    if v is None:
        return ""
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


@pytest.mark.browser
def test_dashboard_in_headless_chromium(shop_db: ShopDb, redis_url: str, tmp_path: Path) -> None:
    binary = chromium_binary()
    if binary is None:
        pytest.skip("chromium is not installed (apt-get install chromium): the browser test needs it")
    # Samples slower than the page polls (2 s), so the page and the API agree on one sample within a poll.
    with serving(shop_db.url, redis_url, tmp_path, VILLAGER_MONITORING_INTERVAL_S="3",
                 VILLAGER_MONITORING_ORDERS_TTL_S="1") as base, \
            Chromium(binary) as browser:
        for i in range(10):
            httpx.get(f"{base}/api/products?limit={1 + i % 4}", timeout=10)
        place_and_cancel(base)
        # The sample taken when the order was placed may predate it: compare one taken afterwards.
        placed = int(httpx.get(f"{base}/api/monitoring/summary", timeout=10).json()["seq"])
        browser.navigate(f"{base}/dashboard")
        browser.wait_for("document.querySelector('[data-testid=fetch-state]')?.dataset.value === 'live'")
        browser.wait_for("Number(document.getElementById('chart-connections').dataset.points) >= 3"
                         " && Number(document.getElementById('chart-orders').dataset.points) === 24", timeout=45)
        deadline = time.monotonic() + 60
        while True:  # compare when the page shows the sample the API answers
            dom = json.loads(browser.evaluate(DOM))
            summary = httpx.get(f"{base}/api/monitoring/summary", timeout=10).json()
            if dom["seq"] == str(summary["seq"]) and int(summary["seq"]) > placed:
                break
            assert time.monotonic() < deadline, f"page stuck at sample {dom['seq']}, API at {summary['seq']}"
            time.sleep(0.2)
        for chart in CHARTS:
            assert dom[chart] >= 3, (chart, dom[chart])
        assert dom["overall-status"] == summary["status"]
        assert dom["connections"] == _num(summary["connections"]["value"])
        assert dom["connections-threshold"] == _num(summary["connections"]["threshold"])
        assert dom["connections-status"] == summary["connections"]["status"] == "OK"
        assert dom["pg-hit"] == _num(summary["pg_cache_hit"]["value"])
        assert dom["pg-hit-status"] == summary["pg_cache_hit"]["status"]
        assert dom["orders-last-hour"] == _num(summary["orders"]["last_hour"])
        assert dom["orders-today"] == _num(summary["orders"]["orders_today"])
        assert dom["revenue-today"] == _num(summary["orders"]["revenue_today"])
        assert dom["migration-phase"] == summary["migration"]["phase"] == "migrated"
        assert dom["migration-steps"] == _num(summary["migration"]["steps_done"])
        tables = summary["migration"]["backfill"]
        assert tables and all(dom[f"migration-rows-{b['step']}"] == _num(b["rows_done"]) for b in tables)
        assert dom["slow-count"] == ("" if not summary["slow_queries"]["available"]
                                     else _num(summary["slow_queries"]["count"]))
        # and the figures are the database's
        assert summary["orders"]["last_hour"] == shop_db.scalar(
            "SELECT count(*) FROM orders WHERE created_at >= now() - interval '1 hour'")
        browser.screenshot(ARTIFACTS / "dashboard.png")
    assert (ARTIFACTS / "dashboard.png").stat().st_size > 10_000
