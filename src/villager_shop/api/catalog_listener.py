"""Invalidate the cache when anything else changes the catalog.

The migration installs statement-level triggers that `pg_notify('villager_catalog')` at commit on
every change to products, variants, categories and shops — by the old application during the
migration, by scripts, by another service instance. Each worker listens and bumps the catalog
generation, so such writes are not served stale for the cache TTL. A burst of notifications
becomes one invalidation."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import psycopg

from villager_shop.cache import Cache

CHANNEL = "villager_catalog"
log = logging.getLogger("villager_shop.catalog_listener")


async def listen_for_catalog_changes(database_url: str, cache: Cache, *, connect_timeout_s: float = 3.0) -> None:
    """Run until cancelled; reconnects with backoff when PostgreSQL goes away."""
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
            await conn.execute(f"LISTEN {CHANNEL}")
            while True:
                got = False
                async for _ in conn.notifies(timeout=30.0):
                    got = True
                    break
                if got:
                    # Fold a burst into one invalidation: drain what is already queued.
                    async for _ in conn.notifies(timeout=0.02):
                        pass
                    await cache.invalidate()
        except psycopg.Error as exc:
            log.warning("catalog listener lost its connection (%s); reconnecting", type(exc).__name__)
        finally:
            with contextlib.suppress(Exception):
                await conn.close()
