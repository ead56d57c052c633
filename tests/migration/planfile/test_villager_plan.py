"""plans/villager.toml, the villager normalization as a plan file of generic operations, gives the
same normalized rows as the built-in plan on the same legacy data: addresses and the users and
shops that point at them, categories, base prices, default variants (sku, name, price, stock,
active), order items' variants and what is quarantined. Then both applications write through it,
and verify holds."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import psycopg

from tests.helpers import rows, run_cli, scalar
from tests.migration.conftest import migrate_built_in

ROOT = Path(__file__).resolve().parents[3]
PLAN = ROOT / "plans" / "villager.toml"

# What both plans must agree on, each as one fingerprint per query.
SAME = {
    "addresses": "SELECT house_number FROM addresses ORDER BY 1",
    "user addresses": "SELECT u.id, a.house_number FROM users u LEFT JOIN addresses a ON a.id = u.address_id ORDER BY 1",
    "shop addresses": "SELECT s.id, a.house_number FROM shops s LEFT JOIN addresses a ON a.id = s.address_id ORDER BY 1",
    "categories": "SELECT name, is_active, slug FROM product_categories ORDER BY 1",
    "product categories": "SELECT p.id, c.name FROM products p LEFT JOIN product_categories c ON c.id = p.category_id"
                          " ORDER BY 1",
    "base prices": "SELECT id, base_price FROM products ORDER BY 1",
    "variants": "SELECT product_id, sku, name, price, stock, is_default, is_active, sort_order"
                " FROM product_variants ORDER BY 1, 2",
    "item variants": "SELECT i.id, v.product_id, v.is_default FROM order_items i"
                     " LEFT JOIN product_variants v ON v.id = i.variant_id ORDER BY 1",
    "variant ids": "SELECT count(*) FILTER (WHERE id = product_id) FROM product_variants",
    "foreign keys": "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint"
                    " WHERE contype = 'f' AND connamespace = 'public'::regnamespace ORDER BY 1, 2",
}
QUARANTINED = {
    "built-in": "SELECT DISTINCT table_name, row_id::text, reason FROM villager_migration.quarantine"
                " ORDER BY 1, 2, 3",
    "file": "SELECT DISTINCT table_name, row_key, reason FROM villager_migration.plan_quarantine ORDER BY 1, 2, 3",
}


def _fingerprints(url: str) -> dict[str, str]:
    return {k: str(scalar(url, f"SELECT md5(coalesce(string_agg(q::text, ',' ORDER BY n), ''))"
                              f" FROM (SELECT q, row_number() OVER () AS n FROM ({sql}) q) t"))
            for k, sql in SAME.items()}


def test_the_villager_plan_file_gives_the_built_in_plans_rows(make_legacy_db: Callable[..., str]) -> None:
    built_in, from_file = make_legacy_db(0.05), make_legacy_db(0.05)
    migrate_built_in(built_in)
    assert run_cli("migrate", "plan", "--plan", str(PLAN), database_url=from_file).returncode == 0
    res = run_cli("migrate", "run", "--plan", str(PLAN), database_url=from_file)
    assert res.returncode == 0, res.stderr
    assert _fingerprints(from_file) == _fingerprints(built_in)
    assert rows(from_file, QUARANTINED["file"]) == rows(built_in, QUARANTINED["built-in"])
    assert scalar(from_file, "SELECT count(*) FROM villager_migration.plan_quarantine") > 0
    # The variants' index by product serves their foreign key from the start, as the built-in plan's.
    variant_indexes = "SELECT indexname FROM pg_indexes WHERE tablename = 'product_variants' ORDER BY 1"
    assert rows(from_file, variant_indexes) == rows(built_in, variant_indexes)
    # The sync triggers find the items of a product by an index the plan builds first.
    assert scalar(from_file, "SELECT count(*) FROM pg_indexes WHERE indexname = 'idx_order_items_product_id'") == 1
    assert run_cli("migrate", "verify", database_url=from_file).returncode == 0

    # The shop's own objects: its monitoring, and its cache hears of every catalog change.
    assert scalar(from_file, "SELECT count(*) FROM check_data_integrity()") == 0
    assert scalar(from_file, "SELECT count(*) FROM db_performance_summary") == 2
    with psycopg.connect(from_file, autocommit=True) as listener, psycopg.connect(from_file, autocommit=True) as c:
        listener.execute("LISTEN villager_catalog")
        c.execute("UPDATE products SET stock = stock + 1 WHERE id = (SELECT id FROM products ORDER BY id LIMIT 1)")
        heard = {n.payload for n in listener.notifies(timeout=5, stop_after=2)}
        assert heard == {"products", "product_variants"}  # the old write, and the sync's

    with psycopg.connect(from_file, autocommit=True) as c:
        # The old application: a product priced 0 is taken off sale, priced again it is back.
        pid = c.execute("SELECT id FROM products WHERE price > 0 ORDER BY id LIMIT 1").fetchone()
        assert pid is not None
        c.execute("UPDATE products SET price = 0 WHERE id = %s", pid)
        assert c.execute("SELECT is_active FROM product_variants WHERE product_id = %s AND is_default",
                         pid).fetchone() == (False,)
        c.execute("UPDATE products SET price = 12.5, stock = -3, category = ' NEW  shelf ' WHERE id = %s", pid)
        assert c.execute("SELECT v.price, v.stock, v.is_active, p.base_price, pc.name FROM product_variants v"
                         " JOIN products p ON p.id = v.product_id JOIN product_categories pc ON pc.id = p.category_id"
                         " WHERE v.product_id = %s AND v.is_default", pid).fetchone() == (12.5, 0, True, 12.5,
                                                                                          "NEW shelf")
        # The new application prices through base_price and the default variant.
        c.execute("UPDATE products SET base_price = 20 WHERE id = %s", pid)
        c.execute("UPDATE product_variants SET stock = 7 WHERE product_id = %s AND is_default", pid)
        assert c.execute("SELECT price, stock FROM products WHERE id = %s", pid).fetchone() == (20, 7)
    assert run_cli("migrate", "verify", database_url=from_file).returncode == 0


def test_the_products_walk_reads_and_writes_each_row_once(make_legacy_db: Callable[..., str]) -> None:
    """Four operations walk products (a lookup reference, a derived column, the default variant,
    a quarantine rule): one statement per batch, one UPDATE of the row for both columns it fills."""
    url = make_legacy_db(0.01)
    res = run_cli("migrate", "plan", "--plan", str(PLAN), "--sql", database_url=url)
    assert res.returncode == 0, res.stderr
    step = res.stdout.split(": backfill_products: ", 1)[1].split("\n-- step ", 1)[0]
    assert step.count("BEGIN;") == 1
    assert step.count("UPDATE public.products t") == 1
    assert "category_id = " in step and "base_price = " in step
