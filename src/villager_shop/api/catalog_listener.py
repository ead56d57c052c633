"""Invalidate the cache when anything else changes the catalog.

The migration installs statement-level triggers that `pg_notify('villager_catalog')` at commit on
every change to products, variants, categories and shops — by the old application during the
migration, by scripts, by another service instance. Each worker listens and bumps the whole
catalog's generation, so such writes are not served stale for the cache TTL. A burst of
notifications becomes one invalidation.

The service's own product and variant writes (orders, stock, prices) already invalidated exactly
the parts they touched, after their commit, and do not notify (the triggers skip sessions with
`villager.invalidates_cache` on, which the service's pool sets). A database whose triggers predate
that still notifies for them: a burst whose notifications all come from the service's pool
connections (their backend pid, `application_name` = database.APP_NAME, this database) and only
concern products and variants is skipped. Anything else, or a sender that is gone before it could
be checked, bumps the whole catalog."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

import psycopg

from villager_shop.api.cache.store import Cache
from villager_shop.api.database import APP_NAME, ShopPool, wal_position
from villager_shop.core.channels import CATALOG_CHANNEL, SELF_INVALIDATED

# The tables the service writes itself (and invalidates finely for): the triggers' contract.
SERVICE_WRITTEN = frozenset(SELF_INVALIDATED)
SERVICE_SENDERS = """
SELECT count(*) FROM pg_stat_activity
 WHERE pid = ANY(%s) AND application_name = %s AND datname = current_database()
"""


async def caused_by_the_service(conn: psycopg.AsyncConnection[Any], pids: set[int], tables: set[str]) -> bool:
    """True when every notification came from a pool connection of the service (any worker or
    instance on this database) and concerns only tables it invalidates finely for itself."""
    if not pids or not tables <= SERVICE_WRITTEN:
        return False
    cur = await conn.execute(SERVICE_SENDERS, (sorted(pids), APP_NAME))
    row = await cur.fetchone()
    return row is not None and row[0] == len(pids)


# The payload of a notification the service sends itself when an invalidation did not reach Redis:
# not a table the service invalidates finely for, so every listener bumps the whole catalog.
MISSED = "missed-invalidation"


async def tell_other_instances(pool: ShopPool) -> None:
    """`Cache.on_missed`: the service's own writes do not notify (they invalidate in Redis
    themselves), so when Redis did not take an invalidation the other instances, whose Redis may
    be fine, would serve the change stale until the TTL: notify them through PostgreSQL (a
    NOTIFY is sent at commit, so a transaction pooler passes it on as well)."""
    async with pool.connection(timeout=1.0) as conn:
        await conn.execute("SELECT pg_notify(%s, %s)", (CATALOG_CHANNEL, MISSED))


log = logging.getLogger("villager_shop.catalog_listener")


@dataclass
class ListenerState:
    """The listener as /health/ready shows it: `off` says why none runs; else whether it listens
    now or is (re)connecting."""

    off: str | None = None
    listening: asyncio.Event = field(default_factory=asyncio.Event)

    def describe(self) -> str:
        if self.off is not None:
            return f"off: {self.off}"
        return "listening" if self.listening.is_set() else "connecting"


async def listen_for_catalog_changes(database_url: str, cache: Cache, *, connect_timeout_s: float = 3.0,
                                     listening: asyncio.Event | None = None) -> None:
    """Run until cancelled; reconnects with backoff when PostgreSQL goes away. `listening` is set
    while a LISTEN is in place (the catalog invalidated after each connect; the service waits for
    the first), cleared while the connection is lost. `database_url` must be the server itself
    (or a session pooler), never a transaction pooler."""
    delay = 0.5
    while True:
        try:
            conn = await psycopg.AsyncConnection.connect(database_url, autocommit=True,
                                                         connect_timeout=int(max(1, connect_timeout_s)),
                                                         application_name="villager-shop cache listener")
        except psycopg.Error as exc:
            log.warning("catalog listener cannot connect (%s); retrying in %.1fs", type(exc).__name__, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)
            continue
        delay = 0.5
        try:
            await conn.execute(f"LISTEN {CATALOG_CHANNEL}")
            # Whatever changed while no connection listened (a restart, an outage, a `restore` that
            # swapped the database in) sent notifications nobody heard: the whole catalog may be stale.
            await cache.invalidate(tell_others=False, lsn=await wal_position(conn))
            if listening is not None:
                listening.set()
            while True:
                pids: set[int] = set()
                tables: set[str] = set()
                # aclosing: a generator left suspended (by break or by cancellation) would keep the
                # connection's lock, and closing the connection would then wait forever.
                async with contextlib.aclosing(conn.notifies(timeout=30.0, stop_after=1)) as first:
                    async for n in first:
                        pids.add(n.pid)
                        tables.add(n.payload)
                while pids:
                    # At once: a reader right after the write must not wait out a batching window.
                    # What arrives in the next few ms (a burst of writes) is then folded into one
                    # more invalidation, so a stream of writes costs at most 200 of them a second.
                    if not await caused_by_the_service(conn, pids, tables):
                        # Not told on: the sender, or a write this instance saw, told everyone already.
                        # A notification arrives after its transaction committed: the position now
                        # is past that commit (api.cache.rebuild reads no standby behind it).
                        await cache.invalidate(tell_others=False, lsn=await wal_position(conn))
                    pids, tables = set(), set()
                    async with contextlib.aclosing(conn.notifies(timeout=0.005)) as burst:
                        async for n in burst:
                            pids.add(n.pid)
                            tables.add(n.payload)
        except psycopg.Error as exc:
            log.warning("catalog listener lost its connection (%s); reconnecting", type(exc).__name__)
        finally:
            if listening is not None:
                listening.clear()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(conn.close()), timeout=2.0)
