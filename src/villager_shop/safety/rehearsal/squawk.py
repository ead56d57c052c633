"""The plan's SQL linted by squawk: a finding is a NO-GO reason, a missing squawk only a note."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any


def squawk_binary() -> str | None:
    beside = Path(sys.executable).parent / "squawk"
    if beside.is_file():
        return str(beside)
    return shutil.which("squawk")


def run_squawk(script: str) -> dict[str, Any]:
    """Lint the plan's SQL; never fails the rehearsal itself (absent squawk is reported as such)."""
    exe = squawk_binary()
    if exe is None:
        return {"available": False, "ok": None, "detail": "squawk not found beside the interpreter nor on PATH;"
                " install the dev extra (squawk-cli) to lint the plan", "output": []}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "migrate-plan.sql"
        path.write_text(script, encoding="utf-8")
        try:
            res = subprocess.run([exe, "--reporter", "gcc", str(path)], capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return {"available": False, "ok": None, "detail": f"squawk could not run: {exc}", "output": []}
    output = [ln.replace(str(path), "plan.sql") for ln in (res.stdout + res.stderr).splitlines() if ln.strip()]
    ok = res.returncode == 0
    return {"available": True, "ok": ok, "binary": exe, "exit_code": res.returncode,
            "detail": "no problems found in `migrate plan --sql`" if ok else
            f"{len(output)} line(s) of findings on `migrate plan --sql`", "output": output[:40]}
