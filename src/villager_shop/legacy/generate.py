"""Fill an empty legacy database with realistic, deterministic and deliberately messy data.

`generate(url, scale=..., seed=...)` streams rows with `COPY … FROM STDIN` (preformatted text lines
written in large chunks), table by table in foreign-key order: users → shops → products → orders →
order_items, all in one transaction, then runs `ANALYZE` and measures what it loaded with SQL.

Determinism: the same (seed, scale) gives identical rows in every column. Row ids are uuid v4 values
derived from a keyed hash of (seed, table, row number), so a foreign key is recomputed from the row
number of its target instead of being stored; every other value comes from `random.Random` streams
seeded from (seed, stream name), using only `random()` (stable across Python versions). Timestamps
lie in the 548 days (~18 months) before the fixed reference date 2026-06-01 00:00 UTC, never `now()`.
Memory is flat: rows are generated lazily; the only per-row state kept is a few compact arrays
(user creation time and house, shop creation time and category, product price and availability:
about 13 bytes per user/shop/product, no order kept).

Sizes at scale 1 (linear in scale; small minimums keep scale 0.01 meaningful):

| table       | rows at scale 1 | exact?                                             |
|-------------|-----------------|----------------------------------------------------|
| users       | 10 000          | exact: round(10 000 x scale), at least 20          |
| shops       | 1 000           | exact: round(1 000 x scale), at least 2            |
| products    | 50 000          | exact: round(50 000 x scale), at least 10          |
| orders      | 100 000         | exact: round(100 000 x scale), at least 20         |
| order_items | ~248 000        | 1-5 per order, mean 2.48; ±3 % of 2.48 x orders from scale 0.05 |

Roles: about 0.1 % admins (at least 1), one shopkeeper per ~1.1 shops (every shop's owner is a
shopkeeper; ~10 % of shopkeepers own two shops), the rest customers.

Messy rows (docs/legacy-data.md has the same table and the SQL that measures each kind). Kinds with
an exact rate are given to exactly max(1, round(rate x rows)) rows, drawn at random positions, so every
kind is present even at scale 0.01 (where that minimum makes the share larger than the rate); the
kinds of one column are mutually exclusive:

| column                   | kind             | rate  | example                                            |
|--------------------------|------------------|-------|----------------------------------------------------|
| users/shops.house_number | null             | 5 %   | NULL                                               |
|                          | empty            | 1.5 % | ''                                                 |
|                          | blank            | 0.5 % | '   '                                              |
|                          | padded           | 3 %   | ' 12A ', ' 7', '31B  '                             |
|                          | lower_case       | 4 %   | '12a' (canonical '12A')                            |
|                          | inner_space      | 2 %   | '12 A'                                             |
| users.phone              | null             | 10 %  | NULL (the others are unique '+91XXXXXXXXXX')       |
| users.email              | null             | 30 %  | NULL (the others are unique)                       |
| products.category        | null             | 2 %   | NULL                                               |
|                          | empty            | 0.5 % | ''                                                 |
|                          | blank            | 0.3 % | '  '                                               |
|                          | case_space       | 5 %   | 'electronics ', ' ELECTRONICS', 'Home  Decor'      |
|                          | punctuation      | 1 %   | 'Fruits & Veg', 'Fruits-Veg!', 'Snacks!!', 'Dairy.' |
|                          | slug_twin        | 0.5 % | 'Fruits Veg', 'Tea Coffee' (slug of 'Tea/Coffee')  |
|                          | non_ascii        | 1 %   | 'मिठाई', 'सब्ज़ी', 'Café Snacks', 'किराना'              |
|                          | punctuation_only | 0.2 % | '!!!', '---', '?', '...'                           |
| products.price           | zero / negative  | 0.3 % / 0.2 % | 0.00 / -45.00                              |
| products.stock           | negative         | 0.5 % | -3                                                 |
| products.is_available    | false            | 6 %   | false                                              |
| orders.total             | mismatch         | 1 %   | total <> subtotal + delivery_fee                   |
| order_items.unit_price   | differs          | ~3 %  | Bernoulli 3 % (price changed since), plus items of |
|                          |                  |       | products whose price is now 0 or negative (~0.5 %) |
| order_items.product_id   | unavailable      | ~6 %  | product is_available = false (follows the 6 %)     |

House numbers are canonical '12' or '12A' (~30 % of houses carry a letter); ~2.5 users share a house,
so the same house is written several ways across rows; 40 % of shops sit in their owner's house and
the others in a random village house, so shops share house numbers with users.
Everything else is clean: orders.subtotal = sum(quantity x unit_price) of its items, orders are
created after their customer and 7 days after their shop, products after their shop, shops after
their owner, order_items.created_at = the order's created_at, created_at <= updated_at <= 2026-06-01.
products.order_count is a legacy counter, not consistent with order_items.
"""

