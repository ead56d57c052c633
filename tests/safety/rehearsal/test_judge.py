"""The verdict: every reason for a NO-GO, and none for a GO."""

from __future__ import annotations

from typing import Any

from villager_shop.safety.rehearsal.judge import decide
from villager_shop.safety.rehearsal.options import RehearsalOptions
from villager_shop.safety.report.model import RehearsalReport, StepResult


def _report(**overrides: Any) -> RehearsalReport:
    fields: dict[str, Any] = dict(
        verdict="GO", reasons=[], started_at="", finished_at="", seconds=1.0, live_database="shop",
        staging_database="shop_staging_20260101_120000", staging_kept=False, server="", backup={}, thresholds={},
        phases=[], steps=[], run_error=None, backfill=[], locks={},
        writer={"writer_ops": 10, "writer_errors": 0, "writer_max_ms": 12.0, "error_samples": [], "slowest": []},
        latency_series=[], lost_writes={"count": 0, "examples": [], "checked_rows": 10},
        verify={"ok": True, "checks": []}, quarantine={"tables": []}, squawk={"available": True, "ok": True},
        baseline={}, query_plans=[], projection={})
    fields.update(overrides)
    return RehearsalReport(**fields)


def test_decide_lists_every_reason() -> None:
    opts = RehearsalOptions(max_latency_ms=100, max_quarantine_pct=5)
    assert decide(_report(), opts) == []
    failed = StepResult("backfill_users", "", "backfill", "failed", 0.1, 0.0, 0.1, 1, 0, "boom")
    bad = _report(
        steps=[failed], run_error="boom",
        verify={"ok": False, "checks": [{"name": "data_equivalence", "ok": False, "detail": "3 rows"}]},
        lost_writes={"count": 2, "examples": ["users 1: missing"], "checked_rows": 10},
        writer={"writer_errors": 1, "error_samples": ["x: LockNotAvailable"], "writer_max_ms": 100.0,
                "slowest": [{"t": 3.0, "ms": 100.0, "op": "legacy_update_house", "during": ["backfill_users"]}]},
        squawk={"available": True, "ok": False, "output": ["plan.sql:1:1: warning: ..."]},
        quarantine={"tables": [{"table": "products", "rows": 100, "quarantined": 6, "pct": 6.0,
                                "reasons": {"non_positive_price": 6}, "over_threshold": True}]})
    reasons = decide(bad, opts)
    assert len(reasons) == 7, reasons
    expected = ("step backfill_users failed: boom", "verify failed", "2 writes of the live writer",
                "1 failed write", "writer max latency 100.0 ms >= 100 ms", "squawk", "6 of 100 rows of products")
    for reason, start in zip(reasons, expected, strict=True):
        assert start in reason
    assert "during backfill_users" in reasons[4]
    # squawk absent is reported, not a NO-GO
    assert decide(_report(squawk={"available": False, "ok": None}), opts) == []
