"""Steps that create database objects with no effect on application tables: the migration's
state schema, the normalization rules, and the new (empty) tables."""

from __future__ import annotations

from typing import Any

from villager_shop.core.db import relation_exists
from villager_shop.core.errors import RefusedError
from villager_shop.migration.context import Context
from villager_shop.migration.ddl import Ddl
from villager_shop.migration.sqlfiles import section
from villager_shop.migration.steps.base import Step, function_exists


class StateSchema(Step):
    name = "state_schema"
    title = "create the migration's state schema (villager_migration)"

    def ddl(self, utf8: bool = True) -> list[Ddl]:
        return [Ddl(section("state.sql", "state"), "none on application tables")]

    def check(self, ctx: Context) -> bool:
        return relation_exists(ctx.conn, "villager_migration.quarantine")


RULES = ("canonical_house_number", "category_name", "category_key", "slugify", "order_problem",
         "ensure_address", "ensure_category")


def rules_sql(utf8: bool) -> str:
    # Invisible characters are not part of a value: zero-width ones go (before NFKC, which keeps
    # them and must see what they separated), NEL counts as a space (PostgreSQL's \s misses it).
    normalize = "normalize(regexp_replace(raw, '[\\u200b-\\u200d\\u2060\\ufeff]', '', 'g'), NFKC)" if utf8 else "raw"
    space = "[\\s\\u0085]+" if utf8 else "\\s+"
    spaced = f"btrim(regexp_replace({normalize}, '{space}', ' ', 'g'))"
    fill = {"{normalize_upper}": f"normalize(upper({spaced}), NFKC)" if utf8 else f"upper({spaced})",
            "{category_name}": f"NULLIF({spaced}, '')"}
    out = []
    for rule in RULES:
        sql = section("rules.sql", rule)
        for key, value in fill.items():
            sql = sql.replace(key, value)
        out.append(sql)
    return "\n\n".join(out)


class Rules(Step):
    name = "rules"
    title = "install the normalization rules (canonical house number, category key, slug)"

    def ddl(self, utf8: bool = True) -> list[Ddl]:
        return [Ddl(rules_sql(utf8), "none on application tables")]

    def check(self, ctx: Context) -> bool:
        return all(function_exists(ctx, f"villager_migration.{r}") for r in RULES)


class CreateTable(Step):
    """A new table of the normalized schema, created empty (its own indexes are instant)."""

    def __init__(self, table: str, locks: str = "none on application tables", *, then: tuple[str, ...] = ()) -> None:
        self.table = table
        self.name = f"table_{table}"
        self.title = f"create table {table}" + (" with its sync triggers" if then else "")
        self._locks = locks
        self.then = then  # run in the same transaction (see AddColumn)

    def ddl(self, utf8: bool = True) -> list[Ddl]:
        parts = [section("expand.sql", self.table), *self.then]
        return [Ddl(";\n".join(p.rstrip().rstrip(";") for p in parts), self._locks)]

    def undo_ddl(self) -> list[Ddl]:
        # Rollback keeps the rows: the table moves to an archive schema (see rollback.py).
        return [Ddl(f"ALTER TABLE IF EXISTS public.{self.table} SET SCHEMA {{archive}}",
                    f"ACCESS EXCLUSIVE on {self.table}")]

    def check(self, ctx: Context) -> bool:
        return relation_exists(ctx.conn, f"public.{self.table}")

    def expected_columns(self) -> set[str]:
        body = section("expand.sql", self.table)
        block = body[body.index("(") + 1:]
        return {line.split()[0] for line in block.splitlines()
                if line.strip() and line.startswith("    ") and not line.strip().startswith(("CONSTRAINT", ")"))
                and line.split()[0].islower()}

    def apply(self, ctx: Context) -> dict[str, Any]:
        if self.check(ctx):
            have = {r[0] for r in ctx.conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = 'public'"
                " AND table_name = %s", (self.table,))}
            missing = sorted(self.expected_columns() - have)
            if missing:
                raise RefusedError(
                    f"public.{self.table} already exists and is not the migration's (no column "
                    f"{', '.join(missing)}); rename or drop it before migrating")
            return {"already": True}
        return super().apply(ctx)
