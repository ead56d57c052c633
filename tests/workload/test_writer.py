"""The live writer the migration benchmark and tests run against the legacy schema."""

from __future__ import annotations

import time
from typing import Any

import psycopg

from villager_shop.workload.writer import LiveWriter, check_expected


def test_an_open_loop_writer_keeps_its_rate_and_deletes_only_unordered_products(make_legacy_db: Any) -> None:
    url = make_legacy_db(0.02)
    # Closed loop, the same threads write as fast as they can: hundreds of writes a second here.
    with LiveWriter(url, legacy_threads=2, new_threads=0, pause_s=0.0) as closed:
        time.sleep(2.0)
    # Checked before the second writer runs: it owns the same rows and overwrites them.
    assert check_expected(url, closed) == []
    with LiveWriter(url, legacy_threads=2, new_threads=0, rate=20.0, seed=11) as paced:
        time.sleep(2.0)
    # About 40 writes are due in 2 s: never more (the schedule), and at least some on a busy machine.
    assert 10 <= paced.stats.ops <= 45, paced.stats.ops
    assert closed.stats.ops > 3 * paced.stats.ops, (closed.stats.ops, paced.stats.ops)
    for stats in (closed.stats, paced.stats):
        # A plain DELETE of a product with order items would fail on the legacy foreign key.
        assert stats.errors == 0, stats.error_samples
        assert len(stats.samples) == stats.ops and {op for _t, _ms, op in stats.samples} <= set(stats.by_kind)
    assert check_expected(url, paced) == []
    deleted = [rid for (table, rid), want in closed.expected.items() if table == "products" and want.get("deleted")]
    assert deleted, closed.stats.by_kind
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM products WHERE id = ANY(%s::uuid[])", (deleted,)).fetchone() == (0,)
