"""`complete` knows who still reads the legacy columns: statements the server counted during its
quiet window that name one (pg_stat_statements), with the sessions that ran them
(pg_stat_activity). `migrate status` shows the same evidence first. Without pg_stat_statements
`complete` says it cannot see readers and goes on only with --no-reader-check."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.helpers import run_cli
from villager_shop.api import queries as api_queries
from villager_shop.core.sqlfiles import read_query, read_sections
from villager_shop.migration.plan import legacy_columns
from villager_shop.migration.readers import analyze, shape, watch

# Relations of schema public while migrated, with the columns the statements below use.
CATALOG = {
    "users": {"id", "name", "house_number", "address_id", "email"},
    "shops": {"id", "name", "house_number", "address_id", "owner_id"},
    "products": {"id", "shop_id", "name", "category", "price", "stock", "base_price", "category_id", "is_available",
                 "rating", "order_count"},
    "product_variants": {"id", "product_id", "sku", "name", "price", "stock", "is_active", "sort_order"},
    "product_categories": {"id", "name", "slug"},
    "addresses": {"id", "house_number"},
    "order_items": {"id", "order_id", "product_id", "variant_id", "quantity", "unit_price"},
}

READS = [
    ("SELECT price FROM products WHERE id = $1", {"products.price"}),
    ('SELECT "public"."products"."id", "public"."products"."stock" FROM "public"."products" WHERE'
     ' "public"."products"."id" = $1 LIMIT $2', {"products.stock"}),
    ("SELECT t1.price FROM public.products AS t1", {"products.price"}),
    ("SELECT p.id FROM products p WHERE p.category = $1", {"products.category"}),
    ("SELECT u.house_number FROM users u JOIN shops s ON s.owner_id = u.id", {"users.house_number"}),
    ("SELECT house_number FROM users", {"users.house_number"}),
    ("SELECT * FROM products WHERE id = $1", {"products.*"}),
    ("SELECT p.* FROM products p", {"products.*"}),
    ("TABLE products", {"products.*"}),
    ("INSERT INTO users (id, name) VALUES ($1, $2) RETURNING *", {"users.*"}),
    ("UPDATE products SET price = $1, updated_at = now() WHERE id = $2", {"products.price"}),
    ("INSERT INTO products (id, shop_id, name, category, price, stock) VALUES ($1, $2, $3, $4, $5, $6)",
     {"products.category", "products.price", "products.stock"}),
    ("WITH o AS (INSERT INTO orders (id) VALUES ($1) RETURNING id) SELECT s.name, * FROM products p, shops s",
     {"products.*", "shops.*"}),
]

NOT_READS = [
    "SELECT p.base_price, v.price, v.stock FROM public.products p JOIN public.product_variants v ON v.product_id = p.id",
    "SELECT p.base_price price FROM products p",
    "SELECT p.base_price AS price, p.name AS category FROM products p",
    "SELECT count(*) FROM products",
    "SELECT v.* FROM products p JOIN product_variants v ON v.product_id = p.id",
    "SELECT a.house_number FROM users u JOIN addresses a ON a.id = u.address_id",
    "SELECT $1 AS x, p.name FROM products p -- price, stock",
    "SELECT p.id FROM products p JOIN product_variants v ON v.product_id = p.id WHERE price > $1",
    "SELECT name, slug FROM product_categories WHERE name = 'category'",
    "WITH o AS (INSERT INTO order_items (id) VALUES ($1) RETURNING *) SELECT s.name FROM shops s",
    "SELECT (SELECT * FROM product_variants v WHERE v.product_id = p.id LIMIT 1) FROM products p",
]


@pytest.mark.parametrize(("sql", "reads"), READS)
def test_a_statement_naming_a_legacy_column_or_star_is_a_read(sql: str, reads: set[str]) -> None:
    assert analyze(sql, legacy_columns(), CATALOG) == reads


@pytest.mark.parametrize("sql", NOT_READS)
def test_normalized_reads_output_names_and_constants_are_not_reads(sql: str) -> None:
    assert analyze(sql, legacy_columns(), CATALOG) == set()


def test_no_query_of_the_shop_service_reads_a_legacy_column() -> None:
    """The new application must not block `complete`: none of its SQL files names a legacy column."""
    folder = Path(__file__).resolve().parents[2] / "src" / "villager_shop" / "api" / "queries"
    files = sorted(folder.glob("*.sql"))
    assert len(files) >= 5
    for f in files:
        statements = list(read_sections(api_queries.__name__, f.name).values()) or [read_query(api_queries.__name__,
                                                                                               f.name)]
        for sql in statements:
            assert analyze(sql, legacy_columns(), CATALOG) == set(), (f.name, sql[:300])


def test_what_activity_shows_and_what_pg_stat_statements_keeps_have_one_shape() -> None:
    assert shape("SELECT price FROM products WHERE id = 'a1' AND stock > 3 -- old app") == \
        shape("select price  from products where id = $1 and stock > $2")


# --- on a server ------------------------------------------------------------------------------------

def pg_stat_statements_loaded(url: str) -> bool:
    with psycopg.connect(url, autocommit=True) as c:
        return "pg_stat_statements" in str(c.execute("SHOW shared_preload_libraries").fetchone()[0])  # type: ignore[index]


@pytest.fixture
def with_pgss(migrated_messy: str) -> str:
    if not pg_stat_statements_loaded(migrated_messy):
        pytest.skip("pg_stat_statements is not preloaded on this server (the embedded PostgreSQL 18 preloads it)")
    with psycopg.connect(migrated_messy, autocommit=True) as c:
        c.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    return migrated_messy


class Reader:
    """An old application instance that reads products.price every 100 ms until stopped."""

    def __init__(self, url: str, name: str, sql: str = "SELECT price FROM products WHERE id = %s") -> None:
        self.conn = psycopg.connect(url, autocommit=True, application_name=name)
        self.sql = sql
        self.calls = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        pid = self.conn.execute("SELECT id FROM products LIMIT 1").fetchone()[0]  # type: ignore[index]
        while not self._stop.is_set():
            self.conn.execute(self.sql, (pid,)).fetchall()
            self.calls += 1
            self._stop.wait(0.1)

    def __enter__(self) -> Reader:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.conn.close()


def phase_and_columns(url: str) -> tuple[str, bool]:
    with psycopg.connect(url) as c:
        phase = c.execute("SELECT value #>> '{}' FROM villager_migration.state WHERE key = 'phase'").fetchone()
        price = c.execute("SELECT count(*) FROM information_schema.columns WHERE table_name = 'products'"
                          " AND column_name = 'price'").fetchone()
    return str(phase[0]) if phase else "?", price == (1,)


def test_a_reader_of_products_price_is_shown_by_status_and_blocks_complete_until_it_stops(with_pgss: str) -> None:
    url = with_pgss
    with Reader(url, "old-shop-reader") as reader:
        time.sleep(0.3)
        res = run_cli("migrate", "status", "--json", "--readers-window", "1", database_url=url)
        assert res.returncode == 0, res.stderr
        seen = json.loads(res.stdout)["readers"]
        assert seen["visible"], seen
        mine = [s for s in seen["statements"] if "products.price" in s["reads"]]
        assert mine and mine[0]["calls"] >= 5, seen
        assert "old-shop-reader" in {x["application_name"] for x in mine[0]["sessions"]}, mine

        res = run_cli("migrate", "complete", "--yes", "--quiet-seconds", "2", database_url=url)
        assert res.returncode == 4, res.stderr
        assert "products.price" in res.stderr and "old-shop-reader" in res.stderr, res.stderr
        user = reader.conn.info.user
        assert f"{user}@" in res.stderr, res.stderr
        assert phase_and_columns(url) == ("migrated", True)
        reader.stop()  # stopped, still connected: an idle session reads nothing
        res = run_cli("migrate", "complete", "--yes", "--quiet-seconds", "1", database_url=url)
        assert res.returncode == 0, res.stderr
    assert phase_and_columns(url) == ("completed", False)


def test_select_star_from_a_legacy_table_blocks_complete(with_pgss: str) -> None:
    url = with_pgss
    with Reader(url, "report-job", "SELECT * FROM users WHERE id <> %s LIMIT 3"):
        res = run_cli("migrate", "complete", "--yes", "--quiet-seconds", "1.5", database_url=url)
    assert res.returncode == 4 and "users.*" in res.stderr and "report-job" in res.stderr, res.stderr


def test_statements_of_other_roles_this_role_may_not_read_count_as_unknown_readers(with_pgss: str) -> None:
    """A migration role without pg_read_all_stats sees other roles' counters grow, not their text."""
    url = with_pgss
    role = f"vt_watch_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(url, autocommit=True) as c:
        c.execute(f"CREATE ROLE {role} LOGIN")
    try:
        with psycopg.connect(url, autocommit=True, user=role) as mine, Reader(url, "old-shop-reader") as reader:
            owner = reader.conn.info.user
            evidence = watch(mine, legacy_columns(), 1.0)
        assert evidence.visible and reader.calls >= 5
        assert evidence.statements == [], evidence.statements  # their text is hidden from this role
        assert evidence.hidden.get(owner, 0) >= 5, evidence.hidden
        assert evidence.blocking and "pg_read_all_stats" in evidence.describe()
    finally:
        with psycopg.connect(url, autocommit=True) as c:
            c.execute(f"DROP ROLE {role}")