from __future__ import annotations

import random
import time
from array import array
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from hashlib import blake2b
from typing import Any

import psycopg
from psycopg import sql

from villager_shop.core.db import connection
from villager_shop.core.errors import RefusedError, VillagerError
from villager_shop.core.urls import dbname_of
from villager_shop.legacy.schema import LEGACY_TABLES

# ---------------------------------------------------------------------------------------------
# Public constants: what the data looks like (docs/legacy-data.md documents the same numbers).

REFERENCE_DATE = datetime(2026, 6, 1, tzinfo=UTC)
HISTORY_DAYS = 548
BASE_ROWS: dict[str, int] = {"users": 10_000, "shops": 1_000, "products": 50_000, "orders": 100_000}
MIN_ROWS: dict[str, int] = {"users": 20, "shops": 2, "products": 10, "orders": 20}
ITEMS_PER_ORDER: tuple[tuple[int, float], ...] = ((1, 0.25), (2, 0.30), (3, 0.25), (4, 0.12), (5, 0.08))
MEAN_ITEMS_PER_ORDER = sum(k * p for k, p in ITEMS_PER_ORDER)  # 2.48
ITEMS_TOLERANCE = 0.03
MAX_SCALE = 1000.0

HOUSE_RATES: dict[str, float] = {
    "null": 0.05, "empty": 0.015, "blank": 0.005, "padded": 0.03, "lower_case": 0.04, "inner_space": 0.02,
}
CATEGORY_RATES: dict[str, float] = {
    "null": 0.02, "empty": 0.005, "blank": 0.003, "case_space": 0.05, "punctuation": 0.01,
    "slug_twin": 0.005, "non_ascii": 0.01, "punctuation_only": 0.002,
}
RATES: dict[str, dict[str, float]] = {
    "users.house_number": HOUSE_RATES,
    "shops.house_number": HOUSE_RATES,
    "users.phone": {"null": 0.10},
    "users.email": {"null": 0.30},
    "products.category": CATEGORY_RATES,
    "products.price": {"zero": 0.003, "negative": 0.002},
    "products.stock": {"negative": 0.005},
    "products.is_available": {"false": 0.06},
    "orders.total": {"mismatch": 0.01},
}
ITEM_PRICE_CHANGED_RATE = 0.03  # Bernoulli per order item: unit_price differs from the product's price
ADMIN_RATE = 0.001
SHOPS_PER_SHOPKEEPER = 1.1

Progress = Callable[[str, int, int], None]
"""progress(table, rows_done, rows_expected): called after every chunk and once at the end of a table."""

# ---------------------------------------------------------------------------------------------
# Vocabulary: village-flavoured, fixed lists (not Faker: its lists change between versions, which
# would break determinism across installs, and a call per value is slow).

