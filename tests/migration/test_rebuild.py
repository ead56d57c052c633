"""order_items is backfilled by copy and swap (steps/rebuild.py): writes made between the copy and
the swap reach the swapped-in table, the table keeps everything it carried, and a table the rebuild
cannot carry faithfully is backfilled in place instead."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests.helpers import run_cli, settings_for
from tests.migration.messy import load_messy
from tests.migration.test_lifecycle import LEGACY_PROJECTION, legacy_checksums, schema_fingerprint
from tests.plans import quarantined_keys
from villager_shop.migration import state
from villager_shop.migration.ddl import LockRetriesExhausted
from villager_shop.migration.plan import build_plan
from villager_shop.migration.runner import make_context, run
from villager_shop.migration.steps import rebuild
from villager_shop.migration.steps.rebuild import RETIRED, RebuildTable, V
from villager_shop.migration.walker import run_backfill

ORDER = "30000000-0000-0000-0000-000000000001"
RADIO = "20000000-0000-0000-0000-000000000001"
LAMP = "20000000-0000-0000-0000-000000000003"
ITEM_1 = "40000000-0000-0000-0000-000000000001"
ITEM_2 = "40000000-0000-0000-0000-000000000002"


def _until_rebuild(url: str) -> tuple[Any, RebuildTable]:
    """Run the plan up to the order_items rebuild; return a context and that step."""
    plan = build_plan()
    at = next(i for i, s in enumerate(plan) if isinstance(s, RebuildTable))
    ctx = make_context(url, settings_for(url))
    run(ctx, steps=plan[:at])
    step = plan[at]
    assert isinstance(step, RebuildTable)
    return ctx, step


@pytest.fixture
def copied(legacy_db: str) -> Iterator[tuple[Any, RebuildTable]]:
    """The messy data set as a run killed right after its order_items copy leaves it: the plan done
    up to the rebuild, the change log installed, a complete copy. Yields a context and the step."""
    load_messy(legacy_db)
    ctx, step = _until_rebuild(legacy_db)
    try:
        ctx.run(step._start_ddl(), step.name)
        run_backfill(ctx, step.name, "order_items", [step.copy_action(step._live_columns(ctx))], [], None,
                     locking=False)
        yield ctx, step
    finally:
        ctx.conn.close()


def _items(url: str, where: str = "true") -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as c:
        return c.execute(f"SELECT {LEGACY_PROJECTION['order_items']}, variant_id FROM order_items WHERE {where}"
                         " ORDER BY id").fetchall()


def test_writes_between_copy_and_swap_reach_the_swapped_table(legacy_db: str, copied: tuple[Any, RebuildTable]) -> None:
    ctx, step = copied
    with psycopg.connect(legacy_db, autocommit=True) as c:
        in_copy = c.execute(f"SELECT count(*) FROM {V}.order_items").fetchone()[0]  # type: ignore[index]
        assert in_copy == c.execute("SELECT count(*) FROM order_items").fetchone()[0]  # type: ignore[index]
        # The old application writes meanwhile: a new item, a changed quantity, a moved item, a delete.
        c.execute("INSERT INTO order_items (id, order_id, product_id, quantity, unit_price) VALUES"
                  " ('40000000-0000-0000-0000-0000000000ff', %s, %s, 3, 250.00)", (ORDER, LAMP))
        c.execute("UPDATE order_items SET quantity = 7 WHERE id = %s", (ITEM_1,))
        c.execute("UPDATE order_items SET product_id = %s WHERE id = %s", (LAMP, ITEM_2))
        c.execute("DELETE FROM order_items WHERE quantity <= 0")
        # The copy does not have these yet.
        assert c.execute(f"SELECT quantity FROM {V}.order_items WHERE id = %s", (ITEM_1,)).fetchone() != (7,)
    expected = legacy_checksums(legacy_db)["order_items"]
    # The resumed step finds its copy done, builds the indexes, replays the log and swaps.
    out = step.apply(ctx)
    assert out["method"] == "rebuild" and out["replayed"] + out["logged_rows_set_aside"] >= 4, out
    run(ctx)
    assert legacy_checksums(legacy_db)["order_items"] == expected
    with psycopg.connect(legacy_db) as c:
        lamp_variant = c.execute("SELECT id FROM product_variants WHERE product_id = %s AND is_default",
                                 (LAMP,)).fetchone()[0]  # type: ignore[index]
        assert c.execute("SELECT quantity, variant_id FROM order_items WHERE id = %s", (ITEM_2,)).fetchone()[1] \
            == lamp_variant
        assert c.execute("SELECT variant_id FROM order_items WHERE id = '40000000-0000-0000-0000-0000000000ff'"
                         ).fetchone() == (lamp_variant,)
        assert c.execute("SELECT to_regclass('villager_migration.order_items')").fetchone() == (None,)
        assert c.execute("SELECT count(*) FROM villager_migration.rebuild_log").fetchone() == (0,)
        # Nothing logs changes any more, and the table kept its triggers, keys and checks.
        triggers = {r[0] for r in c.execute("SELECT tgname FROM pg_trigger WHERE tgrelid = 'order_items'::regclass"
                                            " AND NOT tgisinternal")}
        assert triggers == {"villager_sync_order_item", "villager_forget_deleted", "villager_forget_old_key",
                            "villager_forget_truncated"}
        constraints = dict(c.execute("SELECT conname, convalidated FROM pg_constraint"
                                     " WHERE conrelid = 'order_items'::regclass AND contype IN ('p', 'f', 'c')"))
        assert constraints == {"order_items_pkey": True, "order_items_order_id_fkey": True,
                               "order_items_product_id_fkey": True, "fk_order_items_variant": True,
                               "chk_order_items_quantity_positive": True}
    res = run_cli("migrate", "verify", database_url=legacy_db)
    assert res.returncode == 0, res.stdout[-3000:]
    res = run_cli("migrate", "status", "--json", database_url=legacy_db)
    step = next(s for s in json.loads(res.stdout)["steps"] if s["name"] == "backfill_order_items")
    assert (step["method"], step["stage"]) == ("rebuild", "done")


def test_quarantine_decided_by_a_racing_copy_batch_is_decided_again(legacy_db: str, copied: tuple[Any, RebuildTable]) -> None:
    """The copy reads without locks: a batch that read an item before the application changed it can
    write its (then stale) quarantine entry after the application's trigger settled it. The change is
    logged, and the replay decides the item's quarantine again from the row as it is."""
    ctx, step = copied
    free_item, refund_item = "40000000-0000-0000-0000-000000000004", "40000000-0000-0000-0000-000000000005"
    late = ("INSERT INTO villager_migration.quarantine (table_name, row_id, reason) VALUES ('order_items', %s, %s)"
            " ON CONFLICT (table_name, row_id) DO UPDATE SET reason = EXCLUDED.reason")
    with psycopg.connect(legacy_db, autocommit=True) as c:
        # The free sample gets a price: its trigger links the waiting item and clears its entry...
        c.execute("UPDATE products SET price = 10 WHERE id = '20000000-0000-0000-0000-000000000008'")
        assert c.execute("SELECT count(*) FROM villager_migration.quarantine WHERE row_id = %s",
                         (free_item,)).fetchone() == (0,)
        # ... then a batch that read the item before writes what it had decided.
        c.execute(late, (free_item, "product_without_variant"))
        # The same for an item the application deleted.
        c.execute("DELETE FROM order_items WHERE id = %s", (refund_item,))
        c.execute(late, (refund_item, "non_positive_quantity"))
    step.apply(ctx)
    run(ctx)
    with psycopg.connect(legacy_db) as c:
        assert c.execute("SELECT count(*) FROM villager_migration.quarantine WHERE row_id IN (%s, %s)",
                         (free_item, refund_item)).fetchone() == (0,)
        assert c.execute("SELECT variant_id IS NOT NULL FROM order_items WHERE id = %s", (free_item,)).fetchone() \
            == (True,)
    res = run_cli("migrate", "verify", database_url=legacy_db)
    assert res.returncode == 0, res.stdout[-3000:]


