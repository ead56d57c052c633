"""The villager catalog's category key function, which the migration installs: the built-in plan's
`category_key`, or the one plans/villager.toml generates for its lookup. Checks that compare a
category text with a category row use whichever the database has."""

from __future__ import annotations

from typing import Any

import psycopg

NAMES = ("villager_migration.category_key", "villager_migration.product_categories_key_of")


def category_key_function(conn: psycopg.Connection[Any]) -> str:
    for name in NAMES:
        row = conn.execute("SELECT to_regprocedure(%s) IS NOT NULL", (f"{name}(text)",)).fetchone()
        if row and row[0]:
            return name
    raise LookupError("no category key function: the database is not migrated")
