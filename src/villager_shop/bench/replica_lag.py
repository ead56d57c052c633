"""How far a standby is behind, sampled from both sides while a benchmark runs.

The standby's time lag is read as core.wal.WalHistory reads it (it keeps growing while replay is
stuck, where `pg_stat_replication.replay_lag` stays frozen)."""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

import psycopg

from villager_shop.core.db import connect
from villager_shop.core.wal import WalHistory

EVERY_S = 0.05


class LagProbe:
    def __init__(self, primary_url: str, standby_url: str) -> None:
        self.primary_url, self.standby_url = primary_url, standby_url
        self.samples: list[tuple[float, float, int]] = []  # (wall time, lag ms, lag bytes)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="replica-lag", daemon=True)

    def start(self) -> LagProbe:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        written = WalHistory(keep=100_000)
        with connect(self.primary_url, autocommit=True, application_name="villager-shop bench lag") as p, \
                connect(self.standby_url, autocommit=True, application_name="villager-shop bench lag") as s:
            while not self._stop.is_set():
                with contextlib.suppress(psycopg.Error):
                    now = time.time()
                    lsn = int(p.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')").fetchone()[0])  # type: ignore[index]
                    written.add(now, lsn)
                    replayed = int(s.execute("SELECT pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '0/0')"
                                             ).fetchone()[0])  # type: ignore[index]
                    self.samples.append((now, written.lag_s(replayed, now) * 1000,
                                         max(0, lsn - replayed)))
                self._stop.wait(EVERY_S)

    def window(self, start: float, end: float) -> dict[str, Any]:
        lags = sorted(ms for t, ms, _b in self.samples if start <= t <= end) or [0.0]
        lag_bytes = max((b for t, _ms, b in self.samples if start <= t <= end), default=0)
        return {"replica_lag_max_ms": round(lags[-1], 1),
                "replica_lag_p99_ms": round(lags[min(len(lags) - 1, int(0.99 * len(lags)))], 1),
                "replica_lag_max_mb": round(lag_bytes / 1e6, 2), "replica_lag_samples": len(lags)}