def test_items_whose_default_variant_was_guessed_wrong_are_copied_again(legacy_db: str) -> None:
    """The copy takes an item's product id as its variant id (a default variant takes its product's
    id) without a lookup. Where that is wrong - a default variant with another id, a product with
    no variant - the recheck after the copy finds the item, and it is copied again with the
    lookup; an item that names its variant keeps it."""
    load_messy(legacy_db)
    ctx, step = _until_rebuild(legacy_db)
    free_item, free_product = "40000000-0000-0000-0000-000000000004", "20000000-0000-0000-0000-000000000008"
    try:
        with psycopg.connect(legacy_db, autocommit=True) as c:
            # The radio's default variant has another id (the new application made it, say).
            c.execute("UPDATE product_variants SET id = '50000000-0000-0000-0000-0000000000aa'"
                      " WHERE product_id = %s AND is_default", (RADIO,))
            # The lamp's item already names a variant of the lamp that is not the default.
            c.execute("INSERT INTO product_variants (id, product_id, sku, name, price, stock)"
                      " VALUES ('50000000-0000-0000-0000-0000000000bb', %s, 'lamp-blue', 'Blue', 260, 1)", (LAMP,))
            c.execute("INSERT INTO order_items (id, order_id, product_id, variant_id, quantity, unit_price) VALUES"
                      " ('40000000-0000-0000-0000-0000000000fe', %s, %s, '50000000-0000-0000-0000-0000000000bb',"
                      " 1, 260)", (ORDER, LAMP))
        ctx.run(step._start_ddl(), step.name)
        run_backfill(ctx, step.name, "order_items", [step.copy_action(step._live_columns(ctx))], [], None,
                     locking=False)
        with psycopg.connect(legacy_db, autocommit=True) as c:
            guessed = dict(c.execute(f"SELECT id::text, variant_id::text FROM {V}.order_items"))
            assert guessed[ITEM_1] == RADIO and guessed[free_item] == free_product, guessed  # guessed, wrong
        out = step.apply(ctx)
        # The radio's item, and the items of the free sample and of the refund (no variant).
        assert out["recopied"] == 3, out
        run(ctx)
    finally:
        ctx.conn.close()
    with psycopg.connect(legacy_db) as c:
        linked = dict(c.execute("SELECT id::text, variant_id::text FROM order_items"))
        assert linked[ITEM_1] == "50000000-0000-0000-0000-0000000000aa"
        assert linked["40000000-0000-0000-0000-0000000000fe"] == "50000000-0000-0000-0000-0000000000bb"
        assert linked[free_item] is None
        assert c.execute("SELECT reason FROM villager_migration.quarantine WHERE row_id = %s",
                         (free_item,)).fetchone() == ("product_without_variant",)
        # Every other item has its product's default variant.
        assert c.execute("SELECT count(*) FROM order_items oi JOIN product_variants v ON v.product_id = oi.product_id"
                         " AND v.is_default WHERE oi.variant_id IS DISTINCT FROM v.id"
                         " AND oi.id <> '40000000-0000-0000-0000-0000000000fe'").fetchone() == (0,)
    res = run_cli("migrate", "verify", database_url=legacy_db)
    assert res.returncode == 0, res.stdout[-3000:]


