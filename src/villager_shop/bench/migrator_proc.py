"""`migrate run` as a user runs it, in a process of its own, so that its peak memory is its own:
the benchmark's writers and generator live in the parent, and `RUSAGE_CHILDREN` would mix every
child the parent ever waited for. `os.wait4` gives the one child's resource usage."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from typing import Any

from villager_shop.core.errors import VillagerError


@dataclass(frozen=True)
class MigratorRun:
    summary: dict[str, Any]
    peak_rss_mb: float  # the migrator process's high-water resident set (VmHWM)


def run_migrator(url: str, strategy: str, pooled_url: str | None = None,
                 extra_env: dict[str, str] | None = None, plan: str | None = None) -> MigratorRun:
    """DATABASE_URL the pooler where one is measured, the migration itself on the direct URL. The
    output goes to files, not pipes: nothing in this process has to keep reading while it runs."""
    env = {**os.environ, "DATABASE_URL": pooled_url or url, "DATABASE_DIRECT_URL": url, **(extra_env or {})}
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([sys.executable, "-m", "villager_shop", "migrate", "run", "--strategy", strategy,
                                 *(["--plan", plan] if plan else []), "--json"], env=env, stdout=out, stderr=err, text=True)
        _pid, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0:
        raise VillagerError(f"migrate run --strategy {strategy} failed: {stderr.strip().splitlines()[-1:]}")
    # Linux reports ru_maxrss in kilobytes.
    return MigratorRun(dict(json.loads(stdout)), round(usage.ru_maxrss / 1024, 1))
