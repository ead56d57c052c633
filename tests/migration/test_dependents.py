"""Objects of the operator's that use a legacy column `complete` drops (a view, a trigger on the
column, a generated column, ...) would make the drop fail, or vanish with it. `migrate plan`
lists them, and `complete` refuses up front, naming them, before it waits or changes anything."""

from __future__ import annotations

import json
import time

import psycopg
import pytest

from tests.helpers import run_cli
from tests.migration.conftest import migrate
from tests.migration.messy import load_messy

# (what `migrate plan --json` names, the legacy column it uses, the DDL that creates it, minimum server version)
OBJECTS = [
    ("view public.v_products", "products.category",
     "CREATE VIEW v_products AS SELECT id, category FROM products", 0),
    ("materialized view public.mv_prices", "products.price",
     "CREATE MATERIALIZED VIEW mv_prices AS SELECT id, price FROM products", 0),
    ("function public.house_of(uuid)", "users.house_number",
     "CREATE FUNCTION house_of(u uuid) RETURNS text LANGUAGE sql STABLE"
     " BEGIN ATOMIC SELECT house_number FROM users WHERE id = u; END", 140000),
    ("trigger t_stock_audit on public.products", "products.stock",
     "CREATE FUNCTION stock_audit() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NEW; END$$;"
     " CREATE TRIGGER t_stock_audit BEFORE UPDATE OF stock ON products FOR EACH ROW EXECUTE FUNCTION stock_audit()",
     0),
    ("generated column public.shops.house_label", "shops.house_number",
     "ALTER TABLE shops ADD COLUMN house_label text GENERATED ALWAYS AS (upper(house_number)) STORED", 0),
    ("publication pub_catalog (table public.products)", "products.category",
     "CREATE PUBLICATION pub_catalog FOR TABLE products (id, name, category)", 150000),
]


@pytest.fixture
def with_dependents(legacy_db: str, server_version: int) -> tuple[str, list[tuple[str, str]]]:
    load_messy(legacy_db)
    migrate(legacy_db)
    made = []
    with psycopg.connect(legacy_db, autocommit=True) as c:
        for name, column, ddl, since in OBJECTS:
            if server_version >= since:
                c.execute(ddl.encode())
                made.append((name, column))
    return legacy_db, made


def test_plan_lists_every_object_that_uses_a_legacy_column(with_dependents: tuple[str, list[tuple[str, str]]]) -> None:
    url, made = with_dependents
    res = run_cli("migrate", "plan", "--json", database_url=url)
    assert res.returncode == 0, res.stderr
    listed = {d["object"]: d["columns"] for d in json.loads(res.stdout)["legacy_column_dependents"]}
    for name, column in made:
        assert column in listed.get(name, []), (name, listed)
    assert len(listed) == len(made), listed  # nothing of the migration's own
    res = run_cli("migrate", "plan", database_url=url)
    assert res.returncode == 0 and "view public.v_products" in res.stdout, res.stdout[-2000:]


def test_complete_refuses_up_front_and_changes_nothing(with_dependents: tuple[str, list[tuple[str, str]]]) -> None:
    url, made = with_dependents
    t0 = time.monotonic()
    res = run_cli("migrate", "complete", "--yes", "--quiet-seconds", "30", database_url=url)
    took = time.monotonic() - t0
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode == 4 and len(lines) == 1, res.stderr
    assert f"complete would break {len(made)} objects that use legacy columns" in lines[0], lines[0]
    assert "view public.v_products (products.category)" in lines[0], lines[0]
    assert took < 20, took  # before the 30 s quiet wait
    with psycopg.connect(url) as c:
        assert c.execute("SELECT count(*) FROM pg_attribute WHERE attrelid = 'public.products'::regclass"
                         " AND attname IN ('category', 'price', 'stock') AND NOT attisdropped").fetchone() == (3,)
        assert c.execute("SELECT value #>> '{}' FROM villager_migration.state WHERE key = 'phase'").fetchone() == (
            "migrated",)

