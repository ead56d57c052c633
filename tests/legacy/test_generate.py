"""The legacy data generator: deterministic, sized by scale, messy at documented rates, and safe."""

from __future__ import annotations

import json
import re
import tracemalloc
import uuid
from collections.abc import Iterator
from datetime import timedelta

import psycopg
import pytest

from tests.helpers import ROOT, run_cli
from villager_shop.core.db import create_database, drop_database
from villager_shop.core.errors import RefusedError
from villager_shop.legacy import generate as gen
from villager_shop.legacy.schema import LEGACY_TABLES, schema_sql


@pytest.fixture
def other_legacy_db(pg_admin_url: str) -> Iterator[str]:
    """A second empty database holding the legacy schema."""
    name = f"vt_{uuid.uuid4().hex[:12]}"
    url = create_database(pg_admin_url, name)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(schema_sql().encode())
        yield url
    finally:
        drop_database(pg_admin_url, name)


def _checksums(url: str) -> dict[str, str]:
    out = {}
    with psycopg.connect(url) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        for t in LEGACY_TABLES:
            row = conn.execute(f"SELECT md5(string_agg(t::text, ',' ORDER BY id)) FROM {t} t").fetchone()
            assert row is not None and row[0] is not None, t
            out[t] = row[0]
    return out


def _scalar(conn: psycopg.Connection, query: str) -> object:  # type: ignore[type-arg]
    row = conn.execute(query).fetchone()
    assert row is not None
    return row[0]


def test_same_seed_and_scale_give_identical_rows_and_another_seed_differs(
    legacy_db: str, other_legacy_db: str
) -> None:
    gen.generate(legacy_db, scale=0.05, seed=7)
    gen.generate(other_legacy_db, scale=0.05, seed=7)
    first = _checksums(legacy_db)
    assert _checksums(other_legacy_db) == first
    gen.generate(other_legacy_db, scale=0.05, seed=8, force=True)
    second = _checksums(other_legacy_db)
    assert all(second[t] != first[t] for t in LEGACY_TABLES), (first, second)


@pytest.mark.parametrize("scale", [0.05, 0.1])
def test_row_counts_are_linear_in_scale_within_documented_tolerance(legacy_db: str, scale: float) -> None:
    report = gen.generate(legacy_db, scale=scale, seed=1)
    for table, base in gen.BASE_ROWS.items():
        assert report.rows[table] == round(base * scale), table
    expected_items = report.rows["orders"] * gen.MEAN_ITEMS_PER_ORDER
    assert abs(report.rows["order_items"] - expected_items) <= gen.ITEMS_TOLERANCE * expected_items
    assert report.total_rows == sum(report.rows.values())
    assert report.elapsed_seconds > 0 and report.rows_per_second > 0
    assert set(report.table_seconds) >= set(LEGACY_TABLES)


def test_every_messy_kind_is_present_at_scale_0_01_at_its_exact_count(legacy_db: str) -> None:
    report = gen.generate(legacy_db, scale=0.01, seed=42)
    m = report.messy
    expected = gen.expected_counts(0.01)
    for table in ("users", "shops"):
        for kind, count in expected[f"{table}.house_number"].items():
            assert count >= 1
            assert m[f"{table}.house_number"][kind] == count, (table, kind)
    assert m["house_numbers"]["houses_with_several_spellings"] >= 1
    assert m["house_numbers"]["houses_shared_by_shop_and_user"] >= 1
    assert m["users"]["phone_null"] == expected["users.phone"]["null"]
    assert m["users"]["email_null"] == expected["users.email"]["null"]
    cat = m["products.category"]
    for kind in ("null", "empty", "blank", "non_ascii", "punctuation_only"):
        assert cat[kind] == expected["products.category"][kind] >= 1, kind
    assert cat["punctuation"] == expected["products.category"]["punctuation"]
    assert cat["case_space_variant_rows"] >= 1
    assert cat["slugs_shared_by_different_names"] >= 1
    assert m["products"]["price_zero"] == expected["products.price"]["zero"] >= 1
    assert m["products"]["price_negative"] == expected["products.price"]["negative"] >= 1
    assert m["products"]["stock_negative"] == expected["products.stock"]["negative"] >= 1
    assert m["products"]["unavailable"] == expected["products.is_available"]["false"]
    assert m["orders"]["total_mismatch"] == expected["orders.total"]["mismatch"] >= 1
    assert m["order_items"]["unavailable_product"] >= 1
    assert m["order_items"]["unit_price_differs"] >= 1
    with psycopg.connect(legacy_db) as conn:
        categories = {r[0] for r in conn.execute("SELECT DISTINCT category FROM products")}
        houses = [r[0] for r in conn.execute("SELECT house_number FROM users UNION ALL SELECT house_number FROM shops")]
    # the SPEC's examples, literally: two different names with one slug, non-ASCII, punctuation only
    assert {"Fruits & Veg", "Fruits Veg", "मिठाई", "!!!", None, ""} <= categories
    assert any(c and c != c.strip() for c in categories)
    assert any(h is not None and re.fullmatch(r"\d+ [A-Z]", h) for h in houses)
    assert any(h is not None and re.fullmatch(r"\d+[a-z]", h) for h in houses)


