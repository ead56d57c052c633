"""Byte counts as people read them, with the sign of a shrink."""

from __future__ import annotations

import pytest

from villager_shop.core.units import format_bytes


@pytest.mark.parametrize(("n", "text"), [
    (0, "0 B"), (1023, "1023 B"), (1024, "1.0 kB"), (1536, "1.5 kB"), (5 * 1024**2, "5.0 MB"),
    (3 * 1024**3, "3.0 GB"), (2048 * 1024**3, "2048.0 GB"), (-2048, "-2.0 kB"), (-5, "-5 B"),
])
def test_format_bytes(n: int, text: str) -> None:
    assert format_bytes(n) == text
