"""Catalog reads from streaming standbys (DATABASE_REPLICA_URLS), never older than allowed.

A read goes to a standby only when

* the standby is recent: it has replayed everything the primary had written at most
  `replica_max_lag_ms` ago. Each worker measures it every CHECK_INTERVAL_S: it samples the
  primary's `pg_current_wal_lsn()` (time taken before the query), then each standby's
  `pg_last_wal_replay_lsn()`; a standby whose replay position is at or past the primary's sample
  of time t holds everything written before t, and stays so (replay only moves forward). The
  age `now - t` is judged at the request, so a check that stalls ages the standby out rather than
  keeping it in. Not `now() - pg_last_xact_replay_timestamp()`: that grows while the primary is
  idle, when the standby is in fact complete.
* the standby has replayed the read's floor (core.wal): the client's own last write (its token)
  and, for a cache rebuild, the latest invalidation. When the last check saw it behind the floor,
  one extra query on the standby's connection asks again before the read (a standby a few
  milliseconds behind a write is then used instead of the primary).

Otherwise the primary answers. A standby that fails a read (connection lost, statement timeout)
is skipped for DOWN_S at least, and the read is retried on the primary at once: a standby that
stops answering takes no request down. A promoted standby (no longer in recovery) is never read.
Each standby has a small pool of its own (REPLICA_POOL_MAX), created once the check first
reached it, with the primary pool's settings and timeouts; waiting for one of its connections is
bounded by REPLICA_CHECKOUT_S, after which the primary answers."""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import psycopg
from psycopg import AsyncConnection
from psycopg_pool import PoolTimeout

from villager_shop.api.config import ServiceConfig
from villager_shop.api.database import ShopPool, make_pool
from villager_shop.core.pooler import shares_server_connections
from villager_shop.core.urls import mask_url
from villager_shop.core.wal import current_floor, served_by
from villager_shop.monitoring.metrics import CATALOG_READS

log = logging.getLogger("villager_shop.replicas")

T = TypeVar("T")
Query = Callable[[AsyncConnection[Any]], Awaitable[T]]

CHECK_INTERVAL_S = 0.25
DOWN_S = 2.0
HISTORY_S = 300.0
REPLICA_POOL_MAX = 4
REPLICA_CHECKOUT_S = 1.0

PRIMARY_POSITION = "SELECT pg_current_wal_lsn() - '0/0'::pg_lsn"
STANDBY_POSITION = "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn() - '0/0'::pg_lsn"
REPLAYED = "SELECT pg_last_wal_replay_lsn() - '0/0'::pg_lsn"

# SQLSTATE classes of a standby that is going or gone (connection exception, operator intervention).
_GONE = ("08", "57")