def test_a_recopy_cut_short_is_taken_again_by_the_resumed_step(legacy_db: str, copied: tuple[Any, RebuildTable],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A run killed while copying again what the copy guessed wrong leaves part of it done: the
    resumed step checks the copy again and copies again only what is still wrong."""
    ctx, step = copied
    monkeypatch.setattr(rebuild, "RECOPY_ROWS", 1)
    ctx.run(step._recheck_ddl(), step.name)
    with psycopg.connect(legacy_db, autocommit=True) as c:
        assert c.execute(f"SELECT count(*) FROM {V}.rebuild_recheck").fetchone() == (2,)  # the free sample, the refund
        c.execute(f"SELECT {V}.rebuild_recopy('order_items', %s, 0, 1)", (step.replay_sql(step._live_columns(ctx)),))
    # Killed here: the resumed step finds one item still guessed wrong.
    out = step.apply(ctx)
    assert out["recopied"] == 1, out
    run(ctx)
    with psycopg.connect(legacy_db) as c:
        assert c.execute(f"SELECT to_regclass('{V}.rebuild_recheck')").fetchone() == (None,)
        assert c.execute("SELECT count(*) FROM order_items WHERE variant_id IS NULL").fetchone() == (2,)
        assert c.execute("SELECT count(*) FROM villager_migration.quarantine WHERE table_name = 'order_items'"
                         " AND reason = 'product_without_variant'").fetchone() == (2,)
    res = run_cli("migrate", "verify", database_url=legacy_db)
    assert res.returncode == 0, res.stdout[-3000:]


def test_a_run_resumed_after_the_copys_indexes_leaves_what_was_guessed_wrong_to_the_catch_up(
        legacy_db: str, copied: tuple[Any, RebuildTable]) -> None:
    """Once the copy has its unique indexes, the rows guessed wrong are logged, not copied again on
    their own: the catch-up copies them in its one snapshot, with every other logged change."""
    ctx, step = copied
    step._build_indexes(ctx)  # killed right after
    out = step.apply(ctx)
    assert out["recopied"] == 2 and out["replayed"] >= 2, out
    run(ctx)
    with psycopg.connect(legacy_db) as c:
        assert c.execute("SELECT count(*) FROM order_items WHERE variant_id IS NULL").fetchone() == (2,)
    res = run_cli("migrate", "verify", database_url=legacy_db)
    assert res.returncode == 0, res.stdout[-3000:]


def test_a_temp_file_limit_that_refuses_the_checks_hash_join_falls_back_to_lookups(make_legacy_db: Any) -> None:
    """A managed database may cap temporary files: the check's hash join then cannot spill. The step
    checks the guesses by lookup instead (no temporary file) and goes on."""
    url = make_legacy_db(0.05)
    ctx, step = _until_rebuild(url)
    try:
        ctx.run(step._start_ddl(), step.name)
        run_backfill(ctx, step.name, "order_items", [step.copy_action(step._live_columns(ctx))], [], None,
                     locking=False)
        with psycopg.connect(url, autocommit=True) as c:
            db = c.execute("SELECT current_database()").fetchone()[0]  # type: ignore[index]
            wrong = c.execute(f"SELECT count(*) FROM {V}.order_items c WHERE NOT EXISTS (SELECT 1 FROM product_variants v"
                              " WHERE v.id = c.variant_id AND v.is_default)").fetchone()[0]  # type: ignore[index]
            assert wrong > 0  # items of products without a variant
            c.execute(f'ALTER DATABASE "{db}" SET work_mem = \'64kB\'')
            c.execute(f'ALTER DATABASE "{db}" SET temp_file_limit = 0')
    finally:
        ctx.conn.close()
    capped = make_context(url, settings_for(url))
    try:
        with pytest.raises(psycopg.errors.ConfigurationLimitExceeded):  # the hash join spills
            capped.run(step._recheck_ddl())
        out = step.apply(capped)
        assert out["recopied"] == wrong, out
    finally:
        capped.conn.close()
        with psycopg.connect(url, autocommit=True) as c:
            c.execute(f'ALTER DATABASE "{db}" RESET work_mem')
            c.execute(f'ALTER DATABASE "{db}" RESET temp_file_limit')
    ctx = make_context(url, settings_for(url))
    try:
        run(ctx)
    finally:
        ctx.conn.close()
    res = run_cli("migrate", "verify", database_url=url)
    assert res.returncode == 0, res.stdout[-3000:]


def test_a_catch_up_round_that_meets_a_newer_quarantine_entry_is_taken_again(
        legacy_db: str, copied: tuple[Any, RebuildTable]) -> None:
    """A catch-up round reads in one REPEATABLE READ snapshot; the application's trigger can change a
    replayed item's quarantine entry after it. The round's write to that entry then fails with a
    serialization error: the round is taken again, and the entry ends as the item says."""
    ctx, step = copied
    refund_item = "40000000-0000-0000-0000-000000000005"  # of a product without a variant: quarantined
    columns = step._live_columns(ctx)
    step._catch_up(ctx, columns)
    with psycopg.connect(legacy_db, autocommit=True) as c:
        c.execute("UPDATE order_items SET unit_price = -6 WHERE id = %s", (refund_item,))  # logged
    other = psycopg.connect(legacy_db)
    try:
        other.execute("UPDATE villager_migration.quarantine SET detail = '{}' WHERE row_id = %s", (refund_item,))
        errors: list[BaseException] = []

        def catch_up() -> None:
            try:
                step._catch_up(ctx, columns)
            except BaseException as exc:  # reported by the test
                errors.append(exc)

        worker = threading.Thread(target=catch_up)
        worker.start()
        with psycopg.connect(legacy_db, autocommit=True) as watch:
            for _ in range(500):  # the round waits for the entry's row lock
                if watch.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                                 " AND query LIKE '%%rebuild_replay%%'").fetchone() == (1,):
                    break
                time.sleep(0.01)
            else:
                pytest.fail("the catch-up round never waited for the quarantine entry")
        other.commit()  # the round's snapshot is older than this entry: a serialization failure
        worker.join(30)
        assert not worker.is_alive() and errors == [], errors
    finally:
        other.close()
    with psycopg.connect(legacy_db) as c:
        assert c.execute("SELECT reason, detail ->> 'unit_price' FROM villager_migration.quarantine WHERE row_id = %s",
                         (refund_item,)).fetchone() == ("product_without_variant", "-6.00")
        assert c.execute(f"SELECT unit_price FROM {V}.order_items WHERE id = %s", (refund_item,)).fetchone()[0] == -6  # type: ignore[index]
        assert c.execute(f"SELECT count(*) FROM {V}.rebuild_log").fetchone() == (0,)


def test_the_swap_waits_for_a_transaction_holding_an_older_snapshot(legacy_db: str) -> None:
    """A REPEATABLE READ transaction idle between statements would read the swapped-in table with
    its old snapshot: the swap treats it like a lock holder (retries, then gives up with the usual
    message) and goes through once it ends."""
    load_messy(legacy_db)
    ctx, step = _until_rebuild(legacy_db)
    ctx.policy.max_attempts, ctx.policy.max_delay_s = 3, 0.05
    reader = psycopg.connect(legacy_db)
    try:
        reader.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        before = reader.execute("SELECT count(*) FROM users").fetchone()  # the snapshot is taken
        with pytest.raises(LockRetriesExhausted):
            step.apply(ctx)
        assert not state.get(ctx.conn, "rebuild:order_items").get("swapped")
        with psycopg.connect(legacy_db, autocommit=True) as c:
            assert c.execute("SELECT to_regclass('villager_migration.order_items') IS NOT NULL").fetchone() == (True,)
        assert reader.execute("SELECT count(*) FROM users").fetchone() == before
        reader.commit()
        out = step.apply(ctx)
        assert out["method"] == "rebuild" and state.get(ctx.conn, "rebuild:order_items")["swapped"]
    finally:
        reader.close()
        ctx.conn.close()


def test_the_swap_moves_the_old_table_aside_and_the_step_drops_it_after(legacy_db: str,
                                                                        copied: tuple[Any, RebuildTable]) -> None:
    """A DROP inside the swap would remove the old table's files and buffers at commit, with the
    ACCESS EXCLUSIVE locks still held: the swap moves it aside without its foreign keys, and the step
    drops it once the swap has committed - also when the run died in between."""
    ctx, step = copied
    columns = step._live_columns(ctx)
    step._build_indexes(ctx)
    step._catch_up(ctx, columns)
    ctx.run(step._swap_ddl(columns, ["orders", "products"]), step.name)  # a run killed right after its swap
    with psycopg.connect(legacy_db, autocommit=True) as c:
        live = c.execute("SELECT count(*) FROM order_items").fetchone()
        assert c.execute(f"SELECT count(*) FROM {RETIRED}.order_items").fetchone() == live
        assert c.execute(f"SELECT count(*) FROM pg_constraint WHERE conrelid = '{RETIRED}.order_items'::regclass"
                         " AND contype = 'f'").fetchone() == (0,)
        # Its rows no longer hold anything: an order whose items are gone from the live table goes.
        c.execute("DELETE FROM order_items WHERE order_id = %s", (ORDER,))
        assert c.execute("DELETE FROM orders WHERE id = %s", (ORDER,)).rowcount == 1
    out = step.apply(ctx)
    assert out["drop_old_s"] >= 0 and step.check(ctx), out
    with psycopg.connect(legacy_db) as c:
        assert c.execute(f"SELECT to_regnamespace('{RETIRED}')").fetchone() == (None,)
        assert c.execute("SELECT count(*) FROM pg_constraint WHERE conrelid = 'order_items'::regclass"
                         " AND contype = 'f' AND convalidated").fetchone() == (2,)


def test_duplicate_rows_in_the_copy_are_dropped_before_its_unique_index(legacy_db: str,
                                                                       copied: tuple[Any, RebuildTable]) -> None:
    """Identical copies of one row that the change log does not name (a walk restarted without its
    rewrite hook) make the primary key build fail once: one copy is kept and the indexes are built."""
    ctx, step = copied
    with psycopg.connect(legacy_db, autocommit=True) as c:
        c.execute(f"INSERT INTO {V}.order_items SELECT * FROM {V}.order_items WHERE id = %s", (ITEM_1,))
    out = step.apply(ctx)
    assert out["logged_rows_set_aside"] == 1, out
    with psycopg.connect(legacy_db) as c:
        assert c.execute("SELECT count(*) FROM order_items WHERE id = %s", (ITEM_1,)).fetchone() == (1,)
        assert c.execute("SELECT count(*) FROM pg_index WHERE indrelid = 'order_items'::regclass").fetchone() == (4,)


def test_a_truncate_during_the_copy_empties_the_swapped_table(legacy_db: str, copied: tuple[Any, RebuildTable]) -> None:
    ctx, step = copied
    with psycopg.connect(legacy_db, autocommit=True) as c:
        c.execute("TRUNCATE order_items")
        c.execute("INSERT INTO order_items (order_id, product_id, quantity, unit_price) VALUES (%s, %s, 1, 499)",
                  (ORDER, RADIO))
    step.apply(ctx)
    rows = _items(legacy_db)
    assert len(rows) == 1 and str(rows[0][2]) == RADIO and rows[0][-1] is not None


def test_owner_grants_and_foreign_triggers_are_carried_across_the_swap(legacy_db: str) -> None:
    load_messy(legacy_db)
    with psycopg.connect(legacy_db, autocommit=True) as c:
        c.execute("DO $$ BEGIN CREATE ROLE villager_reader; EXCEPTION WHEN duplicate_object THEN NULL; END $$")
        c.execute("GRANT SELECT ON order_items TO villager_reader")
        c.execute("ALTER TABLE order_items SET (fillfactor = 90)")
        c.execute("COMMENT ON TABLE order_items IS 'what was ordered'")
        c.execute("CREATE FUNCTION public.audit_item() RETURNS trigger LANGUAGE plpgsql AS"
                  " $$ BEGIN RETURN NEW; END $$")
        c.execute("CREATE TRIGGER audit_item BEFORE UPDATE ON order_items FOR EACH ROW EXECUTE FUNCTION audit_item()")
        c.execute("ALTER TABLE order_items DISABLE TRIGGER audit_item")
    ctx = make_context(legacy_db, settings_for(legacy_db))
    try:
        run(ctx)
        assert state.get(ctx.conn, "rebuild:order_items")["method"] == "rebuild"
    finally:
        ctx.conn.close()
    with psycopg.connect(legacy_db) as c:
        assert c.execute("SELECT has_table_privilege('villager_reader', 'order_items', 'SELECT'),"
                         " has_table_privilege('villager_reader', 'order_items', 'INSERT')").fetchone() == (True, False)
        assert c.execute("SELECT reloptions, obj_description(oid, 'pg_class') FROM pg_class"
                         " WHERE oid = 'order_items'::regclass").fetchone() == (["fillfactor=90"], "what was ordered")
        assert c.execute("SELECT tgenabled FROM pg_trigger WHERE tgname = 'audit_item'").fetchone() == ("D",)
        c.execute("DROP TRIGGER audit_item ON order_items")
        c.execute("DROP FUNCTION public.audit_item()")
        c.execute("REVOKE ALL ON order_items FROM villager_reader")
        c.commit()
    assert run_cli("migrate", "verify", database_url=legacy_db).returncode == 0


@pytest.mark.parametrize("blocker", [
    "CREATE VIEW big_items AS SELECT * FROM order_items WHERE quantity > 1",
    "CREATE TABLE refunds (id uuid PRIMARY KEY, item_id uuid REFERENCES order_items (id))",
    "CREATE PUBLICATION villager_test_items FOR TABLE order_items",
    "CREATE PUBLICATION villager_test_schema FOR TABLES IN SCHEMA public",  # PostgreSQL 15+
])
def test_a_table_the_rebuild_cannot_carry_is_backfilled_in_place(legacy_db: str, blocker: str,
                                                                 server_version: int) -> None:
    if "IN SCHEMA" in blocker and server_version < 150000:
        pytest.skip("publications of a schema need PostgreSQL 15")
    load_messy(legacy_db)
    with psycopg.connect(legacy_db, autocommit=True) as c:
        c.execute(blocker)
        oid = c.execute("SELECT 'order_items'::regclass::oid").fetchone()
    res = run_cli("migrate", "run", database_url=legacy_db)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "backfilled in place" in res.stderr
    with psycopg.connect(legacy_db) as c:
        assert c.execute("SELECT 'order_items'::regclass::oid").fetchone() == oid  # the same table
        unlinked = {r[0] for r in c.execute("SELECT id::text FROM order_items WHERE variant_id IS NULL")}
        assert unlinked - quarantined_keys(c, "order_items") == set()
    assert run_cli("migrate", "verify", database_url=legacy_db).returncode == 0


def test_rollback_before_the_swap_leaves_no_trace(legacy_db: str) -> None:
    load_messy(legacy_db)
    schema_before, data_before = schema_fingerprint(legacy_db), legacy_checksums(legacy_db)
    ctx, step = _until_rebuild(legacy_db)
    try:
        ctx.run(step._start_ddl(), step.name)
    finally:
        ctx.conn.close()
    with psycopg.connect(legacy_db, autocommit=True) as c:
        c.execute("UPDATE order_items SET quantity = quantity + 1 WHERE id = %s", (ITEM_1,))
    data_before["order_items"] = legacy_checksums(legacy_db)["order_items"]
    res = run_cli("migrate", "rollback", "--yes", database_url=legacy_db)
    assert res.returncode == 0, res.stderr
    assert schema_fingerprint(legacy_db) == schema_before
    assert legacy_checksums(legacy_db) == data_before
    with psycopg.connect(legacy_db) as c:
        assert c.execute("SELECT to_regclass('villager_migration.order_items'),"
                         " to_regclass('villager_migration.rebuild_log')").fetchone() == (None, None)
    # A new run after the rollback rebuilds again from scratch.
    assert run_cli("migrate", "run", database_url=legacy_db).returncode == 0
    assert run_cli("migrate", "verify", database_url=legacy_db).returncode == 0