FIRST_NAMES = (
    "Aarti", "Abhishek", "Ajay", "Akash", "Amit", "Anil", "Anita", "Anjali", "Arjun", "Asha", "Ashok", "Bhavna",
    "Bhim", "Chandan", "Deepa", "Deepak", "Dev", "Dinesh", "Durga", "Ganesh", "Gauri", "Geeta", "Gopal", "Hari",
    "Harish", "Indira", "Jaya", "Jyoti", "Kamala", "Kavita", "Kiran", "Krishna", "Lakshmi", "Lalita", "Madhu",
    "Mahesh", "Manoj", "Meena", "Mohan", "Mukesh", "Murali", "Nandini", "Naresh", "Neha", "Nirmala", "Pankaj",
    "Parvati", "Pooja", "Prakash", "Pramod", "Priya", "Radha", "Raghu", "Rajesh", "Raju", "Ramesh", "Rani", "Ravi",
    "Rekha", "Sanjay", "Santosh", "Sarita", "Savitri", "Shankar", "Sharda", "Shiv", "Sita", "Sunil", "Sunita",
    "Suresh", "Tulsi", "Uma", "Usha", "Vijay", "Vimala", "Vinod", "Yamuna", "Yashoda", "Balram", "Chhaya", "Kamal",
    "Lata", "Mangal", "Phoolwati", "Ramkali", "Sukhdev", "Bhagwati", "Anand", "Kaveri", "Selvi", "Murugan",
    "Lakshman",
)
LAST_NAMES = (
    "Sharma", "Verma", "Yadav", "Patel", "Singh", "Kumar", "Gupta", "Reddy", "Naidu", "Rao", "Nair", "Pillai",
    "Iyer", "Das", "Ghosh", "Mondal", "Patil", "Pawar", "Jadhav", "Shinde", "Chauhan", "Rathore", "Thakur",
    "Mishra", "Tiwari", "Pandey", "Dubey", "Joshi", "Kulkarni", "Desai", "Mehta", "Shah", "Chaudhary", "Meena",
    "Gowda", "Hegde", "Shetty", "Kaur", "Gill", "Sahu", "Behera", "Nayak", "Mahato", "Oraon", "Kurmi", "Prajapati",
    "Kushwaha", "Nishad", "Saini", "Bairwa", "Lodhi", "Rajput",
)
EMAIL_DOMAINS = ("gmail.com", "gmail.com", "gmail.com", "yahoo.co.in", "rediffmail.com", "outlook.com")
VILLAGES = (
    "Rampur", "Sitapur", "Chandpur", "Bhimavaram", "Nandgaon", "Palampur", "Devgarh", "Sundarpur",
    "Anandpur", "Hosur", "Raghunathpur", "Kalyanpur", "Gokulpur", "Belgaum", "Madhavpur",
)
SHOP_PREFIXES = (
    "Sri Lakshmi", "Sri Ganesh", "Shiv Shakti", "Maa Durga", "Balaji", "Sai", "Hanuman", "Annapurna",
    "Jai Bharat", "Gram Seva", "Kisan", "New", "Raja", "Krishna", "Ganga", "Om Sai", "Sri Venkateswara",
    "Murugan", "Kaveri", "Jai Mata Di", "Bharat", "Village",
)
ADJECTIVES = ("Fresh", "Organic", "Homemade", "Local", "Premium", "Desi")
DESCRIPTIONS = (
    "Fresh stock, delivered to your house",
    "Best quality at village price",
    "Made by the women's self-help group of {v}",
    "Sourced from the farmers of {v}",
    "Popular in {v} and nearby villages",
    "Pack of good quality, check before use",
    "Ask the shopkeeper for bulk rates",
    "Pure and unadulterated",
)


@dataclass(frozen=True)
class Category:
    name: str
    weight: int  # share of shops whose main category this is
    price: tuple[int, int]  # rupees, low and high
    shop_types: tuple[str, ...]
    items: tuple[str, ...]
    sizes: tuple[str, ...] = ("",)


