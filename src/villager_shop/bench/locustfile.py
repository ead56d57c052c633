"""The realistic shop mix of `villager-shop bench api` (run by it; see docs/benchmarks.md).

Each simulated shopper waits 1 s between requests and mostly browses category listings (sometimes
the next page, via `next_cursor`), sometimes the whole catalog, opens product pages, looks at the
categories and now and then orders one or two units of an in-stock variant with a bearer token.
A 409 (out of stock) is a correct answer, not an error: it is recorded under its own name.

Its data (real slugs, product ids, variant ids, tokens) comes from the JSON file named by
VILLAGER_BENCH_DATA, which `bench api` writes after preparing the database."""

import json
import os
import random
import re
import uuid

import gevent
from locust import FastHttpUser, constant

with open(os.environ["VILLAGER_BENCH_DATA"], encoding="utf-8") as _fh:
    DATA = json.load(_fh)

SLUGS = DATA["slugs"]
PRODUCTS = DATA["product_ids"]
VARIANTS = DATA["variant_ids"]
TOKENS = DATA["tokens"]

LISTING = "GET /api/products?category=[slug]"
LISTING_NEXT = "GET /api/products?category=[slug]&cursor=[next]"
CATALOG = "GET /api/products"
PRODUCT = "GET /api/products/[id]"
CATEGORIES = "GET /api/categories"
ORDER = "POST /api/orders"
ORDER_409 = "POST /api/orders [409 out of stock]"


# Shares of the mix in percent (bench api --mix overrides them through the data file).
WEIGHTS = {"category_listing": 55, "whole_catalog": 8, "product_page": 25, "categories": 8, "order": 4,  # bench.api_locust.MIX
           **DATA.get("weights", {})}


# The listing ends with its next_cursor; reading it from there spares the load generator (CPU-bound
# on the same machine as the service) a full parse of a 12 KB body per listing. Anything else: parsed.
_NEXT_CURSOR = re.compile(rb'"next_cursor"\s*:\s*(?:null|"([A-Za-z0-9_=-]*)")\s*}\s*$')


def _listing(user, params, name):
    with user.client.get("/api/products", params=params, name=name, catch_response=True) as resp:
        if resp.status_code != 200:
            resp.failure(f"HTTP {resp.status_code}")
            user.cursor = None
            return
        tail = _NEXT_CURSOR.search(resp.content[-400:])
        if tail is not None:
            user.cursor = tail.group(1).decode() if tail.group(1) is not None else None
            return
        try:
            user.cursor = resp.json().get("next_cursor")
        except ValueError:
            resp.failure("not JSON")
            user.cursor = None


def category_listing(user):
    """A category's first page, or (30 % of the time, when there is one) the next page of the last one."""
    if user.cursor and random.random() < 0.3:
        _listing(user, {"category": user.slug, "cursor": user.cursor}, LISTING_NEXT)
        return
    user.slug = random.choice(SLUGS)
    _listing(user, {"category": user.slug}, LISTING)


def whole_catalog(user):
    user.client.get("/api/products", name=CATALOG)


def product_page(user):
    user.client.get(f"/api/products/{random.choice(PRODUCTS)}", name=PRODUCT)


def categories(user):
    user.client.get("/api/categories", name=CATEGORIES)


def order(user):
    """One or two units of an in-stock variant; 409 (sold out meanwhile) is a correct answer."""
    if not user.auth or not VARIANTS:
        return
    body = {"items": [{"variant_id": random.choice(VARIANTS), "quantity": random.randint(1, 2)}]}
    headers = {**user.auth, "Idempotency-Key": uuid.uuid4().hex}
    with user.client.post("/api/orders", json=body, headers=headers, name=ORDER, catch_response=True) as resp:
        if resp.status_code == 201:
            resp.success()
        elif resp.status_code == 409:
            resp.request_meta["name"] = ORDER_409
            resp.success()
        else:
            resp.failure(f"HTTP {resp.status_code}")


START_SPREAD_S = 1.0  # one think time

_TASKS = {"category_listing": category_listing, "whole_catalog": whole_catalog, "product_page": product_page,
          "categories": categories, "order": order}


class Shopper(FastHttpUser):
    wait_time = constant(1)
    tasks = {fn:  # noqa: RUF012 (locust reads the class attribute)
              WEIGHTS[name] for name, fn in _TASKS.items() if WEIGHTS.get(name, 0) > 0}

    def on_start(self):
        self.slug = random.choice(SLUGS)
        self.cursor = None
        self.auth = {"Authorization": f"Bearer {random.choice(TOKENS)}"} if TOKENS else None
        # Locust starts each second's users as one batch (floor(spawn rate) at once) and a constant
        # think time keeps a batch in step forever: every second the whole batch would fire within
        # a few milliseconds, a synchronized burst that measures the load generator's batching, not
        # shoppers. Each shopper starts at a random point of its first second instead (the same
        # users, the same 1 s think time, the same request rate).
        gevent.sleep(random.random() * START_SPREAD_S)
