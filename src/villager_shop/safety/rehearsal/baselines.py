"""Performance baselines of staging before and after the migration, and what their difference says
about the new indexes and the tables' scans."""

from __future__ import annotations

import time
from typing import Any

from villager_shop.core.db import connection
from villager_shop.safety import baseline

BEFORE, AFTER = "rehearsal-before", "rehearsal-after"


def capture_before(url: str) -> None:
    baseline.capture(url, BEFORE, replace=True)


def capture_after(url: str) -> dict[str, Any]:
    """Capture the after baseline; the highlights of its difference with the before one."""
    _flush_stats(url)
    baseline.capture(url, AFTER, replace=True)
    return _highlights(baseline.diff(baseline.load(url, BEFORE), baseline.load(url, AFTER)))


def _flush_stats(url: str) -> None:
    """Make this session's and the workload's statistics visible to the capture that follows."""
    with connection(url, autocommit=True) as conn:
        if int(conn.info.server_version) >= 150000:
            conn.execute("SELECT pg_stat_force_next_flush()")
            return
    time.sleep(0.6)  # PostgreSQL 13/14: the statistics collector reports every 500 ms


def _highlights(d: baseline.BaselineDiff) -> dict[str, Any]:
    used_new = [{"index": i.index, "table": i.table, "idx_scan": i.idx_scan, "bytes": i.bytes_after}
                for i in d.indexes if i.status == "new" and i.idx_scan > 0 and i.index.startswith("public.")]
    unused_new = [i.index for i in d.indexes if i.status == "new" and i.idx_scan == 0 and i.index.startswith("public.")]
    tables = [{"table": t.table, "seq_scan": t.seq_scan, "idx_scan": t.idx_scan, "seq_tup_read": t.seq_tup_read,
               "seq_scan_before": t.seq_scan_before, "idx_scan_before": t.idx_scan_before,
               "bytes_before": t.table_bytes_before + t.index_bytes_before,
               "bytes_after": t.table_bytes_after + t.index_bytes_after, "new": t.new}
              for t in d.tables if t.table.startswith("public.")]
    return {"before": d.before, "after": d.after, "seq_to_index": d.seq_to_index, "new_indexes_used": used_new,
            "new_indexes_unused": unused_new, "tables": tables, "notes": d.notes}