CATEGORIES: tuple[Category, ...] = (
    Category("Groceries", 20, (30, 600), ("Kirana Store", "General Store", "Provision Store"),
             ("Toor Dal", "Moong Dal", "Basmati Rice", "Sona Masoori Rice", "Wheat Atta", "Sugar", "Jaggery",
              "Mustard Oil", "Groundnut Oil", "Rock Salt", "Poha", "Besan", "Rava"), ("500 g", "1 kg", "5 kg")),
    Category("Vegetables", 8, (10, 120), ("Sabzi Mandi", "Vegetable Stall"),
             ("Tomato", "Onion", "Potato", "Brinjal", "Bhindi", "Green Chilli", "Coriander Bunch", "Bottle Gourd",
              "Cauliflower", "Palak"), ("250 g", "500 g", "1 kg")),
    Category("Fruits", 6, (20, 400), ("Fruit Stall", "Fruits Corner"),
             ("Banana", "Alphonso Mango", "Guava", "Papaya", "Pomegranate", "Coconut", "Chikoo", "Apple"),
             ("1 pc", "6 pcs", "1 dozen", "1 kg")),
    Category("Dairy", 8, (20, 700), ("Dairy", "Milk Centre"),
             ("Cow Milk", "Buffalo Milk", "Curd", "Paneer", "Desi Ghee", "Butter", "Chaas", "Khoa"),
             ("250 ml", "500 ml", "1 L", "200 g", "500 g")),
    Category("Sweets", 6, (60, 900), ("Sweets", "Mithai Bhandar"),
             ("Kaju Katli", "Gulab Jamun", "Rasgulla", "Jalebi", "Besan Ladoo", "Peda", "Soan Papdi", "Mysore Pak"),
             ("250 g", "500 g", "1 kg")),
    Category("Snacks", 5, (10, 250), ("Snacks Corner", "Namkeen Bhandar"),
             ("Namkeen Mixture", "Banana Chips", "Samosa", "Kachori", "Murukku", "Bhujia", "Khakhra"),
             ("100 g", "200 g", "500 g", "1 pc")),
    Category("Spices", 4, (15, 500), ("Masala Bhandar", "Spice Store"),
             ("Turmeric Powder", "Red Chilli Powder", "Garam Masala", "Cumin Seeds", "Coriander Powder",
              "Black Pepper", "Cardamom"), ("50 g", "100 g", "250 g")),
    Category("Beverages", 4, (10, 400), ("Chai Stall", "Juice Centre"),
             ("Tea Leaves", "Filter Coffee Powder", "Sugarcane Juice", "Lassi", "Nimbu Soda", "Rose Sharbat"),
             ("250 g", "500 ml", "1 L", "1 glass")),
    Category("Electronics", 5, (80, 3500), ("Electronics", "Electricals"),
             ("LED Bulb 9W", "Ceiling Fan", "Table Fan", "Extension Board", "Torch", "Solar Lantern",
              "Electric Iron", "Mixer Grinder")),
    Category("Mobile Accessories", 4, (20, 1500), ("Mobile Centre", "Mobile Shop"),
             ("Phone Charger", "Earphones", "Screen Guard", "Mobile Cover", "Power Bank", "Recharge Voucher",
              "USB Cable")),
    Category("Home Decor", 3, (30, 1200), ("Home Decor", "Handicrafts"),
             ("Brass Diya", "Rangoli Colours", "Toran", "Clay Pot", "Wall Hanging", "Cotton Durrie")),
    Category("Kitchenware", 3, (40, 2500), ("Bartan Bhandar", "Steel Centre"),
             ("Steel Tiffin", "Pressure Cooker", "Tawa", "Kadai", "Clay Matka", "Steel Glass Set")),
    Category("Clothing", 5, (80, 3000), ("Cloth Store", "Vastra Bhandar", "Tailors"),
             ("Cotton Saree", "Kurta", "Dhoti", "Lungi", "Salwar Suit", "Gamcha", "School Uniform"),
             ("S", "M", "L", "XL", "Free Size")),
    Category("Footwear", 2, (60, 1500), ("Footwear", "Shoe Mart"),
             ("Kolhapuri Chappal", "Rubber Slippers", "School Shoes", "Sandals"),
             ("Size 6", "Size 7", "Size 8", "Size 9")),
    Category("Stationery", 3, (5, 800), ("Stationery", "Book Depot"),
             ("Notebook", "Ball Pen", "Pencil Box", "Geometry Box", "Chart Paper", "School Bag")),
    Category("Hardware", 3, (20, 2000), ("Hardware", "Iron Mart"),
             ("PVC Pipe", "Hammer", "Nails", "Padlock", "Wall Paint", "Cement Bag", "Nylon Rope")),
    Category("Farm Supplies", 5, (50, 1800), ("Krishi Kendra", "Agro Centre", "Beej Bhandar"),
             ("Urea", "DAP Fertilizer", "Paddy Seeds", "Cotton Seeds", "Neem Oil Spray", "Sickle"),
             ("1 kg", "5 kg", "25 kg", "1 pc")),
    Category("Medicines", 4, (5, 300), ("Medical Store", "Pharmacy"),
             ("Paracetamol Strip", "ORS Sachet", "Cough Syrup", "Antiseptic Liquid", "Bandage Roll", "Pain Balm")),
    Category("Personal Care", 3, (5, 300), ("Cosmetics", "Beauty Corner"),
             ("Neem Soap", "Coconut Hair Oil", "Tooth Powder", "Shampoo Sachet", "Kajal", "Talcum Powder")),
    Category("Pooja Items", 3, (5, 500), ("Pooja Bhandar", "Pooja Stores"),
             ("Agarbatti", "Camphor", "Kumkum", "Cotton Wicks", "Pooja Thali", "Marigold Garland")),
    Category("Bakery", 3, (5, 400), ("Bakery", "Bakers"),
             ("Pav", "Bread Loaf", "Rusk", "Nankhatai", "Cream Roll", "Cake Slice")),
    Category("Toys", 1, (10, 900), ("Toy Shop", "Khilona Ghar"),
             ("Wooden Top", "Kite", "Marbles", "Cricket Bat", "Cloth Doll", "Rubber Ball")),
)
_CAT_INDEX = {c.name: i for i, c in enumerate(CATEGORIES)}

