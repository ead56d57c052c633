"""The closed loop between the migration and what production feels.

Between batches (and before each step), the walkers ask `Throttle.before_batch()`. It holds them
while any signal is over its limit, and while the operator has paused the run:
- replay lag of every standby in `pg_stat_replication`, by time and by bytes. The time is measured
  here, not taken from `replay_lag`: that column is only refreshed when a standby replays past a
  sampled position, so it stays frozen while replay is paused. The throttle samples
  `pg_current_wal_lsn()` at each check; a standby whose replay position is below a sample taken at
  time t lags at least now - t. Its replies are kept fresh while held: the state row written at
  each check is new WAL, and a standby answers new WAL with its replay position;
- WAL written per second (optional limit), the archiver's backlog of segments not yet archived,
  and autovacuum working on the table being walked (GitLab's batched migrations pause on these);
- a standby seen earlier that disappeared: waited for `standby_timeout_s`, then the run goes on
  and says so (it cannot hold production's migration hostage forever).

Runtime control lives in the database (`villager_migration.state`, key `control`), so `migrate
pause | resume | throttle` work from any machine and are picked up within one batch. What the
throttle is doing is written to key `throttle` for `migrate status` and `/metrics`."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import psycopg

from villager_shop.core.db import connect
from villager_shop.core.errors import VillagerError
from villager_shop.core.wal import WalHistory
from villager_shop.migration import state

# Physical standbys only (a logical walsender is connected to a database), with what they replayed:
# pg_receivewal and pg_basebackup stream WAL but replay nothing (replay_lsn NULL). A role without
# pg_read_all_stats sees the rows with their columns NULL.
STANDBYS = """
SELECT coalesce(nullif(r.application_name, ''), 'pid ' || r.pid) || coalesce(' @' || host(r.client_addr), ''),
       r.state, pg_wal_lsn_diff(r.replay_lsn, '0/0'), r.application_name
  FROM pg_stat_replication r LEFT JOIN pg_stat_activity a ON a.pid = r.pid
 WHERE (r.state IS NULL OR r.state IN ('streaming', 'catchup', 'startup')) AND a.datid IS NULL
