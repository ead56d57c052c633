"""Sizes for people: one spelling of a byte count everywhere a report or a command prints one."""

from __future__ import annotations


def format_bytes(n: float) -> str:
    """1024-based, one decimal from kB on, GB at most; a negative count (a shrink) keeps its sign."""
    sign = "-" if n < 0 else ""
    v = float(abs(n))
    for unit in ("B", "kB", "MB", "GB"):
        if v < 1024 or unit == "GB":
            return f"{sign}{v:.0f} {unit}" if unit == "B" else f"{sign}{v:.1f} {unit}"
        v /= 1024
    return f"{sign}{v:.1f} TB"
