"""A restore says exactly what it would lose, and points at `migrate rollback` during a migration."""

from __future__ import annotations

from pathlib import Path

import psycopg

from tests.helpers import run_cli
from villager_shop.safety.backup import create_backup
from villager_shop.safety.restore import plan_restore


def test_restore_reports_rows_written_after_the_backup(shop_db: str, backup_dir: Path) -> None:
    entry = create_backup(shop_db, backup_dir)
    with psycopg.connect(shop_db, autocommit=True) as conn:
        conn.execute("INSERT INTO users (name) SELECT 'late ' || g FROM generate_series(1, 3) g")
        conn.execute("UPDATE products SET stock = stock + 1, updated_at = now()"
                     " WHERE id IN (SELECT id FROM products ORDER BY id LIMIT 2)")
        conn.execute("UPDATE orders SET status = 'confirmed'")  # leaves updated_at alone: not visible
    plan = plan_restore(shop_db, backup_dir, entry.id)
    by_table = {t.table: t for t in plan.tables}
    users, products = by_table["public.users"], by_table["public.products"]
    assert (users.rows_at_backup, users.rows_now, users.inserted_after, users.updated_after) == (200, 203, 3, 0)
    assert (products.inserted_after, products.updated_after) == (0, 2)
    assert by_table["public.order_items"].updated_after is None  # no updated_at column
    assert plan.rows_written_after == 5
    assert plan.wal_bytes is not None and plan.wal_bytes > 0
    assert plan.migration is None


def test_restore_advises_migrate_rollback_during_a_migration(shop_db: str, backup_dir: Path) -> None:
    entry = create_backup(shop_db, backup_dir)
    from villager_shop.migration import state
    from villager_shop.migration.sqlfiles import section

    with psycopg.connect(shop_db, autocommit=True) as conn:
        conn.execute(section("state.sql", "state").encode())
        state.set_phase(conn, "backfilling")
    plan = plan_restore(shop_db, backup_dir, entry.id)
    assert plan.migration is not None and plan.migration.in_progress
    assert any(t.table == "villager_migration.state" and t.rows_at_backup is None for t in plan.tables)
    res = run_cli("restore", entry.id, database_url=shop_db, input_text="", VILLAGER_BACKUP_DIR=str(backup_dir))
    assert res.returncode == 4
    assert "use migrate rollback instead" in res.stdout and "backfilling" in res.stdout

    with psycopg.connect(shop_db, autocommit=True) as conn:
        state.set_phase(conn, "completed")
    plan = plan_restore(shop_db, backup_dir, entry.id)
    assert plan.migration is not None and not plan.migration.in_progress


def test_backup_counts_match_the_dump_under_concurrent_writes(shop_db: str, backup_dir: Path) -> None:
    """Counts and LSN come from the dump's own snapshot: a writer running during the dump cannot make
    the manifest disagree with the file (verify restores it and compares)."""
    import threading

    from villager_shop.safety.backup import verify_backup

    stop = threading.Event()
    written = [0]

    def writer() -> None:
        with psycopg.connect(shop_db, autocommit=True) as conn:
            while not stop.is_set():
                conn.execute("INSERT INTO users (name) VALUES ('concurrent')")
                written[0] += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        entry = create_backup(shop_db, backup_dir)
        entry2 = create_backup(shop_db, backup_dir)
    finally:
        stop.set()
        thread.join()
    assert written[0] > 0
    assert entry2.row_counts["public.users"] >= entry.row_counts["public.users"] >= 200
    for e in (entry, entry2):
        report = verify_backup(shop_db, backup_dir, e.id)
        assert report.rows == sum(e.row_counts.values())


def test_identical_backups_in_the_same_second_get_distinct_ids(shop_db: str, backup_dir: Path) -> None:
    ids = {create_backup(shop_db, backup_dir).id for _ in range(3)}
    assert len(ids) == 3
