"""The catalog questions the shop asks, on the legacy schema before and on the normalized one after:
their plans and timings side by side show what the migration does to the reads."""

from __future__ import annotations

import time
from typing import Any

from psycopg import sql

from villager_shop.core.db import connection
from villager_shop.workload.category_key import category_key_function

# The catalog reads the shop serves, written for the legacy schema (before) and the normalized one
# (after): the same questions, so their plans can be compared.
LEGACY_QUERIES = {
    "catalog by category": "SELECT id, name, price FROM public.products WHERE category = %(category)s"
                           " AND is_available ORDER BY rating DESC, order_count DESC, id LIMIT 20",
    "a shop's products in a category": "SELECT id, name FROM public.products WHERE shop_id = %(shop)s"
                                       " AND category = %(category)s AND is_available",
    "a customer's orders": "SELECT id, total, created_at FROM public.orders WHERE customer_id = %(customer)s"
                           " ORDER BY created_at DESC LIMIT 20",
}
NEW_QUERIES = {
    "catalog by category": "SELECT p.id, p.name, v.price FROM public.products p"
                           " JOIN public.product_variants v ON v.product_id = p.id AND v.is_default AND v.is_active"
                           " WHERE p.category_id = (SELECT c.id FROM public.product_categories c"
                           " WHERE c.name_key = {category_key}(%(category)s))"
                           " AND p.is_available ORDER BY p.rating DESC, p.order_count DESC, p.id LIMIT 20",
    "a shop's products in a category": "SELECT p.id, p.name FROM public.products p WHERE p.shop_id = %(shop)s"
                                       " AND p.category_id = (SELECT c.id FROM public.product_categories c"
                                       " WHERE c.name_key = {category_key}(%(category)s))"
                                       " AND p.is_available",
    "a customer's orders": LEGACY_QUERIES["a customer's orders"],
}


def catalog_samples(url: str, n: int = 5) -> list[dict[str, Any]]:
    """Parameters for the catalog queries: frequent categories, shops that sell them, customers."""
    with connection(url) as conn:
        rows = conn.execute(
            "SELECT category, (array_agg(shop_id ORDER BY shop_id))[1]::text FROM public.products"
            " WHERE category IS NOT NULL AND is_available GROUP BY category ORDER BY count(*) DESC, category"
            " LIMIT %s", (n,)).fetchall()
        customers = [r[0] for r in conn.execute(
            "SELECT customer_id::text FROM public.orders ORDER BY id LIMIT %s", (n,)).fetchall()]
    if not rows or not customers:
        return []
    return [{"category": rows[i % len(rows)][0], "shop": rows[i % len(rows)][1],
             "customer": customers[i % len(customers)]} for i in range(n)]


def catalog_queries(url: str, queries: dict[str, str], samples: list[dict[str, Any]], rounds: int,
                     plans: dict[str, dict[str, Any]], when: str) -> None:
    if not samples:
        return
    with connection(url, autocommit=True, application_name="villager-shop rehearse catalog") as conn:
        for name, text in queries.items():
            if "{category_key}" in text:  # the new schema's lookup, by the key function the plan installed
                text = text.replace("{category_key}", category_key_function(conn))
            plan = conn.execute(sql.SQL("EXPLAIN (FORMAT JSON) ") + sql.SQL(text), samples[0]).fetchone()
            t0 = time.perf_counter()
            runs = 0
            for _ in range(max(1, rounds)):
                for params in samples:
                    conn.execute(text, params).fetchall()
                    runs += 1
            ms = (time.perf_counter() - t0) * 1000 / runs
            entry = plans.setdefault(name, {})
            entry[when] = {"scans": scan_nodes(plan[0] if plan else []), "mean_ms": round(ms, 3),
                           "cost": _total_cost(plan[0] if plan else [])}


def scan_nodes(plan_json: Any) -> list[str]:
    """`Seq Scan on products`, `Index Scan using idx_x on products`, … from EXPLAIN (FORMAT JSON)."""
    out: list[str] = []

    def walk(node: dict[str, Any]) -> None:
        kind = str(node.get("Node Type", ""))
        rel = node.get("Relation Name")
        if "Scan" in kind:
            using = f" using {node['Index Name']}" if node.get("Index Name") else ""
            out.append(f"{kind}{using}" + (f" on {rel}" if rel else ""))
        for child in node.get("Plans", []) or []:
            walk(child)

    for top in plan_json or []:
        walk(top.get("Plan", {}))
    return out


def _total_cost(plan_json: Any) -> float | None:
    try:
        return float(plan_json[0]["Plan"]["Total Cost"])
    except (IndexError, KeyError, TypeError, ValueError):
        return None

