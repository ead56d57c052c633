"""Read the .sql files shipped inside a package, whole or by `-- name: X` section.

SQL lives in .sql files so it reads, diffs and lints as SQL. The comment lines that open a query
explain it to its reader; they are dropped so they never reach the server (nor pg_stat_statements).
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

_SECTION = re.compile(r"^-- name: (\S+)\s*$", re.MULTILINE)


def _read(package: str, path: tuple[str, ...]) -> str:
    return resources.files(package).joinpath(*path).read_text(encoding="utf-8")


def without_leading_comments(text: str) -> str:
    lines = text.strip().splitlines()
    while lines and lines[0].startswith("--"):
        lines.pop(0)
    return "\n".join(lines).strip()


@cache
def read_query(package: str, *path: str) -> str:
    """The whole file `path` of `package`, its opening comment lines left out."""
    return without_leading_comments(_read(package, path))


def sections_of(text: str) -> dict[str, str]:
    """The `-- name: X` sections of a file's text (text before the first is ignored)."""
    parts = _SECTION.split(text)
    return {name: without_leading_comments(body) for name, body in zip(parts[1::2], parts[2::2], strict=True)}


@cache
def read_sections(package: str, *path: str) -> dict[str, str]:
    """The `-- name: X` sections of the file `path` of `package`."""
    return sections_of(_read(package, path))