@pytest.fixture
def without_pgss(migrated_messy: str) -> Iterator[str]:
    with psycopg.connect(migrated_messy, autocommit=True) as c:
        c.execute("DROP EXTENSION IF EXISTS pg_stat_statements")
    yield migrated_messy


def test_without_pg_stat_statements_complete_cannot_see_readers_and_goes_on_only_when_told(without_pgss: str) -> None:
    url = without_pgss
    res = run_cli("migrate", "status", "--json", "--readers-window", "0.2", database_url=url)
    assert res.returncode == 0, res.stderr
    seen = json.loads(res.stdout)["readers"]
    assert not seen["visible"] and "pg_stat_statements" in seen["why"], seen
    t0 = time.perf_counter()
    res = run_cli("migrate", "complete", "--yes", "--quiet-seconds", "30", database_url=url)
    assert res.returncode == 4, res.stderr
    assert "cannot see who still reads" in res.stderr and "--no-reader-check" in res.stderr, res.stderr
    assert time.perf_counter() - t0 < 25  # refused up front, before the quiet window
    assert phase_and_columns(url) == ("migrated", True)
    res = run_cli("migrate", "complete", "--yes", "--quiet-seconds", "0", "--no-reader-check", database_url=url)
    assert res.returncode == 0, res.stderr
    assert phase_and_columns(url) == ("completed", False)


def test_pg_stat_statements_created_but_not_loaded_is_not_evidence(migrated_messy: str) -> None:
    url = migrated_messy
    if pg_stat_statements_loaded(url):
        pytest.skip("pg_stat_statements is preloaded on this server: this is the case of a server without it")
    with psycopg.connect(url, autocommit=True) as c:
        if c.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'pg_stat_statements'").fetchone() is None:
            pytest.skip("pg_stat_statements is not installed on this server")
        c.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    res = run_cli("migrate", "complete", "--yes", "--quiet-seconds", "0", database_url=url)
    assert res.returncode == 4 and "cannot see who still reads" in res.stderr, res.stderr
    assert "shared_preload_libraries" in res.stderr, res.stderr
