"""The one short transaction in which rollback or complete switches representations.

Doing every catalog change of the switch in a single transaction, after locking the tables in a
fixed order under lock_timeout, means each application write lands either before it (and the
sync triggers carried it over) or after it - never in between, where it would reach only one side.
"""

from __future__ import annotations

import time
from typing import Any

from psycopg import errors, sql

from villager_shop.core.db import OWN_TIMEOUTS, relation_exists
from villager_shop.migration.context import Context
from villager_shop.migration.ddl import LOCK_RETRYABLE, LockRetriesExhausted

LOCK_ORDER = ("users", "shops", "products", "orders", "order_items", "addresses", "product_categories",
              "product_variants")


def existing(ctx: Context, tables: tuple[str, ...] = LOCK_ORDER) -> list[str]:
    return [t for t in tables if relation_exists(ctx.conn, f"public.{t}")]


def run_cut(ctx: Context, statements: list[str], what: str, lock_order: tuple[str, ...] = LOCK_ORDER
            ) -> dict[str, Any]:
    """Run `statements` in one transaction under ACCESS EXCLUSIVE locks on `lock_order`'s tables
    (always in that order) taken with lock_timeout, retrying with backoff when an application
    transaction holds a lock."""
    policy = ctx.policy
    t_start = time.perf_counter()
    slice_ms = max(1, min(policy.lock_timeout_ms, policy.lock_slice_ms))
    attempt, waited_ms = 1, 0
    while True:
        t0 = time.perf_counter()
        try:
            with ctx.conn.transaction():
                # Wait for the locks in slices (see ddl.RetryPolicy.lock_slice_ms).
                ctx.conn.execute(OWN_TIMEOUTS, (f"{int(policy.statement_timeout_ms)}ms", f"{int(slice_ms)}ms"))
                tables = existing(ctx, lock_order)
                ctx.conn.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(
                    sql.SQL(", ").join(sql.Identifier("public", t) for t in tables)))
                for stmt in statements:
                    ctx.conn.execute(stmt.encode())
            held_ms = (time.perf_counter() - t0) * 1000
            return {"attempts": attempt, "locks_held_ms": round(held_ms, 1),
                    "seconds": round(time.perf_counter() - t_start, 3)}
        except LOCK_RETRYABLE as exc:
            waited_ms += slice_ms
            if isinstance(exc, errors.LockNotAvailable) and waited_ms < policy.lock_timeout_ms:
                time.sleep(0.002)
                continue
            if attempt in (1, 5, 10) or attempt % 20 == 0:
                ctx.reporter.note(f"{what}: tables busy ({type(exc).__name__}), retrying (attempt {attempt})")
            if attempt >= policy.max_attempts:
                raise LockRetriesExhausted(
                    f"{what}: could not lock the tables within {policy.max_attempts} attempts;"
                    " a long-running transaction is holding them (see pg_stat_activity)") from exc
            time.sleep(policy.delay(attempt))
            attempt, waited_ms = attempt + 1, 0
