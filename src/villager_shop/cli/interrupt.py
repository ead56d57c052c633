"""What Ctrl-C says: where the command stopped, and how to go on or undo.

The commands that change something keep their progress where a later run finds it (the migration
in schema `villager_migration`, a restore or rehearsal in database names), so the hint for them is
read from there after the interrupt, on a fresh connection of its own (the command's connections
may be closed or mid-statement), bounded in time: an operator who pressed Ctrl-C must not wait for
a server that does not answer. When that fails, a hint that needs no database.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import psycopg

LOOKUP_TIMEOUT_S = 5.0
PROCESS_STARTED = time.time()

RUN = "`villager-shop migrate run`"
ROLLBACK = "`villager-shop migrate rollback --yes`"
COMPLETE = "`villager-shop migrate complete --yes`"


_told: list[str] = []


def tell(where: str) -> None:
    """What Ctrl-C interrupted, said by a command that knows it best (the demo: at which stage, and
    what it removed on the way out): ` during …` or `: …`, used instead of the hints below."""
    _told[:] = [where]


def where_stopped(args: list[str]) -> str:
    """The text after `interrupted` for the command line `args`: ` during …` or `: …`."""
    if _told:
        return _told[-1]
    path, rest = _command_path(args)
    hint = _HINTS.get(" ".join(path[:2])) or _HINTS.get(" ".join(path[:1]))
    if hint is None:
        shown = " ".join(path) or "the command"
        return f": `villager-shop {shown}` stopped before it finished; run it again"
    return hint(rest)


def _command_path(args: list[str]) -> tuple[list[str], list[str]]:
    """(the command's names, e.g. ['migrate', 'run']; its remaining positional arguments)."""
    import typer

    from villager_shop.cli.main import app

    words = [a for a in args if not a.startswith("-")]
    node: Any = typer.main.get_command(app)
    path: list[str] = []
    while words and hasattr(node, "commands") and words[0] in node.commands:
        node = node.commands[words[0]]
        path.append(words.pop(0))
    return path, words


def _bounded(lookup: Callable[[], str | None]) -> str | None:
    """`lookup()`, or None when it fails or takes longer than LOOKUP_TIMEOUT_S: in a daemon thread,
    since a connect or a query may hang on a server in trouble and the process must still end."""
    found: list[str | None] = []

    def run() -> None:
        try:
            found.append(lookup())
        except Exception:
            found.append(None)

    thread = threading.Thread(target=run, name="interrupt hint", daemon=True)
    thread.start()
    try:
        thread.join(LOOKUP_TIMEOUT_S)
    except KeyboardInterrupt:  # pressed again: no more waiting
        return None
    return found[0] if found else None


def _read_only(url: str) -> psycopg.Connection[Any]:
    """A connection for one short read-only transaction (timeouts transaction-local: a pooler's
    server connection goes back clean)."""
    from villager_shop.core.db import connect

    conn = connect(url, connect_timeout=3, application_name="villager-shop interrupted")
    conn.execute("SET LOCAL statement_timeout = 3000")
    conn.execute("SET LOCAL lock_timeout = 1000")
    return conn


def _shop_url() -> str:
    from villager_shop.core.config import get_settings
    from villager_shop.embedded import database_url

    return database_url(get_settings())


# --- the migration ----------------------------------------------------------------------------------

def _migration(read: Callable[[psycopg.Connection[Any]], str]) -> Callable[[], str | None]:
    def lookup() -> str | None:
        conn = _read_only(_shop_url())
        try:
            return read(conn)
        finally:
            conn.close()

    return lookup


def _running_step(conn: psycopg.Connection[Any]) -> str | None:
    """`step NAME (42 % of TABLE)` for the step(s) the run was in, from the recorded state."""
    from villager_shop.migration import state
    from villager_shop.migration.status import status

    rows = [r for r in state.steps(conn) if r.status in ("running", "interrupted", "failed") and r.started_at is not None]
    if not rows:
        return None
    latest = max(r.started_at for r in rows if r.started_at is not None)
    names = [r.name for r in rows if r.started_at == latest or r.status == "running"]
    st = status(conn)
    detail = ""
    backfill = {b["step"]: b for b in st["backfill"]}
    stages = {s["name"]: s.get("stage") for s in st["steps"]}
    if names[0] in backfill and not backfill[names[0]]["finished"]:
        b = backfill[names[0]]
        detail = f" ({b['percent']:.0f} % of {b['table']})"
    elif stages.get(names[0]):
        detail = f" ({stages[names[0]]})"
    more = f" and {len(names) - 1} more beside it" if len(names) > 1 else ""
    return f"step {names[0]}{detail}{more}"


def _after_run(conn: psycopg.Connection[Any]) -> str:
    from villager_shop.migration import state

    if not state.schema_exists(conn):
        return f" before the migration started: nothing was changed; run {RUN} to start it"
    phase = state.phase(conn)
    if phase == "migrated":
        return ": the run had finished (phase migrated); next: `villager-shop migrate verify`"
    step = _running_step(conn)
    if step:
        where = f" during {step}"
    else:  # between two steps
        done = [r for r in state.steps(conn) if r.status == "done" and r.finished_at is not None]
        last = max(done, key=lambda r: r.finished_at or 0, default=None)
        where = f" after step {last.name}" if last else f" in phase {phase}"
    return f"{where}: nothing is lost; run {RUN} to resume, or {ROLLBACK} to undo"


def _after_rollback(conn: psycopg.Connection[Any]) -> str:
    from villager_shop.migration import state

    phase = state.phase(conn) if state.schema_exists(conn) else "not_started"
    if phase == "rolling_back":
        return f" during the rollback: run {ROLLBACK} again to finish it ({RUN} is refused until then)"
    if phase == "rolled_back":
        return ": the rollback had finished; the database is on the legacy schema"
    return f" before the rollback changed anything (phase {phase}): run {ROLLBACK} to roll back"


def _after_complete(conn: psycopg.Connection[Any]) -> str:
    from villager_shop.migration import state

    phase = state.phase(conn) if state.schema_exists(conn) else "not_started"
    if phase == "completed":
        return ": the migration had completed (legacy columns dropped)"
    legacy = conn.execute("SELECT count(*) FROM pg_attribute WHERE attrelid = to_regclass('public.products')"
                          " AND attname = 'price' AND NOT attisdropped").fetchone()
    if phase == "completing" and legacy and not legacy[0]:
        return f" after the legacy columns were dropped: run {COMPLETE} again to finish"
    return (f" before the legacy columns were dropped (phase {'migrated' if phase == 'completing' else phase}):"
            f" nothing is lost; run {COMPLETE} again when ready, or {ROLLBACK} to go back")


def _migrate(read: Callable[[psycopg.Connection[Any]], str], fallback: str) -> Callable[[list[str]], str]:
    return lambda _rest: _bounded(_migration(read)) or fallback


# --- backups, restore, rehearsal, generator ---------------------------------------------------------

def _backup_create(_rest: list[str]) -> str:
    return ": no backup was recorded (the partial dump is removed); run `villager-shop backup create` again"


def _backup_verify(rest: list[str]) -> str:
    backup_id = rest[0] if rest else "ID"
    return (f": backup {backup_id} was not verified (the scratch database is dropped, or emptied when"
            f" VILLAGER_SCRATCH_URL named it, on the way out); run `villager-shop backup verify {backup_id}` again")


_BEFORE = re.compile(r"_before_restore_(\d{8}_\d{6})$")


def _restore(rest: list[str]) -> str:
    backup_id = rest[0] if rest else "ID"
    again = f"run `villager-shop restore {backup_id}` again"

    def lookup() -> str | None:
        from villager_shop.core.urls import dbname_of, with_dbname
        from villager_shop.safety.restore import MAINTENANCE_DB

        url = _shop_url()
        live = dbname_of(url)
        conn = _read_only(with_dbname(url, MAINTENANCE_DB))
        try:
            names = [str(r[0]) for r in conn.execute(
                "SELECT datname FROM pg_database WHERE starts_with(datname, %s)", (live,)).fetchall()]
        finally:
            conn.close()
        started = datetime.fromtimestamp(PROCESS_STARTED, UTC).strftime("%Y%m%d_%H%M%S")
        swapped = [n for n in names if (m := _BEFORE.search(n)) and m.group(1) >= started]
        if swapped:
            return f": the restore had finished: {live} is backup {backup_id}, the previous database kept as {swapped[-1]}"
        return f" before {live} was replaced: it is untouched (the partial copy is dropped on the way out); {again}"

    return _bounded(lookup) or (f": {again}; the live database is replaced only by the final rename (one"
                                f" transaction), so it is either untouched or fully restored")


def _rehearse(_rest: list[str]) -> str:
    return (": production was only read; the staging database is dropped (or emptied) on the way out unless"
            " --keep; run `villager-shop rehearse` again")


def _generate(_rest: list[str]) -> str:
    return ": nothing was written (the load is one transaction); run `villager-shop generate` again"


def _demo(_rest: list[str]) -> str:
    return ": `villager-shop demo` starts over from a new villager_demo database when run again"


_HINTS: dict[str, Callable[[list[str]], str]] = {
    "migrate run": _migrate(_after_run, f": the migration keeps its progress in the database, nothing is lost; run"
                                        f" {RUN} to resume (`villager-shop migrate status` shows where it stopped),"
                                        f" or {ROLLBACK} to undo"),
    "migrate rollback": _migrate(_after_rollback, f": run {ROLLBACK} again; it finishes an interrupted rollback"
                                                  " (`villager-shop migrate status` shows the phase)"),
    "migrate complete": _migrate(_after_complete, f": run {COMPLETE} again; the legacy columns are dropped in one"
                                                  f" transaction, so they are either all there ({ROLLBACK} still"
                                                  " possible) or gone"),
    "backup create": _backup_create,
    "backup verify": _backup_verify,
    "restore": _restore,
    "rehearse": _rehearse,
    "generate": _generate,
    "demo": _demo,
}
