#!/usr/bin/env python3
"""The two README commands, needing nothing but Python and pip.

    python3 run.py demo   # set up .venv, start embedded servers, run the whole demo
    python3 run.py test   # set up .venv, run the test suite (embedded servers unless DATABASE_URL/REDIS_URL)
    python3 run.py lint   # ruff + mypy
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / "bin"
STAMP = VENV / ".villager-installed"


def ensure_venv() -> None:
    """Create .venv and install the project with its dev extras; re-install when pyproject changes."""
    want = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == want and (BIN / "villager-shop").exists():
        return
    if not (BIN / "python").exists():
        print("creating .venv …", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    print("installing villager-shop and its dependencies into .venv …", flush=True)
    subprocess.run(
        [str(BIN / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "-e", f"{ROOT}[dev]"],
        check=True,
    )
    STAMP.write_text(want)


def run(cmd: list[str]) -> int:
    return subprocess.run(cmd, cwd=ROOT, check=False).returncode


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"demo", "test", "lint", "setup"}:
        print(__doc__)
        return 2
    what, rest = argv[0], argv[1:]
    ensure_venv()
    os.environ.setdefault("PYTHONWARNINGS", "ignore::Warning:platformdirs")
    if what == "setup":
        return 0
    if what == "demo":
        return run([str(BIN / "villager-shop"), "demo", *rest])
    if what == "lint":
        code = run([str(BIN / "ruff"), "check", "src", "tests", "run.py"])
        code |= run([str(BIN / "mypy")])
        return code
    code = run([str(BIN / "python"), "-m", "pytest", *rest])
    if code == 5:
        print("run.py: pytest collected no tests; that is a failure", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
