"""Load the named sections (`-- name: X`) of the .sql files beside the steps."""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

_SECTION = re.compile(r"^-- name: (\S+)\s*$", re.MULTILINE)


@cache
def sections(filename: str) -> dict[str, str]:
    text = resources.files("villager_shop.migration").joinpath("sql", filename).read_text(encoding="utf-8")
    parts = _SECTION.split(text)
    out: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        lines = body.strip().splitlines()
        # Drop the leading comment lines that explain the section; keep the SQL.
        while lines and lines[0].startswith("--"):
            lines.pop(0)
        out[name] = "\n".join(lines).strip()
    return out


def section(filename: str, name: str) -> str:
    try:
        return sections(filename)[name]
    except KeyError:
        raise KeyError(f"no section {name!r} in {filename}") from None