def test_rates_at_scale_0_1_match_the_documented_rates(legacy_db: str) -> None:
    report = gen.generate(legacy_db, scale=0.1, seed=3)
    m, rows = report.messy, report.rows
    for kind, rate in gen.HOUSE_RATES.items():
        assert m["users.house_number"][kind] == round(rate * rows["users"])
    assert m["products.category"]["null"] == round(0.02 * rows["products"])
    assert m["products.category"]["case_space_variant_rows"] == pytest.approx(0.05 * rows["products"], rel=0.05)
    assert m["orders"]["total_mismatch"] == round(0.01 * rows["orders"])
    items = rows["order_items"]
    assert m["order_items"]["unavailable_product"] == pytest.approx(0.06 * items, rel=0.25)
    assert m["order_items"]["unit_price_differs"] == pytest.approx(0.035 * items, rel=0.25)


def test_generated_rows_are_consistent_where_they_are_meant_to_be(legacy_db: str) -> None:
    gen.generate(legacy_db, scale=0.05, seed=11)
    ref = gen.REFERENCE_DATE
    with psycopg.connect(legacy_db) as conn:
        for t in ("users", "shops", "products", "orders"):
            assert _scalar(conn, f"SELECT count(*) FROM {t} WHERE updated_at < created_at") == 0, t
            lo, hi = conn.execute(f"SELECT min(created_at), max(updated_at) FROM {t}").fetchone() or (None, None)
            assert lo is not None and hi is not None
            assert ref - timedelta(days=gen.HISTORY_DAYS) <= lo and hi <= ref, t
        assert _scalar(conn, """
            SELECT count(*) FROM orders o JOIN users u ON u.id = o.customer_id JOIN shops s ON s.id = o.shop_id
            WHERE o.created_at < u.created_at OR o.created_at < s.created_at""") == 0
        assert _scalar(conn, """
            SELECT count(*) FROM shops s JOIN users u ON u.id = s.owner_id
            WHERE u.role <> 'shopkeeper' OR s.created_at < u.created_at""") == 0
        assert _scalar(conn, """
            SELECT count(*) FROM order_items i JOIN orders o ON o.id = i.order_id JOIN products p ON p.id = i.product_id
            WHERE i.created_at <> o.created_at OR p.shop_id <> o.shop_id OR p.created_at > o.created_at""") == 0
        assert _scalar(conn, """
            SELECT count(*) FROM orders o
            WHERE subtotal <> (SELECT sum(quantity * unit_price) FROM order_items WHERE order_id = o.id)""") == 0
        assert _scalar(conn, "SELECT count(*) FROM orders o WHERE NOT EXISTS "
                             "(SELECT 1 FROM order_items WHERE order_id = o.id)") == 0
        roles = dict(conn.execute("SELECT role, count(*) FROM users GROUP BY role").fetchall())
        assert set(roles) == {"admin", "shopkeeper", "customer"} and roles["customer"] > 0.8 * sum(roles.values())
        assert _scalar(conn, "SELECT count(*) FROM shops WHERE rating < 0 OR rating > 5") == 0
        assert _scalar(conn, "SELECT count(*) FROM products WHERE rating < 0 OR rating > 5 OR order_count < 0") == 0
        assert _scalar(conn, "SELECT avg(is_available::int) FROM products") > 0.9  # type: ignore[operator]
        assert _scalar(conn, "SELECT avg(is_open::int) FROM shops") > 0.8  # type: ignore[operator]
        assert _scalar(conn, "SELECT count(DISTINCT status) FROM orders") == 4
        bad_phones = "SELECT count(*) FROM users WHERE phone IS NOT NULL AND phone !~ '^\\+91[6-9][0-9]{9}$'"
        assert _scalar(conn, bad_phones) == 0
        assert _scalar(conn, "SELECT count(*) FROM pg_stats WHERE tablename = 'order_items'") > 0  # analyzed


