"""The live-writer loop every sample shares: each application (the old one writing the legacy
columns, the new one writing the normalized side) runs in its own thread and connection, one
transaction per write, and counts its errors. What each acknowledged write left is kept in a
ledger, row by row, so that afterwards every write reported done can be looked up in both forms.

Each application owns its rows (those it inserted, and the existing rows the sample assigns it), so
the expected final state of a row is the last one its application committed."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import psycopg

from villager_shop.core.db import connect

RowKey = tuple[str, Any]
STATEMENT_TIMEOUT = "SET LOCAL statement_timeout = '60s'"


class Ledger:
    """(table, key) -> the values the application last committed to that row (None: deleted).
    A write stages its expectations; they count only once its transaction has committed."""

    def __init__(self) -> None:
        self.rows: dict[RowKey, dict[str, Any] | None] = {}
        self.inserted: dict[str, list[Any]] = {}
        self._staged: list[tuple[RowKey, dict[str, Any] | None, bool]] = []

    def expect(self, table: str, key: Any, *, inserted: bool = False, **values: Any) -> None:
        self._staged.append(((table, key), values, inserted))

    def gone(self, table: str, key: Any) -> None:
        self._staged.append(((table, key), None, False))

    def mine(self, rng: random.Random, table: str) -> Any | None:
        """One live row this application inserted, or None."""
        rows = self.inserted.get(table)
        return rng.choice(rows) if rows else None

    def commit(self) -> None:
        for (table, key), values, inserted in self._staged:
            if values is None:
                self.rows[(table, key)] = None
                if key in self.inserted.get(table, []):
                    self.inserted[table].remove(key)
                continue
            before = self.rows.get((table, key)) or {}
            self.rows[(table, key)] = {**before, **values}
            if inserted:
                self.inserted.setdefault(table, []).append(key)
        self._staged.clear()

    def discard(self) -> None:
        self._staged.clear()


Op = Callable[[psycopg.Connection[Any], random.Random, Ledger], str]
"""One write inside an open transaction; returns its kind ('skipped' when it found nothing to do)."""


def delete_own(table: str, key: str, kind: str) -> Op:
    """A write that deletes a row this application inserted (never another's: its ledger would lie)."""

    def delete(conn: psycopg.Connection[Any], rng: random.Random, ledger: Ledger) -> str:
        row = ledger.mine(rng, table)
        if row is None:
            return "skipped"
        conn.execute(f"DELETE FROM {table} WHERE {key} = %s", (row,))
        ledger.gone(table, row)
        return kind

    return delete


@dataclass(frozen=True)
class App:
    name: str
    ops: tuple[tuple[Op, int], ...]  # each write with its weight
    ready: Callable[[psycopg.Connection[Any]], bool] = lambda conn: True


@dataclass
class Stats:
    ops: int = 0
    errors: int = 0
    skipped: int = 0
    error_samples: list[str] = field(default_factory=list)
    by_kind: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Probe:
    """How to read rows of one table in both forms: `sql` takes %(keys)s (an array) and returns
    a column k (the key) and the fields a ledger names; `agree`: pairs of fields that must be
    equal in every row (a legacy value and its normalized counterpart)."""

    sql: str
    agree: tuple[tuple[str, str], ...] = ()


class LiveWriter:
    """Runs the applications until stop(); `url` is the database they write to."""

    def __init__(self, url: str, apps: Iterable[App], *, seed: int = 1, pause_s: float = 0.002) -> None:
        self.url, self.apps, self.seed, self.pause_s = url, list(apps), seed, pause_s
        self.stats = {a.name: Stats() for a in self.apps}
        self.ledgers = {a.name: Ledger() for a in self.apps}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> LiveWriter:
        for i, app in enumerate(self.apps):
            t = threading.Thread(target=self._loop, args=(app, random.Random(self.seed * 1000 + i)),
                                 name=f"sample-{app.name}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> dict[str, Stats]:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=60)
        return self.stats

    def __enter__(self) -> LiveWriter:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _connect(self, app: App) -> psycopg.Connection[Any]:
        return connect(self.url, autocommit=True, application_name=f"sample-{app.name}")

    def _loop(self, app: App, rng: random.Random) -> None:
        stats, ledger = self.stats[app.name], self.ledgers[app.name]
        ops, weights = [o for o, _ in app.ops], [w for _, w in app.ops]
        conn = self._connect(app)
        ready = False
        try:
            while not self._stop.is_set():
                try:
                    if not ready:
                        ready = app.ready(conn)
                        if not ready:
                            time.sleep(0.05)
                            continue
                    op = rng.choices(ops, weights)[0]
                    with conn.transaction():
                        # Local to the transaction: `url` may be a transaction pooler's, whose server
                        # connection goes on to other clients with whatever a session SET leaves.
                        conn.execute(STATEMENT_TIMEOUT)
                        kind = op(conn, rng, ledger)
                    ledger.commit()
                    if kind == "skipped":
                        stats.skipped += 1
                    else:
                        stats.ops += 1
                        stats.by_kind[kind] = stats.by_kind.get(kind, 0) + 1
                except psycopg.Error as exc:
                    ledger.discard()
                    stats.errors += 1
                    if len(stats.error_samples) < 20:
                        stats.error_samples.append(f"{type(exc).__name__}: {str(exc).strip().splitlines()[0]}")
                    if conn.closed or conn.broken:
                        conn = self._connect(app)
                time.sleep(self.pause_s)
        finally:
            conn.close()

    def confirm(self, conn: psycopg.Connection[Any], probes: Mapping[str, Probe]) -> list[str]:
        """Every acknowledged write, looked up: a deleted row is gone; a live row holds the values
        last written, and its legacy and normalized forms agree. The problems found (none: all there)."""
        problems: list[str] = []
        for name, ledger in self.ledgers.items():
            by_table: dict[str, dict[Any, dict[str, Any] | None]] = {}
            for (table, key), values in ledger.rows.items():
                by_table.setdefault(table, {})[key] = values
            for table, expected in by_table.items():
                probe = probes[table]
                cur = conn.cursor(row_factory=psycopg.rows.dict_row)
                found = {r["k"]: r for r in cur.execute(probe.sql, {"keys": list(expected)})}
                for key, values in expected.items():
                    row = found.get(key)
                    if values is None:
                        if row is not None:
                            problems.append(f"{name}: {table} {key} was deleted but is there")
                        continue
                    if row is None:
                        problems.append(f"{name}: {table} {key} is missing")
                        continue
                    problems += [f"{name}: {table} {key}: {f} is {row[f]!r}, written {v!r}"
                                 for f, v in values.items() if row[f] != v]
                    problems += [f"{name}: {table} {key}: {a} {row[a]!r} but {b} {row[b]!r}"
                                 for a, b in probe.agree if row[a] != row[b]]
        return problems

    def summary(self) -> dict[str, Any]:
        return {n: {"ops": s.ops, "errors": s.errors, "skipped": s.skipped, "by_kind": s.by_kind,
                    "error_samples": s.error_samples} for n, s in self.stats.items()}
