"""Baselines: a new index between two captures shows up with its scans, and the table's sequential scans
turned into index scans."""

from __future__ import annotations

import json
import time

import psycopg

from tests.helpers import run_cli

QUERY = "SELECT count(*) FROM order_items WHERE product_id = (SELECT id FROM products ORDER BY id LIMIT 1)"


def _wait_for_stats(url: str, query: str, minimum: int, timeout: float = 15) -> None:
    """Statistics reach the shared counters asynchronously (at backend exit, or up to ~1 s later)."""
    deadline = time.monotonic() + timeout
    while True:
        with psycopg.connect(url) as conn:
            value = conn.execute(query).fetchone()[0]  # type: ignore[index]
        if (value or 0) >= minimum or time.monotonic() > deadline:
            assert (value or 0) >= minimum, f"{query} = {value}, expected >= {minimum}"
            return
        time.sleep(0.1)


def test_baseline_diff_shows_new_index_and_seq_to_index(shop_db: str) -> None:
    with psycopg.connect(shop_db) as conn:
        for _ in range(5):
            conn.execute(QUERY)
    _wait_for_stats(shop_db, "SELECT seq_scan FROM pg_stat_user_tables WHERE relname = 'order_items'", 5)
    res = run_cli("baseline", "capture", "before", database_url=shop_db)
    assert res.returncode == 0, res.stderr

    with psycopg.connect(shop_db, autocommit=True) as conn:
        conn.execute("CREATE INDEX order_items_product_id_idx ON order_items (product_id)")
        conn.execute("SET enable_seqscan = off")
        for _ in range(5):
            conn.execute(QUERY)
    _wait_for_stats(shop_db, "SELECT idx_scan FROM pg_stat_user_indexes"
                             " WHERE indexrelname = 'order_items_product_id_idx'", 5)
    res = run_cli("baseline", "capture", "after", database_url=shop_db)
    assert res.returncode == 0, res.stderr

    listed = json.loads(run_cli("baseline", "list", "--json", database_url=shop_db).stdout)
    assert [s["name"] for s in listed] == ["before", "after"]

    res = run_cli("baseline", "diff", "before", "after", "--json", database_url=shop_db)
    assert res.returncode == 0, res.stderr
    diff = json.loads(res.stdout)
    new = {i["index"]: i for i in diff["indexes"] if i["status"] == "new"}
    assert list(new) == ["public.order_items_product_id_idx"]
    assert new["public.order_items_product_id_idx"]["idx_scan"] >= 5
    assert new["public.order_items_product_id_idx"]["bytes_after"] > 0
    assert "public.order_items" in diff["seq_to_index"]
    items = next(t for t in diff["tables"] if t["table"] == "public.order_items")
    assert items["idx_scan"] >= 5 and items["index_bytes_after"] > items["index_bytes_before"]

    with psycopg.connect(shop_db) as conn:
        preload = str(conn.execute("SHOW shared_preload_libraries").fetchone()[0])  # type: ignore[index]
    if "pg_stat_statements" in preload:
        assert diff["statements_after"], "pg_stat_statements is loaded: statements must be captured"
        assert all("mean_exec_time" in s for s in diff["statements_after"])
    else:
        assert diff["statements_after"] is None
        assert any("shared_preload_libraries" in n for n in diff["notes"])

    human = run_cli("baseline", "diff", "before", "after", database_url=shop_db)
    assert human.returncode == 0 and "order_items_product_id_idx" in human.stdout
    assert "turned into index scans: public.order_items" in human.stdout


def test_baseline_errors_are_one_line(shop_db: str) -> None:
    res = run_cli("baseline", "diff", "nope", "nada", database_url=shop_db)
    assert res.returncode != 0 and res.stderr.strip().startswith("error: unknown baseline")
    assert "Traceback" not in res.stderr
    assert run_cli("baseline", "capture", "x", database_url=shop_db).returncode == 0
    res = run_cli("baseline", "capture", "x", database_url=shop_db)
    assert res.returncode == 4 and "--replace" in res.stderr
