"""The generated world: deterministic ids and random streams, and the rows of every legacy table as
COPY text lines, made lazily with only the compact per-row state that foreign keys need."""

from __future__ import annotations

import random
from array import array
from bisect import bisect_right
from collections.abc import Iterator, Mapping
from datetime import timedelta
from hashlib import blake2b

from villager_shop.legacy.generate.vocabulary import (
    ADJECTIVES,
    ADMIN_RATE,
    BASE_ROWS,
    CATEGORIES,
    CATEGORY_INDEX,
    CATEGORY_RATES,
    DESCRIPTIONS,
    EMAIL_DOMAINS,
    FIRST_NAMES,
    HISTORY_DAYS,
    HOUSE_RATES,
    ITEM_PRICE_CHANGED_RATE,
    ITEMS_PER_ORDER,
    LAST_NAMES,
    MESSY_CATEGORY_VALUES,
    MIN_ROWS,
    RATES,
    REFERENCE_DATE,
    SHOP_PREFIXES,
    SHOPS_PER_SHOPKEEPER,
    VILLAGES,
)
from villager_shop.legacy.schema import LEGACY_TABLES

# ---------------------------------------------------------------------------------------------
# Small deterministic building blocks


def _derive(seed: int, name: str) -> int:
    return int.from_bytes(blake2b(f"villager-shop/{seed}/{name}".encode(), digest_size=8).digest(), "big")


def _rng(seed: int, name: str) -> random.Random:
    return random.Random(_derive(seed, name))


class _Ids:
    """uuid v4 text of row i of a table: a keyed hash of (seed, table, i), so a foreign key is
    recomputed from its target's row number instead of being stored."""

    _VERSION_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
    _VERSION_SET = (0x4000 << 64) | (0x8000 << 48)

    def __init__(self, seed: int, table: str) -> None:
        key = blake2b(f"villager-shop/{seed}/ids".encode(), digest_size=32).digest()
        self._base = blake2b(digest_size=16, key=key, person=table.encode()[:16])

    def __call__(self, i: int) -> str:
        h = self._base.copy()
        h.update(i.to_bytes(8, "little"))
        n = (int.from_bytes(h.digest(), "big") & self._VERSION_CLEAR) | self._VERSION_SET
        x = f"{n:032x}"
        return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"


class Kinds:
    """Assign each row 0..n-1 at most one kind, with exact counts max(minimum, round(rate x n)) at
    random positions (one byte per row; drawing costs O(messy rows), not O(n))."""

    def __init__(self, n: int, rates: Mapping[str, float], rng: random.Random, minimum: int = 1) -> None:
        self.counts: dict[str, int] = {}
        left = n
        for kind, rate in rates.items():
            c = min(left, max(minimum, round(rate * n)))
            self.counts[kind] = c
            left -= c
        self.kinds: tuple[str | None, ...] = (None, *self.counts)
        self._marks = marks = bytearray(n)
        rnd = rng.random
        for code, c in enumerate(self.counts.values(), 1):
            placed = 0
            while placed < c:
                i = int(rnd() * n)
                if not marks[i]:
                    marks[i] = code
                    placed += 1

    def __call__(self, i: int) -> str | None:
        return self.kinds[self._marks[i]]


