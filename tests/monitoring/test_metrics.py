"""The cache counters, in one process and summed over several (prometheus multiprocess mode)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.helpers import ROOT

CHILD = """
from villager_shop.monitoring import metrics
metrics.CACHE_HITS.labels("catalog").inc(3)
metrics.CACHE_ERRORS.labels("get").inc()
"""
READER = """
from villager_shop.monitoring import metrics
text, ctype = metrics.render()
print(metrics.sample("villager_cache_hits_total", {"scope": "catalog"}),
      metrics.sample("villager_cache_errors_total", {"operation": "get"}), ctype.split(";")[0])
"""


def test_counters_of_several_workers_are_summed(tmp_path: Path) -> None:
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    for _ in range(2):  # two "workers"
        subprocess.run([sys.executable, "-c", CHILD], env=env, cwd=ROOT, check=True)
    out = subprocess.run([sys.executable, "-c", READER], env=env, cwd=ROOT, check=True, capture_output=True,
                         text=True).stdout.split()
    assert out == ["6.0", "2.0", "text/plain"]


def test_counters_in_one_process() -> None:
    from villager_shop.monitoring import metrics

    before = metrics.sample("villager_cache_misses_total", {"scope": "test"})
    metrics.CACHE_MISSES.labels("test").inc()
    assert metrics.sample("villager_cache_misses_total", {"scope": "test"}) == before + 1
    assert b"villager_cache_misses_total" in metrics.render()[0]
