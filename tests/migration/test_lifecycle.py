"""The migrate commands end to end through the real CLI: run, re-run, verify, status, plan,
rollback and complete, with their refusals."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.helpers import run_cli
from tests.migration.conftest import owned_legacy_db
from tests.migration.messy import load_messy
from tests.plans import (
    ADDRESS_MISMATCH,
    failing_checks,
    migrated_by_file,
    plant_quarantine,
    quarantine,
    quarantine_detail,
)
from villager_shop.api.services.accounts import ensure_service_schema, set_password

LEGACY_PROJECTION = {
    "users": "id, name, phone, email, role, house_number, created_at, updated_at",
    "shops": "id, owner_id, name, house_number, rating, is_open, created_at, updated_at",
    "products": "id, shop_id, name, description, category, price, stock, is_available, rating, order_count,"
                " created_at, updated_at",
    "orders": "id, customer_id, shop_id, status, subtotal, delivery_fee, total, created_at, updated_at",
    "order_items": "id, order_id, product_id, quantity, unit_price, created_at",
}


def legacy_checksums(url: str) -> dict[str, str]:
    with psycopg.connect(url) as c:
        return {t: c.execute(f"SELECT md5(coalesce(string_agg(x::text, ',' ORDER BY x.id), ''))"
                             f" FROM (SELECT {cols} FROM {t}) x").fetchone()[0]  # type: ignore[index]
                for t, cols in LEGACY_PROJECTION.items()}


def schema_fingerprint(url: str) -> dict[str, Any]:
    with psycopg.connect(url) as c:
        return {
            "columns": c.execute("SELECT table_name, column_name, data_type, is_nullable, column_default"
                                 " FROM information_schema.columns WHERE table_schema = 'public'"
                                 " ORDER BY 1, 2").fetchall(),
            "indexes": c.execute("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'"
                                 " ORDER BY 1").fetchall(),
            "constraints": c.execute("SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid)"
                                     " FROM pg_constraint WHERE connamespace = 'public'::regnamespace"
                                     " ORDER BY 1, 2").fetchall(),
            "triggers": c.execute("SELECT tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid"
                                  " WHERE c.relnamespace = 'public'::regnamespace AND NOT tgisinternal").fetchall(),
            "relations": c.execute("SELECT relname, relkind FROM pg_class WHERE relnamespace = 'public'::regnamespace"
                                   " ORDER BY 1").fetchall(),
        }


def cli_json(*args: str, url: str) -> tuple[int, Any]:
    res = run_cli(*args, "--json", database_url=url)
    return res.returncode, json.loads(res.stdout) if res.stdout.strip().startswith(("{", "[")) else res.stderr


def test_run_verify_status_on_generated_data(make_legacy_db: Any) -> None:
    url = make_legacy_db(0.05)
    res = run_cli("migrate", "run", database_url=url)
    assert res.returncode == 0, res.stderr[-2000:]
    code, report = cli_json("migrate", "verify", url=url)
    assert code == 0, report
    assert report["ok"] is True
    for table in LEGACY_PROJECTION:
        c = report["counts"][table]
        assert c["migrated"] + c["quarantined"] == c["legacy_rows"] and c["violations"] == 0
    assert report["counts"]["products"]["quarantined"] > 0  # the generator plants non-positive prices
    code, st = cli_json("migrate", "status", url=url)
    assert code == 0 and st["phase"] == "migrated" and st["steps_done"] == st["steps_total"]
    assert {b["table"] for b in st["backfill"]} == {"users", "shops", "products", "order_items", "orders"}
    assert all(b["finished"] and b["rows_done"] == b["rows_total"] for b in st["backfill"])


def test_second_run_changes_nothing(make_legacy_db: Any) -> None:
    url = make_legacy_db(0.05)
    assert run_cli("migrate", "run", database_url=url).returncode == 0
    counts_sql = ("SELECT (SELECT count(*) FROM addresses), (SELECT count(*) FROM product_categories),"
                  " (SELECT count(*) FROM product_variants)")
    with psycopg.connect(url) as c:
        before = c.execute(counts_sql).fetchone(), quarantine(c)
    assert before[1], "the generator plants rows to quarantine"
    res = run_cli("migrate", "run", "--json", database_url=url)
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert all(v.get("skipped") for k, v in summary.items() if k != "analyze")
    with psycopg.connect(url) as c:
        assert (c.execute(counts_sql).fetchone(), quarantine(c)) == before
    assert run_cli("migrate", "verify", database_url=url).returncode == 0


def test_rollback_without_writes_restores_the_exact_legacy_database(make_legacy_db: Any) -> None:
    url = make_legacy_db(0.05)
    schema_before, data_before = schema_fingerprint(url), legacy_checksums(url)
    assert run_cli("migrate", "run", database_url=url).returncode == 0
    res = run_cli("migrate", "rollback", "--yes", "--json", database_url=url)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["phase"] == "rolled_back" and out["archived_rows"]["product_variants"] > 0
    assert schema_fingerprint(url) == schema_before
    assert legacy_checksums(url) == data_before
    # After a rollback, a new run starts cleanly and verifies.
    assert run_cli("migrate", "run", database_url=url).returncode == 0
    assert run_cli("migrate", "verify", database_url=url).returncode == 0


PLANS = {"built-in": ["--plan", "built-in"], "file": []}  # the file is the default


@pytest.mark.parametrize("plan", PLANS)
def test_rollback_keeps_every_write_of_both_applications(legacy_db: str, plan: str) -> None:
    load_messy(legacy_db)
    assert run_cli("migrate", "run", *PLANS[plan], database_url=legacy_db).returncode == 0
    with psycopg.connect(legacy_db, autocommit=True) as c:
        c.execute("UPDATE users SET house_number = '77 q' WHERE name = 'Asha'")  # old application
        aid = c.execute("INSERT INTO addresses (house_number) VALUES ('88R') RETURNING id").fetchone()[0]  # type: ignore[index]
        c.execute("UPDATE users SET address_id = %s WHERE name = 'Bala'", (aid,))  # new application
        c.execute("UPDATE product_variants SET price = 611, stock = 13 WHERE is_default AND product_id ="
                  " '20000000-0000-0000-0000-000000000001'")
        c.execute("INSERT INTO product_variants (product_id, sku, name, price, stock) VALUES"
                  " ('20000000-0000-0000-0000-000000000001', 'radio-xl', 'XL', 700, 2)")
        c.execute("INSERT INTO product_categories (name, slug) VALUES ('Kites', 'kites-new')")  # no product yet
        by_file = migrated_by_file(c)  # what the rollback reports is named after the plan's own operations
    expected = legacy_checksums(legacy_db)
    res = run_cli("migrate", "rollback", "--yes", "--json", database_url=legacy_db)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert legacy_checksums(legacy_db) == expected
    with psycopg.connect(legacy_db) as c:
        assert c.execute("SELECT house_number FROM users WHERE name IN ('Asha', 'Bala') ORDER BY name").fetchall() == [
            ("77 q",), ("88R",)]
        assert c.execute("SELECT price, stock FROM products WHERE id = '20000000-0000-0000-0000-000000000001'"
                         ).fetchone() == (611, 13)
        # The extra variant has no legacy form: it is kept in the archive schema, not deleted.
        assert out["new_only_rows"]["non_default_product_variants" if by_file else "non_default_variants"] == 1
        assert out["new_only_rows"]["unused_product_categories" if by_file else "unused_categories"] == 1
        assert c.execute(f"SELECT count(*) FROM {out['archive_schema']}.product_variants WHERE sku = 'radio-xl'"
                         ).fetchone() == (1,)
        assert c.execute("SELECT to_regclass('public.product_variants')").fetchone() == (None,)


@pytest.mark.parametrize("plan", PLANS)
def test_rollback_archives_the_service_tables_so_no_legacy_write_is_blocked(legacy_db: str, plan: str) -> None:
    """The shop service's credentials and idempotency keys reference users and orders. They follow
    a key change while the service runs, and go to the archive on rollback, after which the old
    application may TRUNCATE its tables again (a foreign key from them refused it)."""
    load_messy(legacy_db)
    assert run_cli("migrate", "run", *PLANS[plan], database_url=legacy_db).returncode == 0
    with psycopg.connect(legacy_db, autocommit=True) as c:
        ensure_service_schema(c)
        set_password(c, "esha@v.in", "village-pass-1", "customer")
        new_id = uuid.uuid4()
        c.execute("UPDATE users SET id = %s WHERE email = 'esha@v.in'", (new_id,))  # old application
        assert c.execute("SELECT user_id FROM villager_service.credentials").fetchall() == [(new_id,)]
    res = run_cli("migrate", "rollback", "--yes", "--json", database_url=legacy_db)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["archived_rows"]["credentials"] == 1
    with psycopg.connect(legacy_db, autocommit=True) as c:
        assert c.execute("SELECT to_regnamespace('villager_service')").fetchone() == (None,)
        c.execute("TRUNCATE users, shops, products, orders, order_items")


def test_rollback_asks_for_confirmation(legacy_db: str) -> None:
    load_messy(legacy_db)
    assert run_cli("migrate", "run", database_url=legacy_db).returncode == 0
    res = run_cli("migrate", "rollback", database_url=legacy_db, input_text="")
    assert res.returncode == 4 and "--yes" in res.stderr and "Traceback" not in res.stderr
    with psycopg.connect(legacy_db) as c:
        assert c.execute("SELECT to_regclass('public.product_variants') IS NOT NULL").fetchone() == (True,)


def test_complete_refused_when_verify_fails(legacy_db: str) -> None:
    load_messy(legacy_db)
    assert run_cli("migrate", "run", database_url=legacy_db).returncode == 0
    with psycopg.connect(legacy_db, autocommit=True) as c:
        c.execute("SET session_replication_role = replica")  # a write that bypassed the sync
        c.execute("UPDATE users SET house_number = 'ELSEWHERE 9' WHERE name = 'Chitra'")
    res = run_cli("migrate", "complete", "--yes", "--quiet-seconds", "0", database_url=legacy_db)
    assert res.returncode == 4, res.stderr
    with psycopg.connect(legacy_db) as c:
        assert c.execute("SELECT count(*) FROM information_schema.columns WHERE table_name = 'products'"
                         " AND column_name IN ('price', 'stock', 'category')").fetchone() == (3,)
    assert run_cli("migrate", "verify", database_url=legacy_db).returncode == 5
    code, report = cli_json("migrate", "verify", url=legacy_db)
    assert code == 5 and failing_checks(report) in ([f"{kind}:users"] for kind in ADDRESS_MISMATCH), report
    assert "verify fails" in res.stderr and failing_checks(report)[0].split(":")[0] in res.stderr, res.stderr


@pytest.mark.parametrize("plan", PLANS)
def test_verify_can_list_every_difference_and_reports_quarantine_entries_that_name_no_bad_row(
        legacy_db: str, plan: str) -> None:
    load_messy(legacy_db)
    assert run_cli("migrate", "run", *PLANS[plan], database_url=legacy_db).returncode == 0
    with psycopg.connect(legacy_db, autocommit=True) as c:
        c.execute("SET session_replication_role = replica")  # writes that bypassed the sync
        c.execute("UPDATE users SET house_number = 'ELSEWHERE ' || id")
        users = c.execute("SELECT count(*) FROM users").fetchone()[0]  # type: ignore[index]
        healthy_shop = c.execute("SELECT id FROM shops LIMIT 1").fetchone()[0]  # type: ignore[index]
        plant_quarantine(c, "shops", None, "ghost")
        plant_quarantine(c, "nosuchtable", None, "ghost")
        plant_quarantine(c, "shops", healthy_shop, "bogus")
    assert users > 5

    def checks(*args: str) -> dict[str, Any]:
        res = run_cli("migrate", "verify", "--json", *args, database_url=legacy_db)
        assert res.returncode == 5, res.stderr
        report = json.loads(res.stdout)
        return {"checks": {c["name"]: c for c in report["checks"]}, "counts": report["counts"]}

    default, every = checks(), checks("--examples", "0")
    [mismatch] = [name for name in every["checks"] if name in {f"{kind}:users" for kind in ADDRESS_MISMATCH}]
    assert default["checks"][mismatch]["count"] == every["checks"][mismatch]["count"] == users
    assert len(default["checks"][mismatch]["examples"]) == 5 and len(every["checks"][mismatch]["examples"]) == users
    stale = {(name.split(":")[1], ex["detail"].split(" ")[2].rstrip(",")) for name, c in every["checks"].items()
             if name.startswith("stale_quarantine:") for ex in c["examples"]}
    assert stale == {("shops", "ghost"), ("nosuchtable", "ghost"), ("shops", "bogus")}, every["checks"].keys()
    # The shop entry that names a row counts as quarantined; the ghost does not.
    assert every["counts"]["shops"]["quarantined"] == 1


def _complete_while_the_old_application_runs(url: str, sql: str) -> Any:
    """`migrate complete` while an old application repeats `sql` (given the write's number) every 50 ms."""
    load_messy(url)
    assert run_cli("migrate", "run", database_url=url).returncode == 0
    stop = threading.Event()

    def old_app() -> None:
        with psycopg.connect(url, autocommit=True) as c:
            n = 0
            while not stop.is_set():
                n += 1
                c.execute(sql, (n,))
                time.sleep(0.05)

    t = threading.Thread(target=old_app)
    t.start()
    try:
        return run_cli("migrate", "complete", "--yes", "--quiet-seconds", "1", "--no-reader-check", database_url=url)
    finally:
        stop.set()
        t.join()


def test_complete_refused_while_the_old_application_writes(legacy_db: str) -> None:
    res = _complete_while_the_old_application_runs(
        legacy_db, "UPDATE products SET stock = mod(%s, 9) WHERE id = '20000000-0000-0000-0000-000000000002'")
    assert res.returncode == 4 and "still writing" in res.stderr, res.stderr


def test_complete_then_rollback_is_refused(legacy_db: str) -> None:
    load_messy(legacy_db)
    assert run_cli("migrate", "run", database_url=legacy_db).returncode == 0
    res = run_cli("migrate", "complete", database_url=legacy_db)
    assert res.returncode == 4 and "--yes" in res.stderr
    res = run_cli("migrate", "complete", "--yes", "--quiet-seconds", "0.2", "--no-reader-check", "--json",
                  database_url=legacy_db)
    assert res.returncode == 0, res.stderr
    with psycopg.connect(legacy_db) as c:
        assert c.execute("SELECT count(*) FROM information_schema.columns WHERE table_schema = 'public' AND"
                         " (table_name, column_name) IN (('users', 'house_number'), ('shops', 'house_number'),"
                         " ('products', 'category'), ('products', 'price'), ('products', 'stock'))").fetchone() == (0,)
        assert c.execute("SELECT count(*) FROM check_data_integrity()").fetchone() == (0,)
        detail = quarantine_detail(c, "products", "20000000-0000-0000-0000-000000000009")
        assert float(detail["price"]) == -5.0  # the dropped legacy value survives in the quarantine
        reloptions = c.execute("SELECT reloptions FROM pg_class WHERE relname = 'product_variants'").fetchone()[0]  # type: ignore[index]
        assert "autovacuum_vacuum_scale_factor=0.1" in reloptions
    assert run_cli("migrate", "verify", database_url=legacy_db).returncode == 0
    for args in (("--yes",), ()):  # without --yes too: the reason, not a request for confirmation
        res = run_cli("migrate", "rollback", *args, database_url=legacy_db)
        assert res.returncode == 4 and "complete" in res.stderr and "restore" in res.stderr, res.stderr
        assert len(res.stderr.strip().splitlines()) == 1


def test_verify_before_any_run_fails(legacy_db: str) -> None:
    res = run_cli("migrate", "verify", database_url=legacy_db)
    assert res.returncode == 5


def test_run_refuses_a_database_without_the_legacy_schema(fresh_db: str) -> None:
    for args in (("migrate", "run"), ("generate", "--scale", "0.01")):
        res = run_cli(*args, database_url=fresh_db)
        # Exactly one line: no empty line left by a progress display that never started.
        assert res.returncode != 0 and "legacy init" in res.stderr and res.stderr.count("\n") == 1, res.stderr


def test_plan_sql_passes_squawk(tmp_path: Path, legacy_db: str) -> None:
    res = run_cli("migrate", "plan", "--sql", database_url=legacy_db)
    assert res.returncode == 0, res.stderr
    assert "CONCURRENTLY" in res.stdout and "NOT VALID" in res.stdout and "lock_timeout" in res.stdout
    script = tmp_path / "plan.sql"
    script.write_text(res.stdout)
    squawk = shutil.which("squawk") or str(Path(__import__("sys").executable).parent / "squawk")
    lint = subprocess.run([squawk, "--reporter", "gcc", str(script)], capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    res = run_cli("migrate", "plan", "--json", database_url=legacy_db)
    steps = json.loads(res.stdout)["steps"]
    assert steps[0]["name"] == "state_schema" and all(s["locks"] for s in steps)


def test_guide_strategy_runs_on_messy_data(legacy_db: str) -> None:
    load_messy(legacy_db)
    res = run_cli("migrate", "run", "--strategy", "guide", "--json", database_url=legacy_db)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["backfill_rows"] > 0 and out["phase2_s"] >= 0
    with psycopg.connect(legacy_db) as c:
        assert c.execute("SELECT count(*) FROM product_variants").fetchone()[0] > 0  # type: ignore[index]
        # The reference does the guide's work: every product with a category gets one, whatever its
        # spelling (a benchmark against a reference that skips rows would flatter it).
        left = c.execute("SELECT count(*) FROM products WHERE category IS NOT NULL AND btrim(category) <> ''"
                         " AND category_id IS NULL").fetchone()[0]  # type: ignore[index]
        spellings = c.execute("SELECT count(DISTINCT category) FROM products WHERE btrim(category) <> ''"
                              ).fetchone()[0]  # type: ignore[index]
        assert left == 0 and spellings > 1, (left, spellings)
        assert c.execute("SELECT count(*) FROM product_categories").fetchone()[0] == spellings  # type: ignore[index]


@pytest.mark.parametrize("view", ["db_performance_summary", "slow_queries"])
def test_monitoring_views_answer_on_any_server(legacy_db: str, view: str) -> None:
    load_messy(legacy_db)
    assert run_cli("migrate", "run", database_url=legacy_db).returncode == 0
    with psycopg.connect(legacy_db) as c:
        rows = c.execute(f"SELECT * FROM {view}").fetchall()
        if view == "db_performance_summary":
            metrics = {r[0]: r for r in rows}
            assert set(metrics) == {"connection_count", "cache_hit_ratio"}
            assert metrics["connection_count"][1] >= 1 and metrics["connection_count"][3] in ("OK", "CRITICAL")
        else:
            loaded = "pg_stat_statements" in c.execute("SHOW shared_preload_libraries").fetchone()[0]  # type: ignore[index]
            if not loaded:
                assert len(rows) == 1 and "not loaded" in rows[0][0]
            else:
                assert all(r[3] > 100 for r in rows)


def test_slow_queries_explains_an_extension_left_at_an_old_version(legacy_db: str) -> None:
    """A cluster upgraded from PostgreSQL 12 keeps pg_stat_statements' old columns until updated."""
    with psycopg.connect(legacy_db, autocommit=True) as c:
        if "pg_stat_statements" not in c.execute("SHOW shared_preload_libraries").fetchone()[0]:  # type: ignore[index]
            pytest.skip("pg_stat_statements is not loaded on this server")
        c.execute("DROP EXTENSION IF EXISTS pg_stat_statements")
        c.execute("CREATE EXTENSION pg_stat_statements VERSION '1.7'")  # total_time, mean_time
    assert run_cli("migrate", "run", database_url=legacy_db).returncode == 0
    with psycopg.connect(legacy_db) as c:
        rows = c.execute("SELECT * FROM slow_queries").fetchall()
    assert len(rows) == 1 and "ALTER EXTENSION pg_stat_statements UPDATE" in rows[0][0], rows


def test_slow_queries_explains_an_extension_whose_library_is_not_loaded(legacy_db: str) -> None:
    with psycopg.connect(legacy_db, autocommit=True) as c:
        if "pg_stat_statements" in c.execute("SHOW shared_preload_libraries").fetchone()[0]:  # type: ignore[index]
            pytest.skip("pg_stat_statements is loaded on this server")
        if not c.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'pg_stat_statements'").fetchone():
            pytest.skip("pg_stat_statements is not installed on this server")
        c.execute("CREATE EXTENSION pg_stat_statements")  # created, but its library is not loaded
    assert run_cli("migrate", "run", database_url=legacy_db).returncode == 0
    with psycopg.connect(legacy_db) as c:
        rows = c.execute("SELECT * FROM slow_queries").fetchall()
    assert len(rows) == 1 and "not loaded" in rows[0][0] and rows[0][1] is None, rows


def test_the_whole_lifecycle_runs_as_a_database_owner_who_is_not_superuser(pg_admin_url: str) -> None:
    """A managed server gives the shop's owner role no superuser and no pg_read_all_settings."""
    with owned_legacy_db(pg_admin_url, "vt_owner") as url:
        for args in (("migrate", "run"), ("migrate", "verify"), ("migrate", "rollback", "--yes"), ("migrate", "run"),
                     ("migrate", "complete", "--yes", "--no-reader-check"), ("migrate", "verify")):
            res = run_cli(*args, database_url=url)
            assert res.returncode == 0, (args, res.stderr[-1500:])
        with psycopg.connect(url) as c:
            assert c.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone() == (False,)
            # The owner may not create the extension: the view explains itself instead of failing.
            rows = c.execute("SELECT * FROM slow_queries").fetchall()
            assert len(rows) == 1 and "pg_stat_statements" in rows[0][0] and rows[0][1] is None, rows
            assert c.execute("SELECT count(*) FROM check_data_integrity()").fetchone() == (0,)


def test_a_second_concurrent_run_is_refused(legacy_db: str) -> None:
    from villager_shop.migration.runner import ADVISORY_KEY

    with psycopg.connect(legacy_db, autocommit=True, application_name="another migrator") as holder:
        holder.execute("SELECT pg_advisory_lock(%s, %s)", ADVISORY_KEY)
        res = run_cli("migrate", "run", database_url=legacy_db)
    assert res.returncode == 4 and "in progress" in res.stderr and "another migrator" in res.stderr
    assert "waiting up to 10 s" in " ".join(res.stderr.split())  # it said why it waited
    with psycopg.connect(legacy_db) as c:
        assert c.execute("SELECT to_regclass('public.addresses')").fetchone() == (None,)


def test_complete_refused_while_the_old_application_adds_order_items(legacy_db: str) -> None:
    """An old application's order item (product_id only) counts as a legacy write: after `complete`
    nothing would fill its variant_id."""
    res = _complete_while_the_old_application_runs(
        legacy_db, "INSERT INTO order_items (order_id, product_id, quantity, unit_price) SELECT"
                   " '30000000-0000-0000-0000-000000000001', '20000000-0000-0000-0000-000000000001', 1, %s")
    assert res.returncode == 4 and "still writing" in res.stderr, res.stderr


@pytest.mark.parametrize("then", ["rollback", "complete", "run"])
def test_a_complete_that_never_cut_leaves_the_migration_where_it_was(legacy_db: str, then: str) -> None:
    """`complete` died (or gave up on its locks) after marking the phase `completing` and before its
    one-transaction cut: the legacy columns are all there, and rollback, complete and run go on."""
    load_messy(legacy_db)
    assert run_cli("migrate", "run", database_url=legacy_db).returncode == 0
    with psycopg.connect(legacy_db, autocommit=True) as c:
        c.execute("UPDATE villager_migration.state SET value = to_jsonb('completing'::text) WHERE key = 'phase'")
    args = {"rollback": ("migrate", "rollback", "--yes"), "complete": ("migrate", "complete", "--yes", "--quiet-seconds",
                                                                       "0", "--no-reader-check"), "run": ("migrate", "run")}[then]
    res = run_cli(*args, database_url=legacy_db)
    assert res.returncode == 0, res.stderr
    expected = {"rollback": "rolled_back", "complete": "completed", "run": "migrated"}[then]
    with psycopg.connect(legacy_db) as c:
        assert c.execute("SELECT value #>> '{}' FROM villager_migration.state WHERE key = 'phase'").fetchone() == (expected,)
