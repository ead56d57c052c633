"""`sample create NAME`: a sample's legacy schema and its generated rows, in one transaction, in a
database that does not have its tables yet."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import psycopg

from villager_shop.core.db import connection, relation_exists
from villager_shop.core.errors import VillagerError
from villager_shop.core.sqlfiles import read_query
from villager_shop.core.urls import mask_url
from villager_shop.samples.blog import generate as blog
from villager_shop.samples.library import generate as library

SAMPLES: dict[str, ModuleType] = {"blog": blog, "library": library}
MAX_ROWS = 50_000_000


@dataclass(frozen=True)
class Created:
    sample: str
    database: str
    rows: dict[str, int]
    seconds: float


def create(url: str, name: str, *, rows: int, seed: int) -> Created:
    """Create sample `name` with `rows` rows in its main table; refuses (exit 2) when one of its
    tables already exists, changing nothing."""
    module = SAMPLES.get(name)
    if module is None:
        raise VillagerError(f"unknown sample {name!r}: choose one of {', '.join(SAMPLES)}", exit_code=2)
    if not 10 <= rows <= MAX_ROWS:
        raise VillagerError(f"--rows must be between 10 and {MAX_ROWS:,} (got {rows})", exit_code=2)
    tables: dict[str, str] = module.TABLES
    generate: Callable[[psycopg.Connection[Any], int, int], dict[str, int]] = module.generate
    started = time.perf_counter()
    with connection(url) as conn:
        present = [t for t in tables if relation_exists(conn, f"public.{t}")]
        if present:
            raise VillagerError(
                f"{', '.join(present)} already exist in {mask_url(url)}: sample create fills a database without"
                " them (drop them, or use another database)", exit_code=2)
        conn.execute(read_query(f"villager_shop.samples.{name}", "schema.sql").encode())
        counts = generate(conn, rows, seed)
        for table in tables:
            conn.execute(f"ANALYZE public.{table}")
    return Created(name, mask_url(url), counts, round(time.perf_counter() - started, 2))
