"""A server the benchmark starts and stops: the shop service or the ceiling, in a process group of
its own so that stopping it ends its workers too, and a port for it."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from villager_shop.core.errors import VillagerError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str, timeout: float = 2.0) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            resp.read()
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


class Server:
    """A server in its own process group; `stop()` ends the whole group (uvicorn's workers too)."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], port: int, ready_path: str,
                 log: Path) -> None:
        self.name, self.argv, self.env, self.port, self.ready_path, self.log = name, argv, env, port, ready_path, log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 90, settle_s: float = 1.0) -> Server:
        """Returns once `ready_path` answers 200, and `settle_s` later (the other workers' startup)."""
        with open(self.log, "wb") as fh:
            self.proc = subprocess.Popen(self.argv, env=self.env, stdout=fh, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = self.log.read_text(errors="replace").strip().splitlines()[-3:]
                raise VillagerError(f"{self.name} exited with {self.proc.returncode}: {' | '.join(tail)}")
            if _get(self.base + self.ready_path, timeout=1) == 200:
                time.sleep(settle_s)
                return self
            time.sleep(0.2)
        self.stop()
        raise VillagerError(f"{self.name} did not become ready in {timeout_s:.0f}s (log: {self.log})")

    def stop(self) -> None:
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
        with contextlib.suppress(ProcessLookupError):  # a worker that outlived its parent
            os.killpg(proc.pid, signal.SIGKILL)

    def warnings(self, limit: int = 5) -> dict[str, Any]:
        """Count and first distinct WARNING/ERROR lines of its log (e.g. the cache's breaker opening)."""
        lines = [ln.strip() for ln in self.log.read_text(errors="replace").splitlines()
                 if re.search(r"\b(WARNING|ERROR|CRITICAL|Traceback)\b", ln)] if self.log.exists() else []
        distinct: list[str] = []
        for ln in lines:
            short = re.sub(r"\d+(\.\d+)?", "N", ln)[:200]
            if short not in distinct:
                distinct.append(short)
        return {"count": len(lines), "first": distinct[:limit]}

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()