class History:
    """The primary's WAL positions over the last HISTORY_S: for each position seen, the last time
    it was still the primary's (positions strictly increasing)."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.positions: list[int] = []

    def add(self, at: float, position: int) -> None:
        if self.positions and position < self.positions[-1]:  # another primary (a failover): start over
            self.times.clear()
            self.positions.clear()
        if self.positions and position == self.positions[-1]:
            self.times[-1] = at
        else:
            self.times.append(at)
            self.positions.append(position)
        cut = bisect.bisect_left(self.times, at - HISTORY_S)
        if cut:
            del self.times[:min(cut, len(self.times) - 1)], self.positions[:min(cut, len(self.positions) - 1)]

    @property
    def latest(self) -> int | None:
        return self.positions[-1] if self.positions else None

    def recent_as_of(self, replayed: int) -> float | None:
        """The latest time the primary had written no more than `replayed` (None: not within the history)."""
        i = bisect.bisect_right(self.positions, replayed) - 1
        return self.times[i] if i >= 0 else None


@dataclass
class Replica:
    url: str
    pool: ShopPool | None = None
    replayed: int | None = None  # the replay position last seen
    recent_as_of: float | None = None  # monotonic: it holds everything the primary had written then
    lag_bytes: int | None = None
    checked_at: float | None = None
    problem: str | None = "not reached yet"  # why it is not read (None: it may be)
    down_until: float = 0.0
    conn: AsyncConnection[Any] | None = field(default=None, repr=False)  # the check's own connection

    @property
    def name(self) -> str:
        return mask_url(self.url)

    def recent(self, now: float, max_lag_s: float) -> bool:
        return (self.pool is not None and self.problem is None and self.recent_as_of is not None
                and now - self.recent_as_of <= max_lag_s)

    def failed(self, problem: str) -> None:
        """Skip it for DOWN_S at least, then until a check reaches it."""
        if self.problem != problem:
            log.warning("standby %s: %s; reading from the primary", self.name, problem)
        self.problem = problem
        self.down_until = time.monotonic() + DOWN_S

    def describe(self, now: float, max_lag_s: float) -> dict[str, Any]:
        lag_ms = None
        if self.recent_as_of is not None and self.checked_at is not None:
            lag_ms = round(max(0.0, self.checked_at - self.recent_as_of) * 1000)
        state = "down" if self.problem is not None else ("ok" if self.recent(now, max_lag_s) else "lagging")
        out: dict[str, Any] = {"url": self.name, "state": state, "lag_ms": lag_ms, "lag_bytes": self.lag_bytes}
        if self.problem is not None:
            out["problem"] = self.problem
        return out


def _problem(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"[:200] if text else type(exc).__name__


def standby_gone(exc: psycopg.Error) -> bool:
    """The standby itself failed (connection lost or refused, shutting down, a statement timeout),
    rather than this one query (a recovery conflict, say)."""
    if isinstance(exc, psycopg.errors.QueryCanceled):
        return True
    return exc.sqlstate is None or exc.sqlstate[:2] in _GONE


class Reads:
    """Where the catalog's reads run: `read(query)`; `run()` is the per-worker check (a task)."""

    def __init__(self, primary: ShopPool, config: ServiceConfig) -> None:
        self.primary = primary
        self.config = config
        self.replicas = [Replica(url) for url in config.replica_urls]
        self.max_lag_s = config.replica_max_lag_ms / 1000
        self.history = History()
        self._turn = itertools.count()
        self._primary_conn: AsyncConnection[Any] | None = None

    @property
    def configured(self) -> bool:
        return bool(self.replicas)

    # -- reads --------------------------------------------------------------------------------

    def pick(self, floor: int) -> tuple[Replica, bool] | None:
        """A recent standby (in turn), and whether its replay position must be asked first (the
        last check saw it behind `floor`); None: the primary."""
        now = time.monotonic()
        recent = [r for r in self.replicas if r.recent(now, self.max_lag_s)]
        if not recent:
            return None
        past = [r for r in recent if r.replayed is not None and r.replayed >= floor]
        choice = past or recent
        return choice[next(self._turn) % len(choice)], not past

    async def read(self, query: Query[T]) -> T:
        """`query` on a standby that may answer it (see the module), else on the primary."""
        target = "primary"
        picked = self.pick(current_floor()) if self.replicas else None
        if picked is not None:
            replica, confirm = picked
            assert replica.pool is not None
            try:
                async with replica.pool.connection(timeout=REPLICA_CHECKOUT_S) as conn:
                    if not confirm or await self._replayed_past(replica, conn, current_floor()):
                        result = await query(conn)
                        CATALOG_READS.labels("replica").inc()
                        served_by("replica")
                        return result
            except PoolTimeout:
                target = "primary_fallback"
            except psycopg.OperationalError as exc:
                if standby_gone(exc):
                    replica.failed(_problem(exc))
                target = "primary_fallback"
        async with self.primary.connection() as conn:
            result = await query(conn)
        CATALOG_READS.labels(target).inc()
        served_by("primary")
        return result

    @staticmethod
    async def _replayed_past(replica: Replica, conn: AsyncConnection[Any], floor: int) -> bool:
        cur = await conn.execute(REPLAYED)
        row = await cur.fetchone()
        if row is None or row[0] is None:
            return False
        replayed = int(row[0])
        replica.replayed = max(replica.replayed or 0, replayed)
        return replayed >= floor

    # -- the check ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Check the primary's and every standby's position every CHECK_INTERVAL_S until cancelled."""
        while True:
            started = time.monotonic()
            await self.check()
            await asyncio.sleep(max(0.0, CHECK_INTERVAL_S - (time.monotonic() - started)))

    async def check(self) -> None:
        at = time.monotonic()
        try:
            async with asyncio.timeout(self.config.db_connect_timeout_s + 1):
                if self._primary_conn is None or self._primary_conn.closed:
                    self._primary_conn = await self._connect(self.config.database_url)
                cur = await self._primary_conn.execute(PRIMARY_POSITION)
                row = await cur.fetchone()
            assert row is not None
            self.history.add(at, int(row[0]))
        except Exception as exc:  # no sample: the standbys age out, reads go to the primary
            log.debug("replica check: primary position unknown (%s)", _problem(exc))
            await self._close(self._primary_conn)
            self._primary_conn = None
        await asyncio.gather(*(self._check(r) for r in self.replicas))

    async def _connect(self, url: str) -> AsyncConnection[Any]:
        return await psycopg.AsyncConnection.connect(
            url, autocommit=True, connect_timeout=self.config.db_connect_timeout_s, prepare_threshold=None,
            application_name="villager-shop replica check")

    @staticmethod
    async def _close(conn: AsyncConnection[Any] | None) -> None:
        if conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 2.0)

    async def _check(self, replica: Replica) -> None:
        try:
            async with asyncio.timeout(self.config.db_connect_timeout_s + 1):
                if replica.conn is None or replica.conn.closed:
                    replica.conn = await self._connect(replica.url)
                cur = await replica.conn.execute(STANDBY_POSITION)
                row = await cur.fetchone()
            assert row is not None
        except Exception as exc:
            replica.failed(_problem(exc))
            replica.replayed = replica.recent_as_of = None
            await self._close(replica.conn)
            replica.conn = None
            return
        in_recovery, replayed = row
        if not in_recovery:
            replica.failed("not a standby (promoted, or the primary itself): never read")
            return
        if replayed is None:
            replica.failed("no WAL replayed yet")
            return
        now = time.monotonic()
        replica.replayed = int(replayed)
        replica.recent_as_of = self.history.recent_as_of(replica.replayed)
        latest = self.history.latest
        replica.lag_bytes = None if latest is None else max(0, latest - replica.replayed)
        replica.checked_at = now
        if replica.pool is None:
            try:
                replica.pool = await self._open_pool(replica)
            except Exception as exc:
                replica.failed(_problem(exc))
                return
        if now >= replica.down_until and replica.problem is not None:
            log.info("standby %s answers again", replica.name)
            replica.problem = None

    async def _open_pool(self, replica: Replica) -> ShopPool:
        through_pooler = await asyncio.to_thread(shares_server_connections, replica.url,
                                                 connect_timeout=self.config.db_connect_timeout_s)
        pool = make_pool(self.config, through_pooler=through_pooler, url=replica.url, name="villager-shop replica",
                         max_size=min(REPLICA_POOL_MAX, self.config.db_pool_max), min_size=1,
                         timeout_s=min(REPLICA_CHECKOUT_S, self.config.db_pool_timeout_s))
        await pool.open(wait=False)
        return pool

    def describe(self) -> list[dict[str, Any]]:
        """Each standby as /health/ready shows it: url (masked), state (ok, lagging, down), lag_ms
        (how old its data was at the last check), lag_bytes, and the problem when down."""
        now = time.monotonic()
        return [r.describe(now, self.max_lag_s) for r in self.replicas]

    async def close(self) -> None:
        await self._close(self._primary_conn)
        self._primary_conn = None
        for replica in self.replicas:
            await self._close(replica.conn)
            replica.conn = None
            if replica.pool is not None:
                with contextlib.suppress(Exception):
                    await replica.pool.close(timeout=3)
                replica.pool = None
