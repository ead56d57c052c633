"""ApacheBench runs: the guide's `ab -n 1000 -c 10`, and the cached listing against the ceiling in
alternating rounds."""

from __future__ import annotations

import csv
import re
import shutil
import statistics
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from villager_shop.core.errors import VillagerError


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
