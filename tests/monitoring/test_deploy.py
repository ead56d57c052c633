"""deploy/: the alert rules are valid (promtool when installed) and every expression of the rules
and of the Grafana dashboard names only metrics that /metrics exposes."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import uuid

import pytest
import yaml

from tests.api.conftest import ASHA, BALA, RADIO, ShopDb, make_config, start_api
from tests.helpers import ROOT

pytestmark = pytest.mark.anyio

DEPLOY = ROOT / "deploy"
NAME = re.compile(r"\bvillager_[a-z0-9_]+")


def rule_expressions() -> list[str]:
    rules = yaml.safe_load((DEPLOY / "alerts.yml").read_text())
    return [r["expr"] for g in rules["groups"] for r in g["rules"]]


def grafana_expressions() -> list[str]:
    dash = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    return [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]


def test_alert_rules_cover_the_guide_thresholds() -> None:
    exprs = " ".join(rule_expressions())
    assert "villager_db_connections_threshold" in exprs  # connections > 80 % of max_connections
    assert "villager_db_cache_hit_ratio) < 0.90" in exprs
    assert 'status=~"5.."' in exprs and "histogram_quantile(0.95" in exprs
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    assert config["rule_files"] == ["alerts.yml"]
    assert config["scrape_configs"][0]["metrics_path"] == "/metrics"


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (apt-get install prometheus)")
def test_promtool_accepts_rules_and_config() -> None:
    for args in (["check", "rules", "alerts.yml"], ["check", "config", "prometheus.yml"]):
        done = subprocess.run(["promtool", *args], cwd=DEPLOY, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr


async def test_rules_and_dashboard_name_only_exposed_metrics(shop_db: ShopDb, redis_url: str) -> None:
    async for api in start_api(make_config(shop_db.url, redis_url)):
        page = (await api.client.get(f"/api/products/{RADIO}")).json()
        variant = next(v for v in page["variants"] if v["is_default"])["id"]
        await api.client.get("/api/products?limit=2")
        await api.client.get("/api/products?limit=2")
        r = await api.client.post("/api/orders", headers=await api.auth(BALA),
                                  json={"items": [{"variant_id": variant, "quantity": 1}]})
        assert r.status_code == 201
        await api.client.patch(f"/api/orders/{r.json()['id']}", headers=await api.auth(ASHA),
                               json={"status": "cancelled"})
        await api.client.get(f"/api/orders/{uuid.uuid4()}")
        text = (await api.client.get("/metrics")).text
    exposed = {line.split("{")[0].split(" ")[0] for line in text.splitlines()
               if line.startswith("villager_")}
    used = {n for e in rule_expressions() + grafana_expressions() for n in NAME.findall(e)}
    assert used, "no expressions found"
    assert used <= exposed, f"not exposed by /metrics: {sorted(used - exposed)}"
    # the dashboard has the guide's panels
    titles = " ".join(p["title"] for p in json.loads((DEPLOY / "grafana-dashboard.json").read_text())["panels"])
    for word in ("Connections", "p95", "Error rate", "Cache hit", "Orders per hour", "Revenue per day",
                 "Slow", "Migration", "Backfill"):
        assert word in titles, word