def test_generate_refuses_a_non_empty_database_unless_forced(legacy_db: str) -> None:
    with psycopg.connect(legacy_db, autocommit=True) as conn:
        conn.execute("INSERT INTO users (name) VALUES ('Asha')")
    with pytest.raises(RefusedError, match="--force"):
        gen.generate(legacy_db, scale=0.01, seed=1)
    with psycopg.connect(legacy_db) as conn:
        assert _scalar(conn, "SELECT count(*) FROM users") == 1
        assert _scalar(conn, "SELECT count(*) FROM products") == 0
    report = gen.generate(legacy_db, scale=0.01, seed=1, force=True)
    assert report.rows["users"] == 100
    with psycopg.connect(legacy_db) as conn:
        assert _scalar(conn, "SELECT count(*) FROM users WHERE name = 'Asha' AND email IS NULL AND phone IS NULL") == 0


def test_memory_stays_flat_as_scale_grows(legacy_db: str, other_legacy_db: str) -> None:
    peaks = []
    for url, scale in ((legacy_db, 0.03), (other_legacy_db, 0.06)):
        tracemalloc.start()
        try:
            gen.generate(url, scale=scale, seed=5)
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
    # twice the rows (~12k more) may cost only the compact per-user/shop/product arrays (~13 bytes
    # each), never the rows themselves (a list of 12k COPY lines alone would be ~2 MB)
    assert peaks[1] - peaks[0] < 1_000_000, peaks


def test_cli_without_legacy_schema_is_a_one_line_error(fresh_db: str) -> None:
    res = run_cli("generate", "--scale", "0.01", database_url=fresh_db)
    assert res.returncode != 0
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert "villager-shop legacy init" in lines[0]
    assert "Traceback" not in res.stderr + res.stdout


def test_cli_json_report_parses_and_a_second_run_is_refused(legacy_db: str) -> None:
    res = run_cli("generate", "--scale", "0.01", "--seed", "9", "--json", database_url=legacy_db)
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["rows"]["users"] == 100 and data["seed"] == 9 and data["scale"] == 0.01
    assert data["total_rows"] == sum(data["rows"].values())
    assert data["messy"]["orders"]["total_mismatch"] >= 1
    res = run_cli("generate", "--scale", "0.01", database_url=legacy_db)
    assert res.returncode == RefusedError.exit_code
    assert "--force" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    res = run_cli("generate", "--scale", "0.01", "--force", database_url=legacy_db)
    assert res.returncode == 0, res.stderr
    assert "order_items" in res.stdout and "total_mismatch" in res.stdout


def test_rates_in_code_are_the_documented_rates() -> None:
    doc = (ROOT / "docs" / "legacy-data.md").read_text(encoding="utf-8")
    for column, rates in gen.RATES.items():
        for kind, rate in rates.items():
            pct = f"{rate * 100:g} %"
            assert re.search(rf"\|\s*{re.escape(kind)}\s*\|\s*{re.escape(pct)}\s*\|", doc), (column, kind, pct)
