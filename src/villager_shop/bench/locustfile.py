"""The realistic shop mix of `villager-shop bench api` (run by it; see README, "Benchmarks").

Each simulated shopper waits 1 s between requests and mostly browses category listings (sometimes
the next page, via `next_cursor`), sometimes the whole catalog, opens product pages, looks at the
categories and now and then orders one or two units of an in-stock variant with a bearer token.
A 409 (out of stock) is a correct answer, not an error: it is recorded under its own name.

Its data (real slugs, product ids, variant ids, tokens) comes from the JSON file named by
VILLAGER_BENCH_DATA, which `bench api` writes after preparing the database."""

import json
import os
import random
import uuid

from locust import FastHttpUser, constant, task

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


class Shopper(FastHttpUser):
    wait_time = constant(1)

    def on_start(self):
        self.slug = random.choice(SLUGS)
        self.cursor = None
        self.auth = {"Authorization": f"Bearer {random.choice(TOKENS)}"} if TOKENS else None

    def _listing(self, path, name, params):
        with self.client.get(path, params=params, name=name, catch_response=True) as resp:
            if resp.status_code != 200:
                resp.failure(f"HTTP {resp.status_code}")
                self.cursor = None
                return
            try:
                self.cursor = resp.json().get("next_cursor")
            except ValueError:
                resp.failure("not JSON")
                self.cursor = None

    @task(55)
    def category_listing(self):
        if self.cursor and random.random() < 0.3:
            self._listing("/api/products", LISTING_NEXT, {"category": self.slug, "cursor": self.cursor})
            return
        self.slug = random.choice(SLUGS)
        self._listing("/api/products", LISTING, {"category": self.slug})

    @task(8)
    def whole_catalog(self):
        self.client.get("/api/products", name=CATALOG)

    @task(25)
    def product_page(self):
        self.client.get(f"/api/products/{random.choice(PRODUCTS)}", name=PRODUCT)

    @task(8)
    def categories(self):
        self.client.get("/api/categories", name=CATEGORIES)

    @task(4)
    def order(self):
        if not self.auth or not VARIANTS:
            return
        body = {"items": [{"variant_id": random.choice(VARIANTS), "quantity": random.randint(1, 2)}]}
        headers = {**self.auth, "Idempotency-Key": uuid.uuid4().hex}
        with self.client.post("/api/orders", json=body, headers=headers, name=ORDER, catch_response=True) as resp:
            if resp.status_code == 201:
                resp.success()
            elif resp.status_code == 409:
                resp.request_meta["name"] = ORDER_409
                resp.success()
            else:
                resp.failure(f"HTTP {resp.status_code}")
