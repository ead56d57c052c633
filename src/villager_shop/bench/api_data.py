"""The scratch shop `bench api` serves: a database with generated data, migrated, with customers who
can log in; and its removal, with the service's Redis keys, whatever happens."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import redis

from villager_shop.api.services.accounts import set_password
from villager_shop.core.config import Settings
from villager_shop.core.db import connect, create_database, drop_database
from villager_shop.core.errors import VillagerError
from villager_shop.legacy.generate import generate
from villager_shop.legacy.schema import schema_sql
from villager_shop.migration.runner import make_context, run

Say = Callable[[str], None]
PASSWORD = "bench-shopper-pass"


def prepare_database(admin_url: str, name: str, *, scale: float, seed: int, customers: int,
                     say: Say) -> tuple[str, dict[str, Any]]:
    """Create `name`, fill it (generator + online migration), set customer passwords.
    Returns its URL and what the load needs: slugs, listed product ids, in-stock variant ids, logins."""
    drop_database(admin_url, name)
    url = create_database(admin_url, name)
    with connect(url, autocommit=True) as conn:
        conn.execute(schema_sql().encode())
    say(f"generating scale {scale} legacy data …")
    generate(url, scale=scale, seed=seed)
    say("running the online migration …")
    ctx = make_context(url, Settings(database_url=url))  # type: ignore[arg-type]
    try:
        run(ctx)
    finally:
        ctx.conn.close()
    with connect(url, autocommit=True) as conn:
        conn.execute("ANALYZE")
        slugs = [r[0] for r in conn.execute(
            """SELECT c.slug FROM public.product_categories c
                WHERE c.is_active AND EXISTS (SELECT 1 FROM public.products p WHERE p.category_id = c.id
                                                AND p.is_available)
                ORDER BY c.slug""").fetchall()]
        hot = conn.execute(
            """SELECT c.slug FROM public.product_categories c JOIN public.products p ON p.category_id = c.id
                WHERE c.is_active AND p.is_available GROUP BY c.slug ORDER BY count(*) DESC, c.slug LIMIT 1""",
        ).fetchone()
        products = [str(r[0]) for r in conn.execute(
            """SELECT p.id FROM public.products p
                WHERE p.is_available
                  AND EXISTS (SELECT 1 FROM public.product_variants v WHERE v.product_id = p.id AND v.is_active)
                ORDER BY md5(p.id::text) LIMIT 2000""").fetchall()]
        variants = [str(r[0]) for r in conn.execute(
            """SELECT v.id FROM public.product_variants v
                 JOIN public.products p ON p.id = v.product_id JOIN public.shops s ON s.id = p.shop_id
                WHERE v.is_active AND p.is_available AND s.is_open AND v.stock > 0
                ORDER BY md5(v.id::text) LIMIT 1000""").fetchall()]
        candidates = [r[0] for r in conn.execute(
            """SELECT email FROM public.users
                WHERE role = 'customer' AND email ~ '^[A-Za-z0-9._%%+-]+@[A-Za-z0-9.-]+$'
                ORDER BY id LIMIT %s""", (customers * 4,)).fetchall()]
        logins: list[str] = []
        for email in candidates:
            if len(logins) >= customers:
                break
            with contextlib.suppress(VillagerError):  # messy data: an email shared with another user's phone
                set_password(conn, email, PASSWORD)
                logins.append(email)
    if not slugs or not products:
        raise VillagerError("the generated catalog has no listed products")
    return url, {"slugs": slugs, "hot_slug": hot[0] if hot else slugs[0], "product_ids": products,
                 "variant_ids": variants, "logins": logins}


@contextlib.contextmanager
def dropped_after(admin_url: str, name: str, keep: bool) -> Iterator[None]:
    """Drop the database `name` when the block ends, however it ends, unless `keep`."""
    try:
        yield
    finally:
        if not keep:
            drop_database(admin_url, name)


def drop_redis_keys(redis_url: str, prefix: str) -> None:
    """Remove the keys a service wrote under `prefix`; a Redis that is gone has none to remove."""
    with contextlib.suppress(redis.RedisError, OSError):
        client = redis.Redis.from_url(redis_url, socket_timeout=5)
        try:
            batch = list(client.scan_iter(match=f"{prefix}:*", count=1000))
            for i in range(0, len(batch), 500):
                client.delete(*batch[i:i + 500])
        finally:
            client.close()