class _Clock:
    """Seconds since the start of history → timestamptz text, via lookup tables (fast, exact)."""

    def __init__(self) -> None:
        start = REFERENCE_DATE - timedelta(days=HISTORY_DAYS)
        self.end = HISTORY_DAYS * 86_400  # the reference date itself
        self._days = [(start + timedelta(days=d)).strftime("%Y-%m-%d ") for d in range(HISTORY_DAYS + 1)]
        self._hms = [f"{h:02d}:{m:02d}:{s:02d}+00" for h in range(24) for m in range(60) for s in range(60)]

    def __call__(self, t: int) -> str:
        return self._days[t // 86_400] + self._hms[t % 86_400]


def _money(cents: int) -> str:
    if cents < 0:
        return "-" + _money(-cents)
    return f"{cents // 100}.{cents % 100:02d}"


_COPY_SPECIALS = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def copy_text(value: str | None) -> str:
    """A value in COPY text format: NULL as \\N, backslash, tab and newlines escaped."""
    if value is None:
        return "\\N"
    return value.translate(_COPY_SPECIALS)


def _check_vocabulary() -> None:
    """Every fixed string goes into COPY lines unescaped: make sure none needs escaping."""
    words: list[str] = [*FIRST_NAMES, *LAST_NAMES, *VILLAGES, *SHOP_PREFIXES, *ADJECTIVES, *DESCRIPTIONS]
    for c in CATEGORIES:
        words += [c.name, *c.shop_types, *c.items, *c.sizes]
    for values in MESSY_CATEGORY_VALUES.values():
        words += [v for v, _ in values]
    bad = [w for w in words if copy_text(w) != w]
    if bad:
        raise RuntimeError(f"vocabulary needs COPY escaping: {bad}")


_check_vocabulary()

DAY = 86_400
NULL = "\\N"  # COPY text format


# ---------------------------------------------------------------------------------------------
# The world: sizes and the compact per-row state that foreign keys need


def table_sizes(scale: float) -> dict[str, int]:
    """Exact row counts of users, shops, products and orders at a scale (order_items are ~2.48 x orders)."""
    return {t: max(MIN_ROWS[t], round(n * scale)) for t, n in BASE_ROWS.items()}


class World:
    def __init__(self, scale: float, seed: int) -> None:
        self.seed = seed
        sizes = table_sizes(scale)
        self.n_users = sizes["users"]
        self.n_shops = sizes["shops"]
        self.n_products = max(sizes["products"], self.n_shops)
        self.n_orders = sizes["orders"]
        self.clock = _Clock()
        self.ids = {t: _Ids(seed, t) for t in LEGACY_TABLES}
        # roles: user i is an admin when i % stride == 0 and i // stride < n_admins, a shopkeeper when
        # i % stride == sk_off and i // stride < n_shopkeepers
        self.n_shopkeepers = max(1, round(self.n_shops / SHOPS_PER_SHOPKEEPER))
        self.stride = max(2, self.n_users // self.n_shopkeepers)
        self.n_shopkeepers = min(self.n_shopkeepers, (self.n_users - 1) // self.stride + 1)
        self.sk_off = self.stride // 2
        self.n_admins = max(1, round(self.n_users * ADMIN_RATE))
        # houses: ~2.5 users per house; ~30 % of house numbers carry a letter (12A, 12B)
        rng = _rng(seed, "houses")
        n_houses = max(4, round(self.n_users / 2.5))
        self.houses: list[tuple[str, str]] = []  # (number, letter)
        self.lettered: list[int] = []
        number = 0
        while len(self.houses) < n_houses:
            number += 1 + (rng.random() < 0.15)
            if rng.random() < 0.15:
                for letter in "AB" if rng.random() < 0.7 else "ABC":
                    self.lettered.append(len(self.houses))
                    self.houses.append((str(number), letter))
            else:
                self.houses.append((str(number), ""))
        # per-row state filled while streaming
        self.user_created = array("i", bytes(4 * self.n_users))
        self.user_house = array("i", bytes(4 * self.n_users))
        self.shop_created = array("i", bytes(4 * self.n_shops))
        self.shop_category = array("B", bytes(self.n_shops))
        self.product_price = array("i", bytes(4 * self.n_products))  # the (positive) price orders paid
        self.product_available = bytearray(self.n_products)
        # products per shop: contiguous ranges [offsets[j], offsets[j + 1])
        rng = _rng(seed, "shop-sizes")
        weights = [0.2 + 1.6 * rng.random() for _ in range(self.n_shops)]
        spare = self.n_products - self.n_shops
        total_w = sum(weights)
        self.offsets = array("i", [0])
        acc_w = 0.0
        for j, w in enumerate(weights):
            acc_w += w
            self.offsets.append(j + 1 + min(spare, int(spare * acc_w / total_w + 1e-9)))
        self.offsets[-1] = self.n_products
        self.category_cum: list[int] = []
        acc = 0
        for c in CATEGORIES:
            acc += c.weight
            self.category_cum.append(acc)

    def role(self, i: int) -> str:
        q, r = divmod(i, self.stride)
        if r == 0 and q < self.n_admins:
            return "admin"
        if r == self.sk_off and q < self.n_shopkeepers:
            return "shopkeeper"
        return "customer"

    def owner_of(self, j: int) -> int:
        return (j % self.n_shopkeepers) * self.stride + self.sk_off

    def house_text(self, h: int, kind: str | None, r: float) -> str | None:
        number, letter = self.houses[h]
        if kind is None:
            return number + letter
        if kind == "null":
            return None
        if kind == "empty":
            return ""
        if kind == "blank":
            return " " * (1 + int(r * 3))
        if kind == "padded":
            text = number + letter
            return (" " + text + " ", " " + text, text + "  ", "  " + text + " ")[int(r * 4)]
        if kind == "lower_case":
            return number + letter.lower()
        return number + " " + letter  # inner_space

    # -- streams -------------------------------------------------------------------------------

    def users(self) -> Iterator[str]:
        rng = _rng(self.seed, "users")
        rnd = rng.random
        n = self.n_users
        house_kinds = Kinds(n, HOUSE_RATES, _rng(self.seed, "users.house_number"))
        phone_null = Kinds(n, RATES["users.phone"], _rng(self.seed, "users.phone"))
        email_null = Kinds(n, RATES["users.email"], _rng(self.seed, "users.email"))
        phone_a, phone_b = 2_654_435_761, int(_rng(self.seed, "phones").random() * 4_000_000_000)
        uid, clock, end = self.ids["users"], self.clock, self.clock.end
        n_houses, lettered = len(self.houses), self.lettered
        for i in range(n):
            first = FIRST_NAMES[int(rnd() * len(FIRST_NAMES))]
            last = LAST_NAMES[int(rnd() * len(LAST_NAMES))]
            single = rnd() < 0.05
            name = first if single else f"{first} {last}"
            role = self.role(i)
            x = (i + rnd()) / n
            # growth: fewer users early, more later; shopkeepers mostly early, none in the last 60 days
            created = int((end - 60 * DAY) * x**1.3) if role == "shopkeeper" else int((end - DAY) * x**0.8)
            updated = created if rnd() < 0.55 else created + int((end - 1 - created) * rnd() ** 2)
            kind = house_kinds(i)
            r = rnd()
            h = lettered[int(r * len(lettered))] if kind in ("lower_case", "inner_space") else int(r * n_houses)
            self.user_created[i] = created
            self.user_house[i] = h
            house = self.house_text(h, kind, rnd())
            phone = NULL if phone_null(i) else f"+91{6_000_000_000 + (i * phone_a + phone_b) % 4_000_000_000}"
            if email_null(i):
                email = NULL
            else:
                local = f"{first}{i}" if single else f"{first}.{last}{i}"
                email = f"{local.lower()}@{EMAIL_DOMAINS[int(rnd() * len(EMAIL_DOMAINS))]}"
            yield (
                f"{uid(i)}\t{name}\t{phone}\t{email}\t{role}\t{NULL if house is None else house}"
                f"\t{clock(created)}\t{clock(updated)}\n"
            )

    def shops(self) -> Iterator[str]:
        rng = _rng(self.seed, "shops")
        rnd = rng.random
        house_kinds = Kinds(self.n_shops, HOUSE_RATES, _rng(self.seed, "shops.house_number"))
        sid, uid, clock, end = self.ids["shops"], self.ids["users"], self.clock, self.clock.end
        cum, total_w = self.category_cum, self.category_cum[-1]
        n_houses, lettered = len(self.houses), self.lettered
        for j in range(self.n_shops):
            owner = self.owner_of(j)
            second = j >= self.n_shopkeepers
            delay = int(((30 + 170 * rnd()) if second else 30 * rnd()) * DAY)
            created = min(self.user_created[owner] + delay, end - 10 * DAY)
            created = max(created, self.user_created[owner])
            updated = created if rnd() < 0.3 else created + int((end - 1 - created) * rnd())
            c = bisect_right(cum, int(rnd() * total_w))
            cat = CATEGORIES[c]
            self.shop_category[j] = c
            self.shop_created[j] = created
            shop_type = cat.shop_types[int(rnd() * len(cat.shop_types))]
            r = rnd()
            if r < 0.5:
                name = f"{SHOP_PREFIXES[int(rnd() * len(SHOP_PREFIXES))]} {shop_type}"
            elif r < 0.85:
                name = f"{LAST_NAMES[int(rnd() * len(LAST_NAMES))]} {shop_type}"
            else:
                name = f"{VILLAGES[int(rnd() * len(VILLAGES))]} {shop_type}"
            kind = house_kinds(j)
            r = rnd()
            h = self.user_house[owner] if r < 0.4 else int(rnd() * n_houses)
            if kind in ("lower_case", "inner_space") and not self.houses[h][1]:
                h = lettered[int(rnd() * len(lettered))]
            house = self.house_text(h, kind, rnd())
            age_days = (end - created) / DAY
            rating = 0 if age_days < 30 or rnd() < 0.1 else 30 + int(21 * rnd() ** 0.7)
            is_open = "t" if rnd() < 0.92 else "f"
            yield (
                f"{sid(j)}\t{uid(owner)}\t{name}\t{NULL if house is None else house}\t{rating // 10}.{rating % 10}"
                f"\t{is_open}\t{clock(created)}\t{clock(updated)}\n"
            )

    def products(self) -> Iterator[str]:
        rng = _rng(self.seed, "products")
        rnd = rng.random
        n = self.n_products
        cat_kinds = Kinds(n, CATEGORY_RATES, _rng(self.seed, "products.category"))
        price_kinds = Kinds(n, RATES["products.price"], _rng(self.seed, "products.price"))
        stock_kinds = Kinds(n, RATES["products.stock"], _rng(self.seed, "products.stock"))
        avail_kinds = Kinds(n, RATES["products.is_available"], _rng(self.seed, "products.is_available"))
        pid, sid, clock, end = self.ids["products"], self.ids["shops"], self.clock, self.clock.end
        turn = dict.fromkeys(MESSY_CATEGORY_VALUES, 0)
        n_cat = len(CATEGORIES)
        for j in range(self.n_shops):
            shop_id = sid(j)
            shop_created = self.shop_created[j]
            main_cat = self.shop_category[j]
            for p in range(self.offsets[j], self.offsets[j + 1]):
                c = main_cat if rnd() < 0.8 else int(rnd() * n_cat)
                kind = cat_kinds(p)
                category: str | None
                if kind in MESSY_CATEGORY_VALUES:
                    values = MESSY_CATEGORY_VALUES[kind]
                    category, canonical = values[turn[kind] % len(values)]
                    turn[kind] += 1
                    if canonical:
                        c = CATEGORY_INDEX[canonical]
                    cat = CATEGORIES[c]
                else:
                    cat = CATEGORIES[c]
                    category = self._category_text(cat.name, kind, rnd())
                item = cat.items[int(rnd() * len(cat.items))]
                size = cat.sizes[int(rnd() * len(cat.sizes))]
                name = f"{item} {size}" if size else item
                if rnd() < 0.15:
                    name = f"{ADJECTIVES[int(rnd() * len(ADJECTIVES))]} {name}"
                if rnd() < 0.35:
                    description = NULL
                else:
                    description = DESCRIPTIONS[int(rnd() * len(DESCRIPTIONS))].format(
                        v=VILLAGES[int(rnd() * len(VILLAGES))])
                lo, hi = cat.price
                cents = int(lo + (hi - lo) * rnd() ** 1.5) * 100 + (50 if rnd() < 0.2 else 0)
                self.product_price[p] = cents
                pk = price_kinds(p)
                shown = cents if pk is None else (0 if pk == "zero" else -cents)
                r = rnd()
                stock = 0 if r < 0.08 else int(1 + 200 * rnd() ** 2)
                if stock_kinds(p):
                    stock = -1 - int(rnd() * 20)
                available = avail_kinds(p) is None
                self.product_available[p] = available
                rating = 0 if rnd() < 0.2 else 25 + int(26 * rnd() ** 0.6)
                order_count = int(500 * rnd() ** 4)
                created = min(shop_created + int(7 * DAY * rnd()), end - 8 * DAY)
                updated = created if rnd() < 0.4 else created + int((end - 1 - created) * rnd())
                yield (
                    f"{pid(p)}\t{shop_id}\t{name}\t{description}\t{NULL if category is None else category}"
                    f"\t{_money(shown)}\t{stock}\t{'t' if available else 'f'}\t{rating // 10}.{rating % 10}"
                    f"\t{order_count}\t{clock(created)}\t{clock(updated)}\n"
                )

    @staticmethod
    def _category_text(name: str, kind: str | None, r: float) -> str | None:
        if kind is None:
            return name
        if kind == "null":
            return None
        if kind == "empty":
            return ""
        if kind == "blank":
            return "  "
        # case_space: case and/or spacing variants of the canonical name
        variants = (name.lower() + " ", " " + name.upper(), name.lower(), name.upper(), " " + name,
                    name + " ", name.replace(" ", "  ") if " " in name else name.lower() + "  ")
        return variants[int(r * len(variants))]

    def _orders(self) -> Iterator[tuple[int, str, int, int, int, int, int, int, int, list[tuple[int, int, int]]]]:
        """(order, status, customer, shop, subtotal, fee, total, created, updated, items) per order;
        items are (product, quantity, unit_price). Run twice (orders, then order_items) with the same
        seed, so neither pass keeps anything."""
        rng = _rng(self.seed, "orders")
        rnd = rng.random
        total_kinds = Kinds(self.n_orders, RATES["orders.total"], _rng(self.seed, "orders.total"))
        end = self.clock.end
        n_users, n_shops = self.n_users, self.n_shops
        sizes = [k for k, _ in ITEMS_PER_ORDER]
        size_cum: list[float] = []
        acc = 0.0
        for _, pr in ITEMS_PER_ORDER:
            acc += pr
            size_cum.append(acc)
        offsets, prices = self.offsets, self.product_price
        fees = (1000, 1500, 2000, 3000, 4000)
        for o in range(self.n_orders):
            u = int(n_users * rnd() ** 1.25)
            if self.role(u) == "admin":
                u = (u + 1) % n_users
            j = int(n_shops * rnd() ** 1.4)
            lower = max(self.user_created[u], self.shop_created[j] + 7 * DAY)
            upper = end - 60
            created = lower + int((upper - lower) * rnd())
            age = end - created
            r = rnd()
            if age < DAY:
                status = "pending" if r < 0.6 else "confirmed"
            elif age < 3 * DAY:
                status = "confirmed" if r < 0.3 else ("delivered" if r < 0.9 else "cancelled")
            else:
                status = ("delivered" if r < 0.87 else "cancelled" if r < 0.97
                          else "confirmed" if r < 0.985 else "pending")
            r = rnd()
            if status == "pending":
                updated = created
            elif status == "confirmed":
                updated = created + int(300 + 7200 * r)
            elif status == "delivered":
                updated = created + int(3600 + 47 * 3600 * r)
            else:
                updated = created + int(60 + 36_000 * r)
            updated = min(updated, end)
            k = sizes[min(bisect_right(size_cum, rnd()), len(sizes) - 1)]
            base = offsets[j]
            count = offsets[j + 1] - base
            k = min(k, count)
            picked: list[int] = []
            while len(picked) < k:
                p = base + int(count * rnd())
                if p not in picked:
                    picked.append(p)
            items: list[tuple[int, int, int]] = []
            subtotal = 0
            for p in picked:
                r = rnd()
                qty = 1 if r < 0.6 else 2 if r < 0.85 else 3 if r < 0.95 else 4 + int(7 * rnd())
                unit = prices[p]
                if rnd() < ITEM_PRICE_CHANGED_RATE:
                    changed = int(unit * (0.8 + 0.4 * rnd())) // 50 * 50
                    unit = changed if changed > 0 and changed != unit else unit + 500
                items.append((p, qty, unit))
                subtotal += qty * unit
            fee = 0 if subtotal >= 50_000 or rnd() < 0.35 else fees[int(rnd() * len(fees))]
            total = subtotal + fee
            if total_kinds(o):
                r = rnd()
                if r < 0.4 and fee:
                    total = subtotal  # fee forgotten
                elif r < 0.7:
                    total += 1 + int(98 * rnd())  # paise rounding
                else:
                    total -= 500 + 100 * int(45 * rnd())  # a discount nobody recorded
            yield o, status, u, j, subtotal, fee, total, created, updated, items

    def orders(self) -> Iterator[str]:
        oid, uid, sid, clock = self.ids["orders"], self.ids["users"], self.ids["shops"], self.clock
        for o, status, u, j, subtotal, fee, total, created, updated, _items in self._orders():
            yield (
                f"{oid(o)}\t{uid(u)}\t{sid(j)}\t{status}\t{_money(subtotal)}\t{_money(fee)}\t{_money(total)}"
                f"\t{clock(created)}\t{clock(updated)}\n"
            )

    def order_items(self) -> Iterator[str]:
        iid, oid, pid, clock = self.ids["order_items"], self.ids["orders"], self.ids["products"], self.clock
        n = 0
        for o, _status, _u, _j, _sub, _fee, _total, created, _upd, items in self._orders():
            order_id = oid(o)
            ts = clock(created)
            for p, qty, unit in items:
                yield f"{iid(n)}\t{order_id}\t{pid(p)}\t{qty}\t{_money(unit)}\t{ts}\n"
                n += 1


COLUMNS: dict[str, tuple[str, ...]] = {
    "users": ("id", "name", "phone", "email", "role", "house_number", "created_at", "updated_at"),
    "shops": ("id", "owner_id", "name", "house_number", "rating", "is_open", "created_at", "updated_at"),
    "products": ("id", "shop_id", "name", "description", "category", "price", "stock", "is_available",
                 "rating", "order_count", "created_at", "updated_at"),
    "orders": ("id", "customer_id", "shop_id", "status", "subtotal", "delivery_fee", "total", "created_at",
               "updated_at"),
    "order_items": ("id", "order_id", "product_id", "quantity", "unit_price", "created_at"),
}
