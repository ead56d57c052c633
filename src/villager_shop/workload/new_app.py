"""The new application: it writes only the normalized tables (addresses, categories, variants), and
only once they all exist; the migration's triggers carry its writes back to the legacy columns."""

from __future__ import annotations

import random
import uuid
from decimal import Decimal
from typing import Any

import psycopg

from villager_shop.workload.recorder import Owned, Recorder

# What this application writes, as plans/villager.toml (or another plan file for these tables) makes it.
WRITTEN = (("users", "address_id"), ("shops", "address_id"), ("products", "category_id"), ("products", "base_price"),
           ("addresses", "house_number"), ("product_categories", "name"), ("product_variants", "is_default"))


def normalized_ready(conn: psycopg.Connection[Any]) -> bool:
    """Every new table and column exists, and the triggers that carry writes back to the legacy
    columns: the built-in plan's addresses' rename trigger comes with the last of them; a plan
    file's sync triggers step has finished."""
    row = conn.execute(
        "SELECT count(*) FROM pg_trigger WHERE tgname = 'villager_sync_address_after'").fetchone()
    if row and row[0]:
        return True
    row = conn.execute("SELECT to_regclass('villager_migration.steps') IS NOT NULL"
                       " AND to_regclass('villager_migration.plan_quarantine') IS NOT NULL").fetchone()
    if not (row and row[0]):
        return False
    row = conn.execute(
        "SELECT (SELECT status = 'done' FROM villager_migration.steps WHERE name = 'sync_triggers')"
        " AND (SELECT count(*) FROM information_schema.columns WHERE table_schema = 'public'"
        "      AND (table_name, column_name) IN (SELECT * FROM unnest(%s::text[], %s::text[]))) = %s",
        ([t for t, _ in WRITTEN], [c for _, c in WRITTEN], len(WRITTEN))).fetchone()
    return bool(row and row[0])


def new_set_variant(w: Recorder, conn: psycopg.Connection[Any], rng: random.Random, owned: Owned) -> None:
    if not owned["products"]:
        return
    pid = rng.choice(owned["products"])
    price, stock = Decimal(rng.choice(("19.99", "25.00", "7.50"))), rng.randint(0, 30)
    cur = conn.execute("UPDATE product_variants SET price = %s, stock = %s, updated_at = now()"
                       " WHERE product_id = %s AND is_default AND is_active", (price, stock, pid))
    if cur.rowcount:
        w.expect("products", pid, price=price, stock=stock)


def new_move_address(w: Recorder, conn: psycopg.Connection[Any], rng: random.Random, owned: Owned) -> None:
    table = rng.choice(("users", "shops"))
    if not owned[table]:
        return
    rid = rng.choice(owned[table])
    hn = f"N{rng.randint(1, 200)}"
    with conn.transaction():
        aid = conn.execute("INSERT INTO addresses (house_number) VALUES (%s) ON CONFLICT (house_number)"
                           " DO UPDATE SET updated_at = addresses.updated_at RETURNING id", (hn,)).fetchone()
        conn.execute(f"UPDATE {table} SET address_id = %s, updated_at = now() WHERE id = %s",
                     (aid[0] if aid else None, rid))
    w.expect(table, rid, house_number=hn)


def new_set_category(w: Recorder, conn: psycopg.Connection[Any], rng: random.Random, owned: Owned) -> None:
    if not owned["products"]:
        return
    pid = rng.choice(owned["products"])
    row = conn.execute("SELECT id, name FROM product_categories ORDER BY random() LIMIT 1").fetchone()
    if row is None:
        return
    conn.execute("UPDATE products SET category_id = %s, updated_at = now() WHERE id = %s", (row[0], pid))
    w.expect("products", pid, category_key_of=row[1])


def new_insert_product(w: Recorder, conn: psycopg.Connection[Any], rng: random.Random, owned: Owned) -> None:
    if not owned["shops"]:
        return
    pid = str(uuid.uuid4())
    price = Decimal(rng.choice(("9.00", "14.50")))
    with conn.transaction():
        cat = conn.execute("SELECT id, name FROM product_categories ORDER BY random() LIMIT 1").fetchone()
        conn.execute("INSERT INTO products (id, shop_id, name, category_id, base_price) VALUES (%s, %s, %s, %s, %s)",
                     (pid, rng.choice(owned["shops"]), f"new-app product {pid[:6]}", cat[0] if cat else None, price))
        conn.execute(
            "INSERT INTO product_variants (product_id, sku, name, price, stock, is_default)"
            " VALUES (%s, %s, 'Default', %s, 12, true) ON CONFLICT (product_id) WHERE is_default"
            " DO UPDATE SET price = EXCLUDED.price, stock = EXCLUDED.stock", (pid, f"{pid}-default", price))
    owned["products"].append(pid)
    w.expect("products", pid, price=price, stock=12, category_key_of=cat[1] if cat else None)


NEW_OPS = [new_set_variant, new_set_variant, new_move_address, new_set_category, new_insert_product]
