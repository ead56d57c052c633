"""The old application: it knows only the legacy columns (house_number, category, price, stock) and
writes the messy spellings real users type, whatever state the migration is in."""

from __future__ import annotations

import random
import uuid
from decimal import Decimal
from typing import Any

import psycopg

from villager_shop.workload.recorder import Owned, Recorder

HOUSE_SPELLINGS = ("{n}a", " {n}A ", "{n} A", "{n}B", "{n}", "  {n}c", "")
CATEGORY_SPELLINGS = ("Grocery", "grocery ", "Fruits & Veg", "Fruits Veg", "मिठाई", "Home  Decor", "home decor",
                      "Snacks!!", None, "")


def _house(rng: random.Random) -> str | None:
    if rng.random() < 0.1:
        return None
    return rng.choice(HOUSE_SPELLINGS).format(n=rng.randint(1, 300))


def legacy_insert_user(w: Recorder, conn: psycopg.Connection[Any], rng: random.Random, owned: Owned) -> None:
    uid, hn = str(uuid.uuid4()), _house(rng)
    conn.execute("INSERT INTO users (id, name, phone, email, role, house_number) VALUES (%s, %s, %s, %s, %s, %s)",
                 (uid, f"writer {uid[:8]}", f"w{uid}", f"{uid}@writer.in", "customer", hn))
    owned["users"].append(uid)
    w.expect("users", uid, house_number=hn)


def legacy_update_house(w: Recorder, conn: psycopg.Connection[Any], rng: random.Random, owned: Owned) -> None:
    table = rng.choice(("users", "shops"))
    if not owned[table]:
        return
    rid, hn = rng.choice(owned[table]), _house(rng)
    conn.execute(f"UPDATE {table} SET house_number = %s, updated_at = now() WHERE id = %s", (hn, rid))
    w.expect(table, rid, house_number=hn)


def legacy_insert_shop(w: Recorder, conn: psycopg.Connection[Any], rng: random.Random, owned: Owned) -> None:
    if not owned["users"]:
        return
    sid, hn = str(uuid.uuid4()), _house(rng)
    conn.execute("INSERT INTO shops (id, owner_id, name, house_number, rating) VALUES (%s, %s, %s, %s, 4.0)",
                 (sid, rng.choice(owned["users"]), f"writer shop {sid[:6]}", hn))
    owned["shops"].append(sid)
    w.expect("shops", sid, house_number=hn)


def legacy_insert_product(w: Recorder, conn: psycopg.Connection[Any], rng: random.Random, owned: Owned) -> None:
    if not owned["shops"]:
        return
    pid = str(uuid.uuid4())
    cat = rng.choice(CATEGORY_SPELLINGS)
    price = Decimal(rng.choice(("0.00", "12.50", "99.00", "-1.00", "45.25")))
    stock = rng.choice((-2, 0, 5, 40))
    conn.execute("INSERT INTO products (id, shop_id, name, category, price, stock) VALUES (%s, %s, %s, %s, %s, %s)",
                 (pid, rng.choice(owned["shops"]), f"writer product {pid[:6]}", cat, price, stock))
    owned["products"].append(pid)
    owned["created"].append(pid)
    w.expect("products", pid, category=cat, price=price, stock=stock)


def legacy_update_product(w: Recorder, conn: psycopg.Connection[Any], rng: random.Random, owned: Owned) -> None:
    if not owned["products"]:
        return
    pid = rng.choice(owned["products"])
    choice = rng.random()
    if choice < 0.4:
        price = Decimal(rng.choice(("0.00", "15.00", "120.00", "33.30")))
        conn.execute("UPDATE products SET price = %s, updated_at = now() WHERE id = %s", (price, pid))
        w.expect("products", pid, price=price)
    elif choice < 0.8:
        stock = rng.randint(-3, 60)
        conn.execute("UPDATE products SET stock = %s, updated_at = now() WHERE id = %s", (stock, pid))
        w.expect("products", pid, stock=stock)
    else:
        cat = rng.choice(CATEGORY_SPELLINGS)
        conn.execute("UPDATE products SET category = %s, updated_at = now() WHERE id = %s", (cat, pid))
        w.expect("products", pid, category=cat)


def legacy_delete_product(w: Recorder, conn: psycopg.Connection[Any], rng: random.Random, owned: Owned) -> None:
    """Delete a product this writer created and never ordered (the legacy FK forbids the others), as
    the old application would: a plain DELETE, whose foreign-key check scans order_items until the
    migration's index on order_items.product_id exists."""
    ordered = set(owned["ordered"])
    mine = [p for p in owned["created"][-50:] if p not in ordered]
    if not mine:
        return
    pid = rng.choice(mine)
    conn.execute("DELETE FROM products WHERE id = %s", (pid,))
    owned["products"].remove(pid)
    owned["created"].remove(pid)
    w.forget("products", pid)


def legacy_insert_order(w: Recorder, conn: psycopg.Connection[Any], rng: random.Random, owned: Owned) -> None:
    if not owned["products"] or not owned["users"]:
        return
    pid = rng.choice(owned["products"])
    with conn.transaction():
        row = conn.execute("SELECT shop_id FROM products WHERE id = %s", (pid,)).fetchone()
        if row is None:
            return
        oid, iid = str(uuid.uuid4()), str(uuid.uuid4())
        total = Decimal("110.00") if rng.random() < 0.9 else Decimal("111.00")
        conn.execute("INSERT INTO orders (id, customer_id, shop_id, subtotal, delivery_fee, total)"
                     " VALUES (%s, %s, %s, 100, 10, %s)", (oid, rng.choice(owned["users"]), row[0], total))
        conn.execute("INSERT INTO order_items (id, order_id, product_id, quantity, unit_price)"
                     " VALUES (%s, %s, %s, 2, 50)", (iid, oid, pid))
    owned["orders"].append(oid)
    owned["ordered"].append(pid)
    w.expect("orders", oid, total=total)
    w.expect("order_items", iid, quantity=2)


def legacy_update_items(w: Recorder, conn: psycopg.Connection[Any], rng: random.Random, owned: Owned) -> None:
    """Change the quantities of one of this writer's orders (rows the order_items copy may have
    copied already: the rebuild must carry the change)."""
    if not owned["orders"]:
        return
    oid = rng.choice(owned["orders"])
    quantity = rng.randint(1, 9)
    for (iid,) in conn.execute("UPDATE order_items SET quantity = %s WHERE order_id = %s RETURNING id::text",
                               (quantity, oid)).fetchall():
        w.expect("order_items", iid, quantity=quantity)


def legacy_delete_order(w: Recorder, conn: psycopg.Connection[Any], rng: random.Random, owned: Owned) -> None:
    """Delete one of this writer's orders with its items, in one transaction (the legacy foreign key
    checks every copy of order_items the migration may hold)."""
    if len(owned["orders"]) < 20:
        return
    oid = owned["orders"].pop(rng.randrange(len(owned["orders"])))
    with conn.transaction():
        items = conn.execute("DELETE FROM order_items WHERE order_id = %s RETURNING id::text", (oid,)).fetchall()
        conn.execute("DELETE FROM orders WHERE id = %s", (oid,))
    for (iid,) in items:
        w.forget("order_items", iid)
    w.forget("orders", oid)


LEGACY_OPS = [legacy_insert_user, legacy_update_house, legacy_update_house, legacy_insert_shop,
              legacy_insert_product, legacy_update_product, legacy_update_product, legacy_update_product,
              legacy_delete_product, legacy_insert_order, legacy_insert_order, legacy_update_items,
              legacy_delete_order]
