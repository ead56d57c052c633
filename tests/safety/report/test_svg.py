"""The report's timeline drawing."""

from __future__ import annotations

from villager_shop.safety.report.svg import Bar, timeline_svg


def test_timeline_svg_draws_a_bar_per_step_and_the_latency_series() -> None:
    bars = [Bar("restore", 0, 1, "phase"), Bar("a", 1, 1.5, "step", "expand"),
            Bar("b", 1.5, 3, "step", "backfill", status="failed")]
    svg = timeline_svg(bars, [{"t": 1.0, "n": 3, "p50_ms": 2.0, "max_ms": 9.0},
                              {"t": 2.0, "n": 3, "p50_ms": 3.0, "max_ms": 250.0}], threshold_ms=100, duration=3)
    assert svg.startswith("<svg") and svg.count('class="step-bar"') == 2 and svg.count('class="phase-bar"') == 1
    assert 'data-name="b" data-status="failed"' in svg and "latency-p50" in svg and "latency-threshold" in svg
