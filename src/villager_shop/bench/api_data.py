"""The scratch shop `bench api` serves: a database with generated data, migrated, with customers who
can log in; and its removal, with the service's Redis keys, whatever happens."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import redis
from psycopg import sql

from villager_shop.api.services.accounts import set_password
from villager_shop.core.config import Settings
from villager_shop.core.db import connect, create_database, drop_database
from villager_shop.core.errors import VillagerError
from villager_shop.core.urls import with_dbname
from villager_shop.legacy.generate import generate
from villager_shop.legacy.schema import schema_sql
from villager_shop.migration.planfile import record
from villager_shop.migration.runner import make_context, run

Say = Callable[[str], None]
PASSWORD = "bench-shopper-pass"
MARK = "villager-shop bench api:"  # the comment of a database `bench api --database` built


def prepare_database(admin_url: str, name: str, *, scale: float, seed: int, customers: int,
                     say: Say) -> tuple[str, dict[str, Any]]:
    """Create `name`, fill it (generator + online migration), set customer passwords.
    Returns its URL and what the load needs: slugs, listed product ids, in-stock variant ids, logins."""
    url = build_database(admin_url, name, scale=scale, seed=seed, say=say)
    return url, shop_data(url, customers)


def reused_database(admin_url: str, name: str, *, scale: float, seed: int, customers: int,
                    say: Say) -> tuple[str, dict[str, Any], bool]:
    """The database `name` as `bench api --database` leaves it for the next run: built (and marked
    with its scale and seed) when missing, else reused as it is, since generating a large scale takes
    minutes. A database without that mark, or with another scale or seed, is refused, never replaced:
    it may be someone's shop, or a build that was interrupted. Returns its URL, the load's data, and
    whether it was reused."""
    mark = f"{MARK} scale={scale:g} seed={seed}"
    with connect(admin_url, autocommit=True) as admin:
        row = admin.execute("SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
                            (name,)).fetchone()
    if row is not None:
        if row[0] != mark:
            found = row[0] if row[0] and str(row[0]).startswith(MARK) else "no such mark"
            raise VillagerError(f"database {name!r} was not built by `bench api --database` for scale {scale:g},"
                                f" seed {seed} ({found}): drop it or choose another name")
        say(f"reusing database {name} ({mark})")
        url = with_dbname(admin_url, name)
        return url, shop_data(url, customers), True
    url = build_database(admin_url, name, scale=scale, seed=seed, say=say)
    with connect(admin_url, autocommit=True) as admin:  # marked only once complete
        admin.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(sql.Identifier(name), sql.Literal(mark)))
    return url, shop_data(url, customers), False


def build_database(admin_url: str, name: str, *, scale: float, seed: int, say: Say) -> str:
    """`name` (re)created and filled: legacy schema, generated data, the online migration, ANALYZE."""
    drop_database(admin_url, name)
    url = create_database(admin_url, name)
    with connect(url, autocommit=True) as conn:
        conn.execute(schema_sql().encode())
    say(f"generating scale {scale} legacy data …")
    generate(url, scale=scale, seed=seed)
    say("running the online migration (plans/villager.toml) …")
    ctx = make_context(url, Settings(database_url=url))  # type: ignore[arg-type]
    try:
        run(ctx, file_plan=record.for_run(ctx.conn, None))
    finally:
        ctx.conn.close()
    with connect(url, autocommit=True) as conn:
        conn.execute("ANALYZE")
    return url


def shop_data(url: str, customers: int) -> dict[str, Any]:
    """What the load needs from a prepared database: slugs (and the hottest), listed product ids,
    in-stock variant ids, customers' logins (their passwords set)."""
    with connect(url, autocommit=True) as conn:
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
    return {"slugs": slugs, "hot_slug": hot[0] if hot else slugs[0], "product_ids": products,
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
