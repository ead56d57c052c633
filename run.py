#!/usr/bin/env python3
"""The two README commands, needing nothing but Python and pip.

    python3 run.py demo   # set up .venv, start embedded servers, run the whole demo
    python3 run.py test   # set up .venv, run the test suite (embedded servers unless DATABASE_URL/REDIS_URL)
    python3 run.py lint   # ruff + mypy
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
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
    """Run `cmd` and return its exit code, waiting for it however it is stopped.

    Ctrl-C in a terminal reaches the command as well as run.py (one process group): the command
    shuts down on its own and run.py waits for it, printing nothing. A SIGINT or SIGTERM sent to
    run.py alone (`kill`, a supervisor) is passed on once. A command ended by a signal exits
    128 + its number, as a shell reports it."""
    proc = subprocess.Popen(cmd, cwd=ROOT)

    def pass_on(signum: int, _frame: object) -> None:
        if signum == signal.SIGINT and _terminal_interrupts_us():
            return  # the terminal sent it to the command too
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signum)

    previous = {sig: signal.signal(sig, pass_on) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 128 - code if code < 0 else code


def _terminal_interrupts_us() -> bool:
    """Whether run.py's process group is the foreground of its terminal, where Ctrl-C goes to all."""
    for stream in (sys.stdin, sys.stdout, sys.stderr):
        try:
            if stream is not None and stream.isatty():
                return os.tcgetpgrp(stream.fileno()) == os.getpgrp()
        except (OSError, ValueError):
            continue
    return False


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
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:  # Ctrl-C while setting up .venv: one line, as the CLI says it
        print("interrupted: run.py stopped before the command started; run it again", file=sys.stderr)
        sys.exit(130)
