"""A live workload that plays the old application (writing house_number, category, price, stock)
and, once the normalized tables exist, the new one (writing addresses, categories, variants),
while a migration runs. It records every write's latency and every error, and remembers what it
wrote last to each row it owns, so a test can check that every write is present in both
representations afterwards.

Each thread owns its rows (the ones it inserted, plus existing rows whose id hash falls in its
partition), so the expected final value of a row is the last one its thread committed.

Two ways to drive it. Closed loop (`rate=None`): each thread writes again as soon as its last write
returns (plus `pause_s`): the harshest load, for tests. Open loop (`rate` writes/s in all): writes
fall due on a fixed schedule, as an application's requests arrive whether or not the database keeps
up, so a migration that locks the writers out does not also take the load away, and the load
generator (a process on the database's own machine here) takes the same CPU share in every run. A
thread that falls behind catches up without pausing. Either way a write's latency is its own time in
the database, from its first statement to its last result.
"""

from __future__ import annotations

import random
import statistics
import threading
import time
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import psycopg

from villager_shop.core.db import connect

HOUSE_SPELLINGS = ("{n}a", " {n}A ", "{n} A", "{n}B", "{n}", "  {n}c", "")
SLOW_MS = 50.0
SLOW_KEPT = 500
CATEGORY_SPELLINGS = ("Grocery", "grocery ", "Fruits & Veg", "Fruits Veg", "मिठाई", "Home  Decor", "home decor",
                      "Snacks!!", None, "")


@dataclass
class WriterStats:
    ops: int = 0
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    by_kind: dict[str, int] = field(default_factory=dict)
    # (wall-clock start of the write, its latency in ms, its operation), in completion order.
    samples: list[tuple[float, float, str]] = field(default_factory=list)
    # The slow writes (>= SLOW_MS) with their operation, to tell what waited (at most SLOW_KEPT).
    slow: list[tuple[float, float, str]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies_ms) or [0.0]

        def pct(p: float) -> float:
            return round(lat[min(len(lat) - 1, int(p * len(lat)))], 2)

        return {"writer_ops": self.ops, "writer_errors": self.errors, "writer_p50_ms": pct(0.50),
                "writer_p99_ms": pct(0.99), "writer_max_ms": round(lat[-1], 2),
                "writer_mean_ms": round(statistics.fmean(lat), 2), "by_kind": dict(self.by_kind),
                "error_samples": self.error_samples[:5]}


class LiveWriter:
    def __init__(self, url: str, *, legacy_threads: int = 3, new_threads: int = 1, pause_s: float = 0.005,
                 seed: int = 7, rate: float | None = None) -> None:
        self.url = url
        self.rate = rate
        self.legacy_threads = legacy_threads
        self.new_threads = new_threads
        self.pause_s = pause_s
        self.seed = seed
        self.stats = WriterStats()
        self.expected: dict[tuple[str, str], dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # --- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> LiveWriter:
        n = self.legacy_threads + self.new_threads
        for i in range(n):
            kind = "legacy" if i < self.legacy_threads else "new"
            t = threading.Thread(target=self._loop, args=(i, n, kind), daemon=True, name=f"writer-{kind}-{i}")
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> WriterStats:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)
        return self.stats

    def __enter__(self) -> LiveWriter:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- the loop ----------------------------------------------------------------------------------

    def _loop(self, index: int, parts: int, kind: str) -> None:
        rng = random.Random(self.seed * 1000 + index)
        conn = connect(self.url, autocommit=True, application_name=f"live-writer {kind}")
        owned: dict[str, list[str]] = {t: [] for t in (*_ADOPTED, "created", "ordered")}
        # Each thread's share of the rate, its first write staggered so the threads do not beat together.
        interval = parts / self.rate if self.rate else 0.0
        due = time.perf_counter() + rng.random() * interval
        try:
            self._adopt(conn, owned, index, parts)
            while not self._stop.is_set():
                if kind == "legacy":
                    op = rng.choice(_LEGACY_OPS)
                else:
                    if not _normalized_ready(conn):
                        time.sleep(0.05)
                        due = time.perf_counter()
                        continue
                    op = rng.choice(_NEW_OPS)
                if interval:
                    ahead = due - time.perf_counter()
                    if ahead > 0 and self._stop.wait(ahead):
                        break
                    due += interval
                started, t0 = time.time(), time.perf_counter()
                try:
                    op(self, conn, rng, owned)
                    ok = True
                except psycopg.Error as exc:
                    ok = False
                    err = f"{op.__name__}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                ms = (time.perf_counter() - t0) * 1000
                with self._lock:
                    self.stats.ops += 1
                    self.stats.latencies_ms.append(ms)
                    self.stats.samples.append((started, ms, op.__name__))
                    if ms >= SLOW_MS and len(self.stats.slow) < SLOW_KEPT:
                        self.stats.slow.append((started, ms, op.__name__))
                    self.stats.by_kind[op.__name__] = self.stats.by_kind.get(op.__name__, 0) + 1
                    if not ok:
                        self.stats.errors += 1
                        if len(self.stats.error_samples) < 20:
                            self.stats.error_samples.append(err)
                if self.pause_s and not interval:
                    time.sleep(self.pause_s)
        finally:
            conn.close()

    def _adopt(self, conn: psycopg.Connection[Any], owned: dict[str, list[str]], index: int, parts: int) -> None:
        """Take a bounded sample of existing rows of this thread's partition to update."""
        for table in _ADOPTED:
            rows = conn.execute(
                f"SELECT id::text FROM {table} WHERE abs(hashtext(id::text)) %% %s = %s LIMIT 200",
                (parts, index)).fetchall()
            owned[table].extend(r[0] for r in rows)

    def _expect(self, table: str, row_id: str, **values: Any) -> None:
        with self._lock:
            self.expected.setdefault((table, row_id), {}).update(values)

    def _forget(self, table: str, row_id: str) -> None:
        with self._lock:
            self.expected[(table, row_id)] = {"deleted": True}


