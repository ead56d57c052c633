"""WAL positions (PostgreSQL LSNs) and the floor a read must include.

A standby serves a read only if it has replayed the WAL up to the read's floor: the position after
the client's own last write (its read-your-writes token), or, for a cache rebuild, the position
of the latest invalidation (cache.Cache). The floor travels with the request as a context
variable, so the services need not pass it through every call, and a cache rebuild (a task of
its own) raises it for its reads without touching the request's."""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

_LSN = re.compile(r"([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})")
# What no standby has replayed: reads with this floor go to the primary.
UNREACHABLE = 2**64


def parse_lsn(text: str) -> int | None:
    """`0/16B3748` (PostgreSQL's text form) as a number; None when it is not one."""
    match = _LSN.fullmatch(text.strip())
    if match is None:
        return None
    return (int(match.group(1), 16) << 32) | int(match.group(2), 16)


def format_lsn(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


@dataclass
class ReadFloor:
    """The WAL position the reads under it must include, and what a request reports back:
    `written` (the position after its last write: the token it returns) and `source` (where its
    last database read was served). A floor made for a cache rebuild reports to its parent."""

    lsn: int = 0
    written: int | None = None
    source: str | None = None
    parent: ReadFloor | None = None

    def served_by(self, source: str) -> None:
        floor: ReadFloor | None = self
        while floor is not None:
            floor.source = source
            floor = floor.parent


FLOOR: ContextVar[ReadFloor | None] = ContextVar("villager_read_floor", default=None)


def current_floor() -> int:
    floor = FLOOR.get()
    return 0 if floor is None else floor.lsn


def wrote(lsn: int) -> None:
    """A write of this request committed at or before `lsn`: its later reads include it, and the
    response carries it as the token."""
    floor = FLOOR.get()
    if floor is None:
        return
    floor.written = max(floor.written or 0, lsn)
    floor.lsn = max(floor.lsn, lsn)


def served_by(source: str) -> None:
    floor = FLOOR.get()
    if floor is not None:
        floor.served_by(source)


@contextmanager
def floor_at_least(lsn: int) -> Iterator[ReadFloor]:
    """The reads of the block include `lsn` as well as what the current floor asks for."""
    parent = FLOOR.get()
    floor = ReadFloor(max(lsn, 0 if parent is None else parent.lsn), parent=parent)
    token = FLOOR.set(floor)
    try:
        yield floor
    finally:
        FLOOR.reset(token)


class WalHistory:
    """The primary's WAL position sampled over time, to tell how far behind a standby is in time:
    it lags at least since the primary first wrote past the position it has replayed. Read this
    way the lag keeps growing while replay is stuck, where `pg_stat_replication.replay_lag` (only
    refreshed when a standby replays past a sampled position) stays frozen."""

    def __init__(self, keep: int = 4096) -> None:
        self.samples: deque[tuple[float, int]] = deque(maxlen=keep)

    def add(self, at: float, position: int) -> None:
        self.samples.append((at, position))

    def lag_s(self, replayed: int, now: float) -> float:
        return next((now - t for t, written in self.samples if written > replayed), 0.0)

    def rate_per_s(self, now: float, window_s: float = 5.0) -> float | None:
        """Bytes written per second over the last `window_s` (None before half a second of samples)."""
        recent = [(t, w) for t, w in self.samples if now - t <= window_s]
        if len(recent) < 2 or recent[-1][0] - recent[0][0] < 0.5:
            return None
        return (recent[-1][1] - recent[0][1]) / (recent[-1][0] - recent[0][0])
