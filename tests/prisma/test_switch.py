"""The switch of a Prisma application: an instance still on the legacy client reads the legacy columns
with every product it lists, and `complete` refuses while it runs, naming it; the new application
on the normalized client lists through the quiet window and the cut without an error, and it
creates, orders and reads through the normalized schema's relations before and after `complete`."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest

from tests.helpers import run_cli
from tests.migration.conftest import VILLAGER_PLAN, migrate
from tests.migration.messy import load_messy
from tests.prisma import node
from villager_shop.core.db import create_database, drop_database


@pytest.fixture
def migrated_with_pgss(legacy_db: str) -> str:
    with psycopg.connect(legacy_db, autocommit=True) as c:
        if "pg_stat_statements" not in str(c.execute("SHOW shared_preload_libraries").fetchone()[0]):  # type: ignore[index]
            pytest.skip("pg_stat_statements is not preloaded on this server (the embedded PostgreSQL 18 preloads it)")
    load_messy(legacy_db)
    migrate(legacy_db, VILLAGER_PLAN)  # the plan `migrate run` runs by default
    return legacy_db


def phase(url: str) -> str:
    with psycopg.connect(url) as c:
        return str(c.execute("SELECT value #>> '{}' FROM villager_migration.state WHERE key = 'phase'").fetchone()[0])  # type: ignore[index]


def test_complete_waits_for_the_legacy_prisma_client_and_not_for_the_normalized_one(
        prisma_project: Path, migrated_with_pgss: str) -> None:
    url = migrated_with_pgss
    with node.running("list-products.ts", "legacy", "100", database_url=url) as old:
        res = run_cli("migrate", "complete", "--yes", "--quiet-seconds", "2", database_url=url)
    assert res.returncode == 4, res.stderr
    assert "prisma-lister legacy" in res.stderr and "products.price" in res.stderr, res.stderr
    assert old.report["errors"] == [] and old.report["listings"] >= 10, old.report
    assert phase(url) == "migrated"

    with node.running("list-products.ts", "normalized", "50", database_url=url) as new:
        res = run_cli("migrate", "complete", "--yes", "--quiet-seconds", "2", database_url=url)
        listed_by_the_cut = new.proc.poll() is None
    assert res.returncode == 0, res.stderr
    assert listed_by_the_cut and new.report["errors"] == [], new.report
    assert new.report["listings"] >= 20, new.report
    assert phase(url) == "completed"


@pytest.fixture(params=["migrated", "completed"])
def phase_copy(request: pytest.FixtureRequest, pg_admin_url: str, phase_dbs: dict[str, str]) -> Iterator[tuple[str, str]]:
    name = f"vt_{uuid.uuid4().hex[:12]}"
    template = psycopg.conninfo.conninfo_to_dict(phase_dbs[request.param])["dbname"]
    url = create_database(pg_admin_url, name, template=str(template))
    try:
        yield request.param, url
    finally:
        drop_database(pg_admin_url, name)


def test_the_normalized_client_creates_orders_and_reads_through_the_relations_before_and_after_complete(
        prisma_project: Path, phase_copy: tuple[str, str]) -> None:
    state, url = phase_copy
    out = node.tsx_json("normalized-app.ts", database_url=url)
    item = out["order"]["items"][0]
    assert item["variant"]["sku"].endswith("-brass") and Decimal(item["unitPrice"]) == Decimal("320.00")
    [product] = out["listed"]
    assert product["category"]["slug"].startswith("lamps-") and Decimal(product["basePrice"]) == Decimal("250.00")
    assert [(v["name"], int(v["stock"]), v["isDefault"]) for v in product["variants"]] == \
        [("Default", 4, True), ("Brass", 1, False)]
    assert product["shop"]["address"]["houseNumber"] == f"N-{item['variant']['sku'].split('-')[0]}"
    with psycopg.connect(url) as c:
        assert c.execute("SELECT v.stock FROM order_items i JOIN product_variants v ON v.id = i.variant_id"
                         " WHERE i.id = %s", (item["id"],)).fetchone() == (1,)
        if state == "migrated":  # the old application sees it all in its own columns
            assert c.execute("SELECT p.price, p.stock, p.category, s.house_number FROM products p"
                             " JOIN shops s ON s.id = p.shop_id WHERE p.id = %s", (product["id"],)).fetchone() == \
                (Decimal("250.00"), 4, product["category"]["name"], product["shop"]["address"]["houseNumber"])
