"""The legacy schema: a byte-identical copy of shared/legacy-schema.sql, shipped in the package."""

from __future__ import annotations

from importlib import resources
from typing import Any

import psycopg
from psycopg import sql

from villager_shop.core.db import connection
from villager_shop.core.errors import RefusedError

LEGACY_TABLES = ("users", "shops", "products", "orders", "order_items")


def schema_sql() -> str:
    return resources.files("villager_shop.legacy").joinpath("schema.sql").read_text(encoding="utf-8")


def existing_objects(conn: psycopg.Connection[Any]) -> list[str]:
    """User tables, views and sequences outside the system schemas."""
    rows = conn.execute(
        """
        SELECT n.nspname || '.' || c.relname
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
          AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%%'
          AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid AND d.deptype = 'e')
        ORDER BY 1
        """
    ).fetchall()
    return [r[0] for r in rows]


def init(url: str, *, force: bool = False) -> None:
    with connection(url) as conn:
        objects = existing_objects(conn)
        if objects and not force:
            shown = ", ".join(objects[:5]) + (" …" if len(objects) > 5 else "")
            raise RefusedError(
                f"database is not empty ({len(objects)} objects: {shown}); use --force to drop them"
            )
        if objects:
            conn.execute("SET LOCAL lock_timeout = '5s'")
            conn.execute("DROP VIEW IF EXISTS slow_queries, db_performance_summary CASCADE")
            conn.execute(
                "DROP TABLE IF EXISTS order_items, orders, product_variants, products, product_categories,"
                " shops, users, addresses CASCADE"
            )
            conn.execute("DROP FUNCTION IF EXISTS check_data_integrity() CASCADE")
            for (name,) in conn.execute(
                "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'villager%%'"
            ).fetchall():
                conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))
        conn.execute(schema_sql().encode())
