"""The SQL of the hot paths, as .sql files (PostgreSQL builds the JSON; Python passes it through)."""

from __future__ import annotations

from villager_shop.core.sqlfiles import read_query, read_sections


def load(name: str) -> str:
    return read_query(__name__, name)


def sections(name: str) -> dict[str, str]:
    """`-- name: X` sections of one file."""
    return read_sections(__name__, name)
