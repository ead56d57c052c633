"""Fixtures for the safety net: a small legacy shop per test, and cleanup of every database a backup
verification or a restore may have created next to it (restores rename databases)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from villager_shop.core.db import create_database
from villager_shop.core.urls import dbname_of
from villager_shop.legacy.schema import LEGACY_TABLES, schema_sql

# A few hundred rows, written by SQL (not by the generator): enough for every table to have data.
SEED_SQL = """
INSERT INTO users (name, phone, email, role, house_number, created_at, updated_at)
SELECT 'user ' || g, '+91' || (9000000000 + g), 'u' || g || '@example.test',
       CASE WHEN g <= 20 THEN 'shopkeeper' ELSE 'customer' END,
       CASE WHEN g % 7 = 0 THEN NULL ELSE (g % 50) || 'A' END,
       now() - interval '30 days', now() - interval '30 days'
FROM generate_series(1, 200) g;

INSERT INTO shops (owner_id, name, house_number, created_at, updated_at)
SELECT id, 'shop of ' || name, house_number, now() - interval '20 days', now() - interval '20 days'
FROM users WHERE role = 'shopkeeper';

INSERT INTO products (shop_id, name, category, price, stock, created_at, updated_at)
SELECT s.id, 'product ' || g || ' of ' || s.name, (ARRAY['Fruits & Veg', 'Electronics', 'Home Decor'])[1 + g % 3],
       10 + g, g % 40, now() - interval '10 days', now() - interval '10 days'
FROM shops s CROSS JOIN generate_series(1, 15) g;

WITH c AS (SELECT id, row_number() OVER (ORDER BY email) AS rn FROM users WHERE role = 'customer'),
     s AS (SELECT id, row_number() OVER (ORDER BY name) AS rn FROM shops)
INSERT INTO orders (customer_id, shop_id, subtotal, delivery_fee, total, created_at, updated_at)
SELECT c.id, s.id, 100 + g, 10, 110 + g, now() - interval '5 days', now() - interval '5 days'
FROM generate_series(1, 100) g JOIN c ON c.rn = 1 + g % 180 JOIN s ON s.rn = 1 + g % 20;

WITH o AS (SELECT id, row_number() OVER (ORDER BY id) AS rn FROM orders),
     p AS (SELECT id, price, row_number() OVER (ORDER BY id) AS rn FROM products)
INSERT INTO order_items (order_id, product_id, quantity, unit_price, created_at)
SELECT o.id, p.id, 1 + p.rn % 3, p.price, now() - interval '5 days'
FROM o JOIN p ON p.rn IN (o.rn, o.rn + 100);
"""


def databases_like(admin_url: str, name: str) -> list[str]:
    """`name` and every database derived from it (`name_restore_…`, `name_before_restore_…`, `name_verify_…`)."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT datname FROM pg_database WHERE datname = %s OR datname LIKE %s ORDER BY 1",
            (name, name.replace("_", r"\_") + r"\_%"),
        ).fetchall()
    return [str(r[0]) for r in rows]


@pytest.fixture
def shop_db(pg_admin_url: str) -> Iterator[str]:
    """A legacy shop with a few hundred rows; drops itself and every database derived from it."""
    name = f"vt_{uuid.uuid4().hex[:12]}"
    url = create_database(pg_admin_url, name)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(schema_sql().encode())
            conn.execute(SEED_SQL.encode())
        yield url
    finally:
        with psycopg.connect(pg_admin_url, autocommit=True) as conn:
            for db in databases_like(pg_admin_url, name):
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db)))


@pytest.fixture
def backup_dir(tmp_path: Path) -> Path:
    return tmp_path / "backups"


def table_checksums(url: str) -> dict[str, Any]:
    """md5 of every row of every legacy table in id order: equal checksums = equal data."""
    out: dict[str, Any] = {}
    with psycopg.connect(url) as conn:
        for table in LEGACY_TABLES:
            q = sql.SQL("SELECT count(*), md5(string_agg(t::text, ',' ORDER BY id)) FROM {} t").format(
                sql.Identifier(table))
            out[table] = conn.execute(q).fetchone()
    return out


def read_manifest(backup_dir: Path) -> dict[str, Any]:
    return json.loads((backup_dir / "manifest.json").read_text())


def write_manifest(backup_dir: Path, data: dict[str, Any]) -> None:
    (backup_dir / "manifest.json").write_text(json.dumps(data))


def name_of(url: str) -> str:
    return dbname_of(url)
