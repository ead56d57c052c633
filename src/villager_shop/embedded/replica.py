"""A throwaway primary and streaming standby of a given PostgreSQL version, for the tests and
`bench … --replica`.

The binaries are those of the server the caller names (`pg_config`'s BINDIR, read over SQL), so the
embedded 18, a system 15 and an old 13 each get a pair of their own version. The primary is a fresh
cluster in a temporary folder (the server named is left as it is: its configuration is not ours to
change); the standby is `pg_basebackup -R` of it, streaming over TCP on another port. Run as root,
both run as an unprivileged user (initdb refuses root)."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
from psycopg.conninfo import make_conninfo

from villager_shop.embedded.postgres import bin_dir as embedded_bin_dir


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bindir_of(server_url: str) -> Path | None:
    """The folder of the binaries that server runs (None when they cannot be found: pg_config is
    for superusers, and a server elsewhere has its binaries elsewhere)."""
    candidates: list[Path] = []
    with contextlib.suppress(psycopg.Error), psycopg.connect(server_url) as conn:
        major = conn.info.server_version // 10000
        # A server on this machine: the executable its backend runs (relocated builds report a
        # BINDIR of the machine they were built on).
        pid = conn.execute("SELECT pg_backend_pid()").fetchone()
        with contextlib.suppress(OSError, TypeError):
            candidates.append(Path(os.path.realpath(f"/proc/{pid[0]}/exe")).parent)  # type: ignore[index]
        with contextlib.suppress(psycopg.Error), conn.transaction():
            row = conn.execute("SELECT setting FROM pg_config WHERE name = 'BINDIR'").fetchone()
            if row:
                candidates.append(Path(row[0]))
        candidates.append(Path(f"/usr/lib/postgresql/{major}/bin"))
        with contextlib.suppress(ImportError):
            candidates.append(embedded_bin_dir())
        for path in candidates:
            pg = path / "postgres"
            if not (pg.exists() and (path / "pg_basebackup").exists() and (path / "initdb").exists()):
                continue
            out = subprocess.run([str(pg), "--version"], capture_output=True, text=True, check=False).stdout
            if f" {major}." in out or f" {major}beta" in out:
                return path
    return None


def _as_user() -> str | None:
    if os.geteuid() != 0:
        return None
    for name in ("embedded_postgres", "villager_ci", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    return None


class StreamingPair:
    """`primary_url(db)` / `standby_url(db)`; `pause_replay()` / `resume_replay()` make lag on demand."""

    def __init__(self, bindir: Path, *, durable: bool = False) -> None:
        self.bindir, self.durable = bindir, durable
        self.root = Path(tempfile.mkdtemp(prefix="villager-repl-"))
        self.root.chmod(0o777)
        self.user = _as_user()
        self.primary_port, self.standby_port = _free_port(), _free_port()
        self.primary_dir, self.standby_dir = self.root / "primary", self.root / "standby"

    def _run(self, *args: str, timeout: float = 120) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C.UTF-8"
        with tempfile.TemporaryFile("w+") as out:
            proc = subprocess.run([str(self.bindir / args[0]), *args[1:]], stdout=out, stderr=subprocess.STDOUT,
                                  user=self.user, env=env, cwd="/", timeout=timeout, check=False)
            if proc.returncode != 0:
                out.seek(0)
                raise RuntimeError(f"{args[0]} failed: {out.read()[-2000:]}")

    def _conf(self, datadir: Path, port: int) -> None:
        with (datadir / "postgresql.conf").open("a") as f:
            f.write(f"\nport = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{self.root}'\n"
                    "wal_level = replica\nmax_wal_senders = 8\nhot_standby = on\nhot_standby_feedback = on\n"
                    f"max_connections = 100\nlc_messages = 'C'\n"
                    # Tests want speed; a benchmark the settings of a server that keeps its data.
                    + ("shared_buffers = 256MB\nmax_wal_size = 4GB\ncheckpoint_timeout = 15min\n" if self.durable
                       else "shared_buffers = 64MB\nfsync = off\n"))

    def start(self) -> StreamingPair:
        self.primary_dir.mkdir()
        if self.user:
            shutil.chown(self.primary_dir, self.user)
        self._run("initdb", "-D", str(self.primary_dir), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                  "--locale=C.UTF-8" if self._has_c_utf8() else "--locale=C")
        self._conf(self.primary_dir, self.primary_port)
        with (self.primary_dir / "pg_hba.conf").open("a") as f:
            f.write("host replication all 127.0.0.1/32 trust\n")
        self._run("pg_ctl", "-D", str(self.primary_dir), "-l", str(self.root / "primary.log"), "-w", "start")
        self._run("pg_basebackup", "-h", "127.0.0.1", "-p", str(self.primary_port), "-U", "postgres",
                  "-D", str(self.standby_dir), "-R", "-X", "stream", "-c", "fast")
        with (self.standby_dir / "postgresql.conf").open("a") as f:
            f.write(f"\nport = {self.standby_port}\n")
        self._run("pg_ctl", "-D", str(self.standby_dir), "-l", str(self.root / "standby.log"), "-w", "start")
        self.wait_streaming()
        return self

    def _has_c_utf8(self) -> bool:
        return subprocess.run(["locale", "-a"], capture_output=True, text=True, check=False).stdout.lower().count(
            "c.utf8") > 0

    def primary_url(self, dbname: str = "postgres") -> str:
        return make_conninfo("", host="127.0.0.1", port=str(self.primary_port), user="postgres", dbname=dbname)

    def standby_url(self, dbname: str = "postgres") -> str:
        return make_conninfo("", host="127.0.0.1", port=str(self.standby_port), user="postgres", dbname=dbname)

    def wait_streaming(self, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        with psycopg.connect(self.primary_url(), autocommit=True) as conn:
            while time.monotonic() < deadline:
                if conn.execute("SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'").fetchone() == (1,):
                    return
                time.sleep(0.1)
        raise RuntimeError("the standby is not streaming")

    def wait_caught_up(self, timeout_s: float = 30) -> None:
        """Until the standby has replayed everything the primary has written so far."""
        with psycopg.connect(self.primary_url(), autocommit=True) as p:
            target = p.execute("SELECT pg_current_wal_lsn()").fetchone()[0]  # type: ignore[index]
        deadline = time.monotonic() + timeout_s
        with psycopg.connect(self.standby_url(), autocommit=True) as s:
            while time.monotonic() < deadline:
                if s.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (target,)).fetchone() == (True,):
                    return
                time.sleep(0.05)
        raise RuntimeError("the standby did not catch up")

    def pause_replay(self) -> None:
        with psycopg.connect(self.standby_url(), autocommit=True) as s:
            s.execute("SELECT pg_wal_replay_pause()")

    def resume_replay(self) -> None:
        with psycopg.connect(self.standby_url(), autocommit=True) as s:
            s.execute("SELECT pg_wal_replay_resume()")

    def stop_standby(self, mode: str = "immediate") -> None:
        self._run("pg_ctl", "-D", str(self.standby_dir), "-m", mode, "-w", "stop")

    def start_standby(self) -> None:
        self._run("pg_ctl", "-D", str(self.standby_dir), "-l", str(self.root / "standby.log"), "-w", "start")

    def stop(self) -> None:
        for d in (self.standby_dir, self.primary_dir):
            if (d / "postmaster.pid").exists():
                with contextlib.suppress(Exception):
                    self._run("pg_ctl", "-D", str(d), "-m", "immediate", "-w", "stop", timeout=30)
        shutil.rmtree(self.root, ignore_errors=True)