# Messy category values, each tied to the canonical category whose products carry it; rows of a
# kind take the values in turn, so even one row of `slug_twin` collides with a `punctuation` row.
MESSY_CATEGORY_VALUES: dict[str, tuple[tuple[str, str], ...]] = {
    "punctuation": (("Fruits & Veg", "Fruits"), ("Tea/Coffee", "Beverages"), ("Fruits-Veg!", "Fruits"),
                    ("Snacks!!", "Snacks"), ("Dairy.", "Dairy")),
    "slug_twin": (("Fruits Veg", "Fruits"), ("Tea Coffee", "Beverages")),
    "non_ascii": (("मिठाई", "Sweets"), ("Café Snacks", "Snacks"), ("सब्ज़ी", "Vegetables"), ("किराना", "Groceries")),
    "punctuation_only": (("!!!", ""), ("---", ""), ("?", ""), ("...", "")),
}

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


class _Kinds:
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


class _World:
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
        house_kinds = _Kinds(n, HOUSE_RATES, _rng(self.seed, "users.house_number"))
        phone_null = _Kinds(n, RATES["users.phone"], _rng(self.seed, "users.phone"))
        email_null = _Kinds(n, RATES["users.email"], _rng(self.seed, "users.email"))
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
        house_kinds = _Kinds(self.n_shops, HOUSE_RATES, _rng(self.seed, "shops.house_number"))
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
        cat_kinds = _Kinds(n, CATEGORY_RATES, _rng(self.seed, "products.category"))
        price_kinds = _Kinds(n, RATES["products.price"], _rng(self.seed, "products.price"))
        stock_kinds = _Kinds(n, RATES["products.stock"], _rng(self.seed, "products.stock"))
        avail_kinds = _Kinds(n, RATES["products.is_available"], _rng(self.seed, "products.is_available"))
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
                        c = _CAT_INDEX[canonical]
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
        total_kinds = _Kinds(self.n_orders, RATES["orders.total"], _rng(self.seed, "orders.total"))
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
    world = _World(scale, seed)
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


# ---------------------------------------------------------------------------------------------
# Measuring any legacy database (ours or anyone's)


def row_counts(conn: psycopg.Connection[Any]) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in LEGACY_TABLES:
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(t))).fetchone()
        out[t] = int(row[0]) if row else 0
    return out


_HOUSE_KINDS_SQL = """
    count(*) FILTER (WHERE house_number IS NULL) AS null,
    count(*) FILTER (WHERE house_number = '') AS empty,
    count(*) FILTER (WHERE house_number ~ '^\\s+$') AS blank,
    count(*) FILTER (WHERE house_number ~ '\\S' AND house_number ~ '^\\s|\\s$') AS padded,
    count(*) FILTER (WHERE house_number ~ '[a-z]') AS lower_case,
    count(*) FILTER (WHERE house_number ~ '\\S\\s+\\S') AS inner_space
"""

# house key: the spelling without any whitespace, upper-cased ('12a', ' 12A ', '12 A' → '12A')
_HOUSE_KEY = "upper(regexp_replace(house_number, '\\s', '', 'g'))"
# category key: case- and space-insensitive; slug: the guide's naive rule made punctuation-proof
_CAT_KEY = "lower(btrim(regexp_replace(category, '\\s+', ' ', 'g')))"
_CAT_SLUG = "btrim(regexp_replace(lower(category), '[^a-z0-9]+', '-', 'g'), '-')"

