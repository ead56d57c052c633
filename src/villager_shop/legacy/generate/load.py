"""Load the world into empty legacy tables: COPY streaming in one transaction, then ANALYZE and a
report measured on what was loaded."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from villager_shop.core.db import connection
from villager_shop.core.errors import RefusedError, VillagerError
from villager_shop.core.urls import dbname_of
from villager_shop.legacy.generate.measure import messy_counts, row_counts
from villager_shop.legacy.generate.vocabulary import MAX_SCALE, MEAN_ITEMS_PER_ORDER, REFERENCE_DATE
from villager_shop.legacy.generate.world import COLUMNS, World
from villager_shop.legacy.schema import LEGACY_TABLES

Progress = Callable[[str, int, int], None]
"""progress(table, rows_done, rows_expected): called after every chunk and once at the end of a table."""

# ---------------------------------------------------------------------------------------------
# Report


@dataclass
class GenerateReport:
    """What was loaded, measured with SQL on the loaded data (not trusted from the generator)."""

    database: str
    scale: float
    seed: int
    reference_date: str
    rows: dict[str, int]
    table_seconds: dict[str, float]
    elapsed_seconds: float
    rows_per_second: float
    messy: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["total_rows"] = self.total_rows
        return out


class LegacySchemaMissing(VillagerError):
    """The target database does not hold the legacy tables."""


CHUNK_CHARS = 256 * 1024  # one copy.write() per ~256 kB of COPY text


def _copy(
    conn: psycopg.Connection[Any], table: str, lines: Iterable[str], expected: int, progress: Progress | None
) -> int:
    stmt = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(table), sql.SQL(", ").join(sql.Identifier(c) for c in COLUMNS[table])
    )
    done = 0
    size = 0
    buf: list[str] = []
    if progress:
        progress(table, 0, expected)
    with conn.cursor() as cur, cur.copy(stmt) as copy:
        for line in lines:
            buf.append(line)
            size += len(line)
            if size >= CHUNK_CHARS:
                copy.write("".join(buf).encode())
                done += len(buf)
                buf.clear()
                size = 0
                if progress:
                    progress(table, done, max(expected, done))
        if buf:
            copy.write("".join(buf).encode())
            done += len(buf)
    if progress:
        progress(table, done, done)
    return done


# ---------------------------------------------------------------------------------------------
# Preconditions


def require_legacy_schema(conn: psycopg.Connection[Any]) -> None:
    """Raise LegacySchemaMissing unless every legacy table and column is visible on the search_path."""
    missing: list[str] = []
    lacking: list[str] = []
    for table in LEGACY_TABLES:
        row = conn.execute("SELECT to_regclass(%s)::oid", (table,)).fetchone()
        if row is None or row[0] is None:
            missing.append(table)
            continue
        have = {r[0] for r in conn.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped", (row[0],)
        )}
        gone = [c for c in COLUMNS[table] if c not in have]
        if gone:
            lacking.append(f"{table}.{'/'.join(gone)}")
    if missing:
        raise LegacySchemaMissing(
            f"legacy schema not found (missing tables: {', '.join(missing)}); run `villager-shop legacy init` first"
        )
    if lacking:
        raise LegacySchemaMissing(
            f"tables do not match the legacy schema (missing columns: {', '.join(lacking)}); "
            "generate fills only a legacy schema created by `villager-shop legacy init`"
        )


def _nonempty_tables(conn: psycopg.Connection[Any]) -> list[str]:
    return [
        t for t in LEGACY_TABLES
        if (conn.execute(sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(sql.Identifier(t))).fetchone()
            or (False,))[0]
    ]


# ---------------------------------------------------------------------------------------------
# Entry point


def generate(
    url: str,
    *,
    scale: float,
    seed: int,
    progress: Progress | None = None,
    force: bool = False,
) -> GenerateReport:
    """Fill the (empty) legacy tables at `url`; with force=True, truncate them first."""
    if not (scale > 0) or scale > MAX_SCALE:
        raise VillagerError(f"scale must be > 0 and <= {MAX_SCALE:g} (got {scale:g})", exit_code=2)
    started = time.perf_counter()
    world = World(scale, seed)
    expected = {
        "users": world.n_users, "shops": world.n_shops, "products": world.n_products, "orders": world.n_orders,
        "order_items": round(world.n_orders * MEAN_ITEMS_PER_ORDER),
    }
    streams: dict[str, Callable[[], Iterator[str]]] = {
        "users": world.users, "shops": world.shops, "products": world.products,
        "orders": world.orders, "order_items": world.order_items,
    }
    seconds: dict[str, float] = {}
    with connection(url) as conn:
        require_legacy_schema(conn)
        # Transaction-local (the connection may be a pooler's): gone at the commit below.
        conn.execute("SET LOCAL client_encoding = 'UTF8'")
        conn.execute("SET LOCAL lock_timeout = '5s'")
        conn.execute("SET LOCAL synchronous_commit = off")
        # writers wait until we commit; readers keep reading
        conn.execute(sql.SQL("LOCK TABLE {} IN EXCLUSIVE MODE").format(
            sql.SQL(", ").join(sql.Identifier(t) for t in LEGACY_TABLES)))
        full = _nonempty_tables(conn)
        if full and not force:
            raise RefusedError(
                f"legacy tables already hold rows ({', '.join(full)}); use --force to truncate them first"
            )
        if full:
            try:
                conn.execute(sql.SQL("TRUNCATE {}").format(
                    sql.SQL(", ").join(sql.Identifier(t) for t in reversed(LEGACY_TABLES))))
            except psycopg.errors.FeatureNotSupported as exc:
                raise RefusedError(
                    f"cannot truncate the legacy tables: other tables reference them ({exc.diag.message_detail or exc})"
                ) from exc
        for table in LEGACY_TABLES:
            t0 = time.perf_counter()
            _copy(conn, table, streams[table](), expected[table], progress)
            seconds[table] = round(time.perf_counter() - t0, 3)
        conn.commit()
        conn.autocommit = True
        t0 = time.perf_counter()
        conn.execute(sql.SQL("ANALYZE {}").format(sql.SQL(", ").join(sql.Identifier(t) for t in LEGACY_TABLES)))
        seconds["analyze"] = round(time.perf_counter() - t0, 3)
        elapsed = time.perf_counter() - started
        rows = row_counts(conn)
        messy = messy_counts(conn)
    total = sum(rows.values())
    return GenerateReport(
        database=dbname_of(url),
        scale=scale,
        seed=seed,
        reference_date=REFERENCE_DATE.isoformat(),
        rows=rows,
        table_seconds=seconds,
        elapsed_seconds=round(elapsed, 3),
        rows_per_second=round(total / elapsed, 1) if elapsed > 0 else 0.0,
        messy=messy,
    )