_ADOPTED = ("users", "shops", "products", "orders")


def _normalized_ready(conn: psycopg.Connection[Any]) -> bool:
    """Every new table and column exists: the addresses' rename trigger comes with the last of them."""
    row = conn.execute(
        "SELECT count(*) FROM pg_trigger WHERE tgname = 'villager_sync_address_after'").fetchone()
    return bool(row and row[0])


def _house(rng: random.Random) -> str | None:
    if rng.random() < 0.1:
        return None
    return rng.choice(HOUSE_SPELLINGS).format(n=rng.randint(1, 300))


# --- the old application: legacy columns only --------------------------------------------------------

def legacy_insert_user(w: LiveWriter, conn: psycopg.Connection[Any], rng: random.Random,
                       owned: dict[str, list[str]]) -> None:
    uid, hn = str(uuid.uuid4()), _house(rng)
    conn.execute("INSERT INTO users (id, name, phone, email, role, house_number) VALUES (%s, %s, %s, %s, %s, %s)",
                 (uid, f"writer {uid[:8]}", f"w{uid}", f"{uid}@writer.in", "customer", hn))
    owned["users"].append(uid)
    w._expect("users", uid, house_number=hn)


def legacy_update_house(w: LiveWriter, conn: psycopg.Connection[Any], rng: random.Random,
                        owned: dict[str, list[str]]) -> None:
    table = rng.choice(("users", "shops"))
    if not owned[table]:
        return
    rid, hn = rng.choice(owned[table]), _house(rng)
    conn.execute(f"UPDATE {table} SET house_number = %s, updated_at = now() WHERE id = %s", (hn, rid))
    w._expect(table, rid, house_number=hn)


def legacy_insert_shop(w: LiveWriter, conn: psycopg.Connection[Any], rng: random.Random,
                       owned: dict[str, list[str]]) -> None:
    if not owned["users"]:
        return
    sid, hn = str(uuid.uuid4()), _house(rng)
    conn.execute("INSERT INTO shops (id, owner_id, name, house_number, rating) VALUES (%s, %s, %s, %s, 4.0)",
                 (sid, rng.choice(owned["users"]), f"writer shop {sid[:6]}", hn))
    owned["shops"].append(sid)
    w._expect("shops", sid, house_number=hn)


def legacy_insert_product(w: LiveWriter, conn: psycopg.Connection[Any], rng: random.Random,
                          owned: dict[str, list[str]]) -> None:
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
    w._expect("products", pid, category=cat, price=price, stock=stock)


def legacy_update_product(w: LiveWriter, conn: psycopg.Connection[Any], rng: random.Random,
                          owned: dict[str, list[str]]) -> None:
    if not owned["products"]:
        return
    pid = rng.choice(owned["products"])
    choice = rng.random()
    if choice < 0.4:
        price = Decimal(rng.choice(("0.00", "15.00", "120.00", "33.30")))
        conn.execute("UPDATE products SET price = %s, updated_at = now() WHERE id = %s", (price, pid))
        w._expect("products", pid, price=price)
    elif choice < 0.8:
        stock = rng.randint(-3, 60)
        conn.execute("UPDATE products SET stock = %s, updated_at = now() WHERE id = %s", (stock, pid))
        w._expect("products", pid, stock=stock)
    else:
        cat = rng.choice(CATEGORY_SPELLINGS)
        conn.execute("UPDATE products SET category = %s, updated_at = now() WHERE id = %s", (cat, pid))
        w._expect("products", pid, category=cat)


def legacy_delete_product(w: LiveWriter, conn: psycopg.Connection[Any], rng: random.Random,
                          owned: dict[str, list[str]]) -> None:
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
    w._forget("products", pid)


def legacy_insert_order(w: LiveWriter, conn: psycopg.Connection[Any], rng: random.Random,
                        owned: dict[str, list[str]]) -> None:
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
    w._expect("orders", oid, total=total)
    w._expect("order_items", iid, quantity=2)


