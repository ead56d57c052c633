"""The old application, written with the legacy Prisma client (schema.prisma), keeps writing while
`migrate run` and then `migrate rollback` change the database under it: creates, updates, upserts,
deleteMany, and orders with nested items in interactive transactions. No write fails, `migrate
verify` passes, and every write is in the legacy columns and, while migrated, in the normalized
tables too."""

from __future__ import annotations

import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.helpers import run_cli
from tests.plans import normalizers
from tests.prisma import node

pytestmark = pytest.mark.slow

KINDS = {"createUser", "createShop", "updateHouse", "createProduct", "updateProduct", "upsertProduct",
         "deleteProducts", "createOrder", "confirmOrder", "deleteOrder"}


def writer_rows(url: str) -> int:
    """Users and shops the writers created (they never delete those)."""
    with psycopg.connect(url) as c:
        return int(c.execute("SELECT (SELECT count(*) FROM users WHERE email LIKE '%%@prisma.writer')"
                             " + (SELECT count(*) FROM shops WHERE name LIKE 'prisma shop %%')").fetchone()[0])  # type: ignore[index]


def legacy_side(url: str, expected: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    """Each row the writer committed, as it last wrote it, in the legacy columns."""
    problems: list[str] = []
    columns = {"users": "house_number", "shops": "house_number", "products": "category, price, stock",
               "orders": "status, total", "order_items": "product_id::text, quantity"}
    with psycopg.connect(url) as c:
        for table, rows in expected.items():
            found = {r[0]: r[1:] for r in c.execute(
                f"SELECT id::text, {columns[table]} FROM {table} WHERE id = ANY(%s::uuid[])", (list(rows),))}
            for rid, want in rows.items():
                if want.get("deleted"):
                    if rid in found:
                        problems.append(f"{table} {rid}: deleted, still there")
                    continue
                if rid not in found:
                    problems.append(f"{table} {rid}: missing")
                    continue
                got = dict(zip([c.strip().split("::")[0] for c in columns[table].split(",")], found[rid], strict=True))
                for col, value in want.items():
                    value = Decimal(value) if col in ("price", "total") else value
                    if got[col] != value:
                        problems.append(f"{table} {rid}: {col} {got[col]!r}, written {value!r}")
    return problems


NORMALIZED_CHECKS = {
    # Each query returns the ids (of the given rows) whose normalized form disagrees with the legacy one,
    # by the normalizers of the plan the database is migrated with.
    "users": "SELECT u.id::text FROM users u LEFT JOIN addresses a ON a.id = u.address_id WHERE u.id = ANY(%s::uuid[])"
             " AND a.house_number IS DISTINCT FROM {house_number}(u.house_number)",
    "shops": "SELECT s.id::text FROM shops s LEFT JOIN addresses a ON a.id = s.address_id WHERE s.id = ANY(%s::uuid[])"
             " AND a.house_number IS DISTINCT FROM {house_number}(s.house_number)",
    "products": "SELECT p.id::text FROM products p LEFT JOIN product_categories c ON c.id = p.category_id"
                " LEFT JOIN product_variants v ON v.product_id = p.id AND v.is_default WHERE p.id = ANY(%s::uuid[])"
                " AND ({category}(c.name) IS DISTINCT FROM {category}(p.category)"
                "      OR v.price IS DISTINCT FROM p.price OR v.stock IS DISTINCT FROM p.stock::bigint"
                "      OR p.base_price IS DISTINCT FROM p.price)",
    "order_items": "SELECT i.id::text FROM order_items i LEFT JOIN product_variants v ON v.id = i.variant_id"
                   " WHERE i.id = ANY(%s::uuid[]) AND (v.product_id IS DISTINCT FROM i.product_id OR NOT v.is_default)",
}


def normalized_side(url: str, expected: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    """Each row the writer committed, in the normalized tables: address, category, default variant."""
    problems = []
    with psycopg.connect(url) as c:
        functions = normalizers(c)
        for table, query in NORMALIZED_CHECKS.items():
            ids = [rid for rid, want in expected[table].items() if not want.get("deleted")]
            problems += [f"{table} {r[0]}: normalized form differs" for r in c.execute(query.format(**functions),
                                                                                       (ids,))]
    return problems


def test_the_old_prisma_application_writes_through_migrate_run_and_rollback_without_error_or_loss(
        prisma_project: Path, make_legacy_db: Any) -> None:
    url = make_legacy_db(0.05)
    with node.running("legacy-writer.ts", "3", "run", database_url=url) as writer:
        time.sleep(0.5)
        before = writer_rows(url)
        res = run_cli("migrate", "run", database_url=url)
        during = writer_rows(url) - before
        time.sleep(1.0)  # and after it, on the migrated database
    report = writer.report
    assert res.returncode == 0, res.stderr[-2000:]
    assert report["errors"] == [], report["errors"][:10]
    assert set(report["by_kind"]) == KINDS, report["by_kind"]
    assert during >= 5, during  # the writer was writing while the migration ran
    verify = run_cli("migrate", "verify", database_url=url)
    assert verify.returncode == 0, verify.stdout[-3000:]
    expected = report["expected"]
    assert sum(len(rows) for rows in expected.values()) > 50
    assert legacy_side(url, expected) == []
    assert normalized_side(url, expected) == []
    # The checks see a lost write: one stock changed behind the sync triggers' back, then put back.
    pid = next(rid for rid, want in expected["products"].items() if not want.get("deleted"))
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("SET session_replication_role = replica")
        c.execute("UPDATE products SET stock = stock + 1 WHERE id = %s", (pid,))
        assert legacy_side(url, expected) == [f"products {pid}: stock {expected['products'][pid]['stock'] + 1!r},"
                                              f" written {expected['products'][pid]['stock']!r}"]
        assert normalized_side(url, expected) == [f"products {pid}: normalized form differs"]
        c.execute("UPDATE products SET stock = stock - 1 WHERE id = %s", (pid,))

    with node.running("legacy-writer.ts", "3", "rollback", database_url=url) as writer:
        time.sleep(0.5)
        res = run_cli("migrate", "rollback", "--yes", database_url=url)
        time.sleep(1.0)
    assert res.returncode == 0, res.stderr[-2000:]
    assert writer.report["errors"] == [], writer.report["errors"][:10]
    assert writer.report["ops"] > 50
    assert legacy_side(url, expected) == []  # what was written before the rollback
    assert legacy_side(url, writer.report["expected"]) == []  # and during it
