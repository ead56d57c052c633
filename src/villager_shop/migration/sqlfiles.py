"""Load the named sections (`-- name: X`) of the .sql files beside the steps."""

from __future__ import annotations

from villager_shop.core.sqlfiles import read_sections


def sections(filename: str) -> dict[str, str]:
    return read_sections("villager_shop.migration", "sql", filename)


def section(filename: str, name: str) -> str:
    try:
        return sections(filename)[name]
    except KeyError:
        raise KeyError(f"no section {name!r} in {filename}") from None