_MESSY_QUERIES: tuple[tuple[str, str], ...] = (
    ("users.house_number", f"SELECT {_HOUSE_KINDS_SQL} FROM users"),
    ("shops.house_number", f"SELECT {_HOUSE_KINDS_SQL} FROM shops"),
    ("house_numbers", f"""
        WITH h AS (SELECT house_number, 'u' AS src FROM users WHERE house_number ~ '\\S'
                   UNION ALL SELECT house_number, 's' FROM shops WHERE house_number ~ '\\S'),
             k AS (SELECT {_HOUSE_KEY} AS key, count(DISTINCT house_number) AS spellings,
                          bool_or(src = 'u') AS has_user, bool_or(src = 's') AS has_shop FROM h GROUP BY 1)
        SELECT count(*) FILTER (WHERE spellings > 1) AS houses_with_several_spellings,
               count(*) FILTER (WHERE has_user AND has_shop) AS houses_shared_by_shop_and_user
        FROM k"""),
    ("users", """
        SELECT count(*) FILTER (WHERE phone IS NULL) AS phone_null,
               count(*) FILTER (WHERE email IS NULL) AS email_null,
               count(*) FILTER (WHERE role = 'admin') AS role_admin,
               count(*) FILTER (WHERE role = 'shopkeeper') AS role_shopkeeper
        FROM users"""),
    ("products.category", """
        SELECT count(*) FILTER (WHERE category IS NULL) AS null,
               count(*) FILTER (WHERE category = '') AS empty,
               count(*) FILTER (WHERE category ~ '^\\s+$') AS blank,
               count(*) FILTER (WHERE category ~ '[[:alnum:]]' AND category ~ '[!-/:-@[-`{-~]') AS punctuation,
               count(*) FILTER (WHERE octet_length(category) <> char_length(category)) AS non_ascii,
               count(*) FILTER (WHERE category ~ '\\S' AND category !~ '[[:alnum:]]'
                                  AND octet_length(category) = char_length(category)) AS punctuation_only
        FROM products"""),
    ("products.category", f"""
        WITH c AS (SELECT category, count(*) AS n, {_CAT_KEY} AS key FROM products
                   WHERE category ~ '\\S' GROUP BY category),
             r AS (SELECT n, row_number() OVER (PARTITION BY key ORDER BY n DESC, category) AS rn FROM c)
        SELECT coalesce(sum(n) FILTER (WHERE rn > 1), 0)::bigint AS case_space_variant_rows FROM r"""),
    ("products.category", f"""
        WITH c AS (SELECT DISTINCT {_CAT_KEY} AS key, {_CAT_SLUG} AS slug FROM products WHERE category ~ '\\S'),
             s AS (SELECT slug, count(*) AS names FROM c WHERE slug <> '' GROUP BY slug)
        SELECT count(*) FILTER (WHERE names > 1) AS slugs_shared_by_different_names,
               coalesce(sum(names) FILTER (WHERE names > 1), 0)::bigint AS names_sharing_a_slug,
               (SELECT count(*) FROM products WHERE category ~ '\\S' AND {_CAT_SLUG} = '') AS rows_with_empty_slug
        FROM s"""),
    ("products", """
        SELECT count(*) FILTER (WHERE price = 0) AS price_zero,
               count(*) FILTER (WHERE price < 0) AS price_negative,
               count(*) FILTER (WHERE stock < 0) AS stock_negative,
               count(*) FILTER (WHERE NOT is_available) AS unavailable
        FROM products"""),
    ("orders", """
        SELECT count(*) FILTER (WHERE total <> subtotal + delivery_fee) AS total_mismatch FROM orders"""),
    ("order_items", """
        SELECT count(*) FILTER (WHERE NOT p.is_available) AS unavailable_product,
               count(*) FILTER (WHERE oi.unit_price <> p.price) AS unit_price_differs
        FROM order_items oi JOIN products p ON p.id = oi.product_id"""),
)


def messy_counts(conn: psycopg.Connection[Any]) -> dict[str, dict[str, int]]:
    """Counts of every messy kind, measured with SQL on whatever the legacy tables hold."""
    out: dict[str, dict[str, int]] = {}
    for group, query in _MESSY_QUERIES:
        with conn.cursor() as cur:
            cur.execute(query.encode())
            row = cur.fetchone()
            names = [d.name for d in cur.description or ()]
        out.setdefault(group, {}).update(
            {name: int(value or 0) for name, value in zip(names, row or (), strict=False)}
        )
    return out


def expected_counts(scale: float, seed: int = 0) -> dict[str, dict[str, int]]:
    """The exact counts the generator assigns for each 'exact' messy kind at a scale (seed-independent)."""
    world_sizes = table_sizes(scale)
    n = {"users": world_sizes["users"], "shops": world_sizes["shops"],
         "products": max(world_sizes["products"], world_sizes["shops"]), "orders": world_sizes["orders"]}
    out: dict[str, dict[str, int]] = {}
    for column, rates in RATES.items():
        table = column.split(".")[0]
        out[column] = _Kinds(n[table], rates, random.Random(seed)).counts
    return out
