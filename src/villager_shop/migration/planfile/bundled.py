"""The plan files shipped inside the package (`plans/` at the top of a checkout links to them), so
that an installed tool runs the villager migration without a checkout of the repository."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

VILLAGER = "villager.toml"


def path(name: str = VILLAGER) -> Path:
    return Path(str(resources.files("villager_shop") / "plans" / name))
