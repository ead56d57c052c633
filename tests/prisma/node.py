"""The Node project under prisma/: installed from its lock once (npm ci), each schema's client
generated once per schema text, its TypeScript scripts run with tsx against a test database."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote

import psycopg

from tests.helpers import ROOT

PRISMA = ROOT / "prisma"
BIN = PRISMA / "node_modules" / ".bin"
SCHEMAS = {"legacy": "schema.prisma", "migrating": "schema-migrating.prisma", "normalized": "schema-normalized.prisma"}


def missing() -> str | None:
    """Why the Prisma tests cannot run here, or None."""
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (the Prisma tests need Node.js 20.19+ and npm)"
    version = subprocess.run(["node", "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
    major, minor = (int(x) for x in version.lstrip("v").split(".")[:2])
    if (major, minor) < (20, 19):
        return f"Node.js {version} is older than Prisma 7 needs (20.19)"
    return None


def node_url(conninfo: str) -> str:
    """A libpq connection string (key=value or URI) as the URI node-postgres reads: a Unix socket
    directory goes in `?host=`."""
    parts = psycopg.conninfo.conninfo_to_dict(conninfo)
    user = quote(str(parts.get("user") or "postgres"), safe="")
    password = f":{quote(str(parts['password']), safe='')}" if parts.get("password") else ""
    host, port = str(parts.get("host") or "localhost"), str(parts.get("port") or "5432")
    dbname = quote(str(parts.get("dbname") or "postgres"), safe="")
    if host.startswith("/"):
        return f"postgresql://{user}{password}@localhost:{port}/{dbname}?host={quote(host, safe='/')}"
    return f"postgresql://{user}{password}@{host}:{port}/{dbname}"


def env(database_url: str | None = None) -> dict[str, str]:
    """The CLI's schema engine is downloaded at its start from a host this machine cannot reach;
    generate and validate do not use it, so any executable stands in for it. No telemetry."""
    out = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    out.update(PRISMA_SCHEMA_ENGINE_BINARY=shutil.which("true") or "/bin/true", CHECKPOINT_DISABLE="1",
               PRISMA_HIDE_UPDATE_MESSAGE="1", NO_COLOR="1")
    if database_url:
        out["DATABASE_URL"] = node_url(database_url)
    return out


def install() -> None:
    """`npm ci` when node_modules is missing or older than the lock (as .ci/run does once)."""
    lock, installed = PRISMA / "package-lock.json", PRISMA / "node_modules" / ".package-lock.json"
    if installed.exists() and (BIN / "tsx").exists() and installed.stat().st_mtime >= lock.stat().st_mtime:
        return
    res = subprocess.run(["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund"], cwd=PRISMA, env=env(),
                         capture_output=True, text=True, timeout=600)
    if res.returncode != 0:
        raise RuntimeError(f"npm ci failed in {PRISMA}: {res.stderr[-2000:]}")


def generate() -> None:
    """`prisma generate` for each schema whose text (or the Prisma version) changed since its client was made."""
    version = json.loads((PRISMA / "package-lock.json").read_text())["packages"]["node_modules/prisma"]["version"]
    for name, schema in SCHEMAS.items():
        digest = hashlib.sha256((PRISMA / schema).read_bytes() + version.encode()).hexdigest()
        stamp = PRISMA / "generated" / name / ".schema-sha256"
        if stamp.exists() and stamp.read_text() == digest:
            continue
        res = prisma("generate", "--schema", schema)
        if res.returncode != 0:
            raise RuntimeError(f"prisma generate --schema {schema} failed: {res.stdout[-1500:]} {res.stderr[-1500:]}")
        stamp.write_text(digest)


def prisma(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The Prisma CLI of the project (its own version, from the lock)."""
    return subprocess.run([str(BIN / "prisma"), *args], cwd=PRISMA, env=env(), capture_output=True, text=True,
                          timeout=timeout)


def tsx(script: str, *args: str, database_url: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "tsx"), f"scripts/{script}", *args], cwd=PRISMA, env=env(database_url),
                          capture_output=True, text=True, timeout=timeout)


def tsx_json(script: str, *args: str, database_url: str, timeout: float = 120) -> Any:
    res = tsx(script, *args, database_url=database_url, timeout=timeout)
    assert res.returncode == 0, f"{script} failed: {res.stderr[-3000:]}"
    return json.loads(res.stdout.strip().splitlines()[-1])


class Running:
    """A script that works until its stdin is closed, then prints a JSON report as its last line."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.report: dict[str, Any] = {}

    def stop(self, timeout: float = 60) -> dict[str, Any]:
        out, err = self.proc.communicate(timeout=timeout)  # closes our end of its stdin first
        assert self.proc.returncode == 0, f"exit {self.proc.returncode}: {err[-3000:]}"
        self.report = json.loads(out.strip().splitlines()[-1])
        return self.report


@contextmanager
def running(script: str, *args: str, database_url: str) -> Iterator[Running]:
    """Start `script`, wait for its "ready" line; stop it (and read its report) when the block ends."""
    proc = subprocess.Popen([str(BIN / "tsx"), f"scripts/{script}", *args], cwd=PRISMA, env=env(database_url),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    handle = Running(proc)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # "ready", or EOF if it died
        if line.strip() != "ready":
            proc.kill()
            _, err = proc.communicate(timeout=30)
            raise AssertionError(f"{script} did not start: {line!r} {err[-3000:]}")
        yield handle
    finally:
        if proc.poll() is None and not handle.report:
            handle.stop()
