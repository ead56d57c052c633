"""The plan files shipped inside the package (`plans/` at the top of a checkout links to them), so
that an installed tool runs the villager migration without a checkout of the repository. The
villager plan is the default of every command that takes `--plan`; the word `built-in` there names
the Python-coded villager_shop plan, kept as the reference the benchmarks compare the file with."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

VILLAGER = "villager.toml"
BUILT_IN = "built-in"


def path(name: str = VILLAGER) -> Path:
    return Path(str(resources.files("villager_shop") / "plans" / name))


def default_path() -> str:
    """The plan a database takes when no plan is named and none is in progress."""
    return str(path())


def is_built_in(option: str | None) -> bool:
    return option == BUILT_IN
