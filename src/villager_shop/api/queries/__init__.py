"""The SQL of the hot paths, as .sql files (PostgreSQL builds the JSON; Python passes it through)."""

from __future__ import annotations

from functools import cache
from importlib import resources


@cache
def load(name: str) -> str:
    text = resources.files(__package__).joinpath(name).read_text(encoding="utf-8")
    # leading comment lines explain the query; keep them out of pg_stat_statements
    lines = text.strip().splitlines()
    while lines and lines[0].startswith("--"):
        lines.pop(0)
    return "\n".join(lines).strip()


@cache
def sections(name: str) -> dict[str, str]:
    """`-- name: X` sections of one file."""
    out: dict[str, str] = {}
    current: str | None = None
    body: list[str] = []
    for line in resources.files(__package__).joinpath(name).read_text(encoding="utf-8").splitlines():
        if line.startswith("-- name: "):
            if current:
                out[current] = "\n".join(body).strip()
            current, body = line.removeprefix("-- name: ").strip(), []
        elif current and not (line.startswith("--") and not body):
            body.append(line)
    if current:
        out[current] = "\n".join(body).strip()
    return out