"""

CONTROL_KEY = "control"
STATUS_KEY = "throttle"
CHECK_EVERY_S = 0.25
HOLD_POLL_S = 0.25
WRITE_STATUS_EVERY_S = 1.0


@dataclass(frozen=True)
class Limits:
    max_replica_lag_ms: int = 1000
    max_replica_lag_mb: float | None = None
    max_wal_mb_per_s: float | None = None
    max_archive_pending: int = 64
    autovacuum: str = "wraparound"  # any | wraparound | off
    standby_timeout_s: float = 60.0
    ignore_standbys: frozenset[str] = frozenset()  # application names (a delayed standby, say)


@dataclass
class Control:
    """What the operator set at run time (None: the configured value holds)."""

    paused: dict[str, Any] | None = None
    batch_ms: int | None = None
    max_replica_lag_ms: int | None = None
    pause_ms: int | None = None

    @classmethod
    def from_json(cls, value: Any) -> Control:
        value = value if isinstance(value, dict) else {}
        return cls(paused=value.get("paused"), batch_ms=value.get("batch_ms"),
                   max_replica_lag_ms=value.get("max_replica_lag_ms"), pause_ms=value.get("pause_ms"))

    def to_json(self) -> dict[str, Any]:
        return {"paused": self.paused, "batch_ms": self.batch_ms, "max_replica_lag_ms": self.max_replica_lag_ms,
                "pause_ms": self.pause_ms}


@dataclass
class Standby:
    name: str
    state: str
    lag_ms: float
    lag_bytes: int

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "state": self.state, "lag_ms": round(self.lag_ms), "lag_bytes": self.lag_bytes}


@dataclass
class Reading:
    """One look at the signals: the first one over its limit (if any) holds the run."""

    signal: str | None = None
    value: float | None = None
    limit: float | None = None
    detail: str = ""
    standbys: list[Standby] = field(default_factory=list)
    wal_mb_per_s: float | None = None


def who() -> str:
    """The operator as the database and the machine know them, for `status`."""
    with contextlib.suppress(Exception):
        import getpass

        return f"{getpass.getuser()}@{socket.gethostname()}"
    return socket.gethostname()


class Interrupted(Exception):
    """The run is being stopped (Ctrl-C) while a walker waited for its next batch."""


class Throttle:
    """Shared by every walker of a run (thread-safe): one of them samples, the others use its reading."""

    def __init__(self, url: str, limits: Limits, note: Any = None) -> None:
        self.url, self.limits = url, limits
        self.note = note or (lambda _m: None)
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[Any] | None = None
        self._checked = 0.0
        self._reading = Reading()
        self._control = Control()
        self._wal = WalHistory()
        self._seen: dict[str, float] = {}  # standby name -> when last seen
        self._gone_noted: set[str] = set()
        self._since: float | None = None
        self._total_s = 0.0
        self._written = 0.0
        self._unavailable = False
        self._stopping = threading.Event()
        self._noted: set[str] = set()

    # --- what the walkers call ----------------------------------------------------------------------

    def before_batch(self, table: str | None = None) -> None:
        """Return when the run may write its next batch (at once, usually); raise Interrupted once
        the run is being stopped (a held walker must not write one more batch on its way out)."""
        while True:
            if self._stopping.is_set():
                raise Interrupted("the run is being stopped")
            reading, control = self._check(table)
            held = control.paused is not None or reading.signal is not None
            if not held:
                self._release()
                if control.pause_ms:
                    time.sleep(control.pause_ms / 1000)
                return
            self._hold(reading, control)
            self._stopping.wait(HOLD_POLL_S)

    def interrupt(self) -> None:
        """Ctrl-C: let every held walker go, so it can stop after its next batch."""
        self._stopping.set()

    def batch_target_ms(self, configured: int) -> int:
        return int(self._control.batch_ms or configured)

    def close(self) -> None:
        with self._lock:
            self._release_locked()
            with contextlib.suppress(psycopg.Error, VillagerError):  # never in place of what ended the run
                self._write_status(force=True)
            self._drop_connection()

    # --- sampling -----------------------------------------------------------------------------------

    def _check(self, table: str | None) -> tuple[Reading, Control]:
        with self._lock:
            now = time.monotonic()
            if now - self._checked >= CHECK_EVERY_S:
                self._checked = now
                try:
                    conn = self._connection()
                    self._control = Control.from_json(state.get(conn, CONTROL_KEY))
                    self._reading = self._read(conn, table, now)
                    self._unavailable = False
                except (psycopg.Error, VillagerError) as exc:
                    # The signals cannot be read (a restricted role, a restart): go on unthrottled
                    # rather than stop the migration, and say so once.
                    if not self._unavailable:
                        self.note(f"throttle: cannot read the signals ({type(exc).__name__}); going on without them")
                    self._unavailable = True
                    self._drop_connection()
                    self._reading = Reading()
            return self._reading, self._control

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = connect(self.url, autocommit=True, application_name="villager-shop throttle")
        return self._conn

    def _drop_connection(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
        self._conn = None

    def _read(self, conn: psycopg.Connection[Any], table: str | None, now: float) -> Reading:
        limit_ms = float(self._control.max_replica_lag_ms or self.limits.max_replica_lag_ms)
        current = int(conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')").fetchone()[0])  # type: ignore[index]
        self._wal.add(now, current)
        per_s = self._wal.rate_per_s(now)
        rate = None if per_s is None else per_s / 1e6
        reading = Reading(wal_mb_per_s=rate)
        rows = conn.execute(STANDBYS).fetchall()
        if any(r[1] is None for r in rows):
            self._note_once("standbys", "throttle: this role cannot see the standbys' replay positions (grant it"
                                        " pg_monitor, or pg_read_all_stats): replica lag is not watched")
        for name, sb_state, replay, app in rows:
            if sb_state is None or replay is None or str(app or "") in self.limits.ignore_standbys:
                continue
            behind = max(0, current - int(replay or 0))
            reading.standbys.append(Standby(str(name), str(sb_state), self._wal.lag_s(int(replay or 0), now) * 1000 if behind else 0.0,
                                            behind))
            self._seen[str(name)] = now
            self._gone_noted.discard(str(name))
        signals: list[tuple[str, float, float, str]] = []
        for sb in reading.standbys:
            if sb.lag_ms > limit_ms:
                signals.append(("replica_lag_ms", sb.lag_ms, limit_ms, sb.name))
            if self.limits.max_replica_lag_mb is not None and sb.lag_bytes / 1e6 > self.limits.max_replica_lag_mb:
                signals.append(("replica_lag_mb", sb.lag_bytes / 1e6, self.limits.max_replica_lag_mb, sb.name))
        present = {sb.name for sb in reading.standbys}
        for name, last in list(self._seen.items()):
            if name in present:
                continue
            gone_s = now - last
            if gone_s < self.limits.standby_timeout_s:
                signals.append(("standby_gone_s", gone_s, self.limits.standby_timeout_s, name))
            elif name not in self._gone_noted:
                self._gone_noted.add(name)
                self.note(f"throttle: standby {name} has been gone for {gone_s:.0f} s"
                          f" (VILLAGER_STANDBY_TIMEOUT_S={self.limits.standby_timeout_s:g}); going on without it")
                self._event(conn, f"standby {name} gone for {gone_s:.0f} s: going on without it")
        if self.limits.max_wal_mb_per_s is not None and rate is not None and rate > self.limits.max_wal_mb_per_s:
            signals.append(("wal_mb_per_s", rate, self.limits.max_wal_mb_per_s, ""))
        pending = _archive_pending(conn, lambda: self._note_once(
            "archive", "throttle: this role cannot list the WAL archive status (pg_monitor): the archiver's"
                       " backlog is not watched"))
        if pending is not None and pending > self.limits.max_archive_pending:
            signals.append(("archive_pending_segments", float(pending), float(self.limits.max_archive_pending), ""))
        if table and self.limits.autovacuum != "off":
            vac = _autovacuum_on(conn, table, self.limits.autovacuum == "wraparound")
            if vac:
                signals.append(("autovacuum", 1.0, 0.0, vac))
        if signals:
            reading.signal, reading.value, reading.limit, reading.detail = signals[0]
        return reading

    def _note_once(self, key: str, message: str) -> None:
        if key not in self._noted:
            self._noted.add(key)
            self.note(message)

    # --- holding and releasing ----------------------------------------------------------------------

    def _hold(self, reading: Reading, control: Control) -> None:
        with self._lock:
            if self._since is None:
                self._since = time.monotonic()
                what = (f"paused by {control.paused.get('by', '?')}" if control.paused is not None else
                        f"{reading.signal} {reading.value:.0f} over {reading.limit:g}"
                        + (f" ({reading.detail})" if reading.detail else ""))
                self.note(f"throttle: holding the backfill: {what}")
            self._write_status()

    def _release(self) -> None:
        with self._lock:
            self._release_locked()
            self._write_status()

    def _release_locked(self) -> None:
        if self._since is not None:
            held = time.monotonic() - self._since
            self._total_s += held
            self._since = None
            self.note(f"throttle: released after {held:.1f} s")
            self._written = 0.0  # the release is written at once

    def _write_status(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._written < WRITE_STATUS_EVERY_S:
            return
        self._written = now
        r, c = self._reading, self._control
        held_now = now - self._since if self._since is not None else 0.0
        status = {
            "throttled": self._since is not None,
            "paused": c.paused,
            "signal": ("operator_pause" if c.paused is not None and self._since is not None else r.signal)
            if self._since is not None else None,
            "value": r.value if self._since is not None else None,
            "limit": r.limit if self._since is not None else None,
            "detail": r.detail if self._since is not None else "",
            "held_s": round(held_now, 1),
            "total_throttled_s": round(self._total_s + held_now, 1),
            "standbys": [s.to_json() for s in r.standbys],
            "wal_mb_per_s": None if r.wal_mb_per_s is None else round(r.wal_mb_per_s, 2),
            "limits": {"max_replica_lag_ms": c.max_replica_lag_ms or self.limits.max_replica_lag_ms,
                       "max_replica_lag_mb": self.limits.max_replica_lag_mb,
                       "max_wal_mb_per_s": self.limits.max_wal_mb_per_s,
                       "max_archive_pending": self.limits.max_archive_pending,
                       "autovacuum": self.limits.autovacuum, "standby_timeout_s": self.limits.standby_timeout_s,
                       "batch_ms": c.batch_ms, "pause_ms": c.pause_ms},
            "at": time.time(),
        }
        with contextlib.suppress(psycopg.Error):
            state.put(self._connection(), STATUS_KEY, status)

    def _event(self, conn: psycopg.Connection[Any], message: str) -> None:
        with contextlib.suppress(psycopg.Error):
            state.event(conn, None, "throttle", message)


def _archive_pending(conn: psycopg.Connection[Any], hidden: Any) -> int | None:
    """WAL segments waiting for the archiver (None: no archiving, or not visible to this role)."""
    mode = conn.execute("SELECT current_setting('archive_mode')").fetchone()
    if not mode or mode[0] == "off":
        return None
    try:
        with conn.transaction():
            row = conn.execute("SELECT count(*) FROM pg_ls_archive_statusdir() WHERE name LIKE '%%.ready'").fetchone()
    except psycopg.Error:
        hidden()
        return None
    return int(row[0]) if row else None


def _autovacuum_on(conn: psycopg.Connection[Any], table: str, wraparound_only: bool) -> str:
    """'autovacuum of public.T' when an autovacuum worker is working on the table, else ''."""
    row = conn.execute(
        "SELECT a.query FROM pg_stat_progress_vacuum v JOIN pg_stat_activity a ON a.pid = v.pid"
        " WHERE v.relid = to_regclass(%s) AND a.backend_type = 'autovacuum worker' LIMIT 1",
        (f"public.{table}",)).fetchone()
    if not row:
        return ""
    query = str(row[0] or "")
    if wraparound_only and "wraparound" not in query:
        return ""
    return query[:120] or f"autovacuum of public.{table}"