def legacy_update_items(w: LiveWriter, conn: psycopg.Connection[Any], rng: random.Random,
                        owned: dict[str, list[str]]) -> None:
    """Change the quantities of one of this writer's orders (rows the order_items copy may have
    copied already: the rebuild must carry the change)."""
    if not owned["orders"]:
        return
    oid = rng.choice(owned["orders"])
    quantity = rng.randint(1, 9)
    for (iid,) in conn.execute("UPDATE order_items SET quantity = %s WHERE order_id = %s RETURNING id::text",
                               (quantity, oid)).fetchall():
        w._expect("order_items", iid, quantity=quantity)


def legacy_delete_order(w: LiveWriter, conn: psycopg.Connection[Any], rng: random.Random,
                        owned: dict[str, list[str]]) -> None:
    """Delete one of this writer's orders with its items, in one transaction (the legacy foreign key
    checks every copy of order_items the migration may hold)."""
    if len(owned["orders"]) < 20:
        return
    oid = owned["orders"].pop(rng.randrange(len(owned["orders"])))
    with conn.transaction():
        items = conn.execute("DELETE FROM order_items WHERE order_id = %s RETURNING id::text", (oid,)).fetchall()
        conn.execute("DELETE FROM orders WHERE id = %s", (oid,))
    for (iid,) in items:
        w._forget("order_items", iid)
    w._forget("orders", oid)


# --- the new application: normalized tables only ------------------------------------------------------

def new_set_variant(w: LiveWriter, conn: psycopg.Connection[Any], rng: random.Random,
                    owned: dict[str, list[str]]) -> None:
    if not owned["products"]:
        return
    pid = rng.choice(owned["products"])
    price, stock = Decimal(rng.choice(("19.99", "25.00", "7.50"))), rng.randint(0, 30)
    cur = conn.execute("UPDATE product_variants SET price = %s, stock = %s, updated_at = now()"
                       " WHERE product_id = %s AND is_default AND is_active", (price, stock, pid))
    if cur.rowcount:
        w._expect("products", pid, price=price, stock=stock)


def new_move_address(w: LiveWriter, conn: psycopg.Connection[Any], rng: random.Random,
                     owned: dict[str, list[str]]) -> None:
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
    w._expect(table, rid, house_number=hn)


def new_set_category(w: LiveWriter, conn: psycopg.Connection[Any], rng: random.Random,
                     owned: dict[str, list[str]]) -> None:
    if not owned["products"]:
        return
    pid = rng.choice(owned["products"])
    row = conn.execute("SELECT id, name FROM product_categories ORDER BY random() LIMIT 1").fetchone()
    if row is None:
        return
    conn.execute("UPDATE products SET category_id = %s, updated_at = now() WHERE id = %s", (row[0], pid))
    w._expect("products", pid, category_key_of=row[1])


def new_insert_product(w: LiveWriter, conn: psycopg.Connection[Any], rng: random.Random,
                       owned: dict[str, list[str]]) -> None:
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
    w._expect("products", pid, price=price, stock=12, category_key_of=cat[1] if cat else None)


_LEGACY_OPS = [legacy_insert_user, legacy_update_house, legacy_update_house, legacy_insert_shop,
               legacy_insert_product, legacy_update_product, legacy_update_product, legacy_update_product,
               legacy_delete_product, legacy_insert_order, legacy_insert_order, legacy_update_items,
               legacy_delete_order]
_NEW_OPS = [new_set_variant, new_set_variant, new_move_address, new_set_category, new_insert_product]


def check_expected(url: str, writer: LiveWriter) -> list[str]:
    """Every write the writer committed is present in the legacy columns (the normalized side is
    checked against them by check_data_integrity()). Returns the differences."""
    problems: list[str] = []
    with psycopg.connect(url) as conn:
        for (table, rid), want in writer.expected.items():
            if want.get("deleted"):
                if conn.execute(f"SELECT 1 FROM {table} WHERE id = %s", (rid,)).fetchone():
                    problems.append(f"{table} {rid}: deleted but present")
                continue
            cols = [c for c in want if c != "category_key_of"]
            if "category_key_of" in want:
                cols.append("category")
            row = conn.execute(f"SELECT {', '.join(cols)} FROM {table} WHERE id = %s", (rid,)).fetchone()
            if row is None:
                problems.append(f"{table} {rid}: missing")
                continue
            got = dict(zip(cols, row, strict=True))
            for col, value in want.items():
                if col == "category_key_of":
                    same = conn.execute("SELECT villager_migration.category_key(%s)"
                                        " IS NOT DISTINCT FROM villager_migration.category_key(%s)",
                                        (got["category"], value)).fetchone()
                    if not (same and same[0]):
                        problems.append(f"{table} {rid}: category {got['category']!r}, expected {value!r}")
                elif col == "house_number" and isinstance(value, str) and value.startswith("N"):
                    if got[col] != value.upper():
                        problems.append(f"{table} {rid}: house_number {got[col]!r}, expected {value!r}")
                elif got[col] != value:
                    problems.append(f"{table} {rid}: {col} {got[col]!r}, expected {value!r}")
    return problems
