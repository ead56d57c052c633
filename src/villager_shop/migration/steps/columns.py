"""Add a nullable column to a legacy table: a catalog-only change (no rewrite), but it needs
ACCESS EXCLUSIVE for an instant, so it runs under the short lock_timeout with retries."""

from __future__ import annotations

import re

from villager_shop.migration.context import Context
from villager_shop.migration.ddl import Ddl
from villager_shop.migration.steps.base import Step, column_exists

# squawk's advice on a new column's type (text over varchar(n), no char(n), timestamptz, bigint):
# a moved column keeps its legacy type on purpose, and a plan's own types are its file's choice.
_SQUAWK_TYPES = (
    (re.compile(r"(character varying|varchar)\s*\(", re.I), "prefer-text-field"),
    (re.compile(r"(character|char|bpchar)\b(?!\s+varying)", re.I), "ban-char-field"),
    (re.compile(r"timestamp\b(?!.*\bwith time zone)", re.I), "prefer-timestamp-tz"),
    (re.compile(r"(integer|int|int4)\b", re.I), "prefer-bigint-over-int"),
    (re.compile(r"(smallint|int2)\b", re.I), "prefer-bigint-over-smallint"),
)


def squawk_ignored(*definitions: str, indent: str = "") -> str:
    """The comment that has squawk take the next line's column types (`definitions`, each starting
    with its type) as they are, so that `migrate plan --sql` lints clean; "" when it has nothing to say."""
    rules = [rule for pattern, rule in _SQUAWK_TYPES if any(pattern.match(d.strip()) for d in definitions)]
    return f"{indent}-- squawk-ignore {', '.join(rules)}\n" if rules else ""


class AddColumn(Step):
    """`more`: further columns added in the same statement. `then`: SQL run in the same transaction
    (the table's sync triggers, which must exist the moment the column does)."""

    def __init__(self, table: str, column: str, coltype: str, *, more: tuple[tuple[str, str], ...] = (),
                 then: tuple[str, ...] = (), then_locks: str = "") -> None:
        self.table, self.column, self.coltype = table, column, coltype
        self.columns = ((column, coltype), *more)
        self.then, self.then_locks = then, then_locks
        self.name = f"column_{table}_{column}"
        added = ", ".join(f"{table}.{c} {t}" for c, t in self.columns)
        self.title = (f"add {added} (nullable, no default: catalog only)"
                      + (" with the table's sync triggers" if then else ""))

    def ddl(self, utf8: bool = True) -> list[Ddl]:
        adds = ", ".join(f"ADD COLUMN IF NOT EXISTS {c} {t}" for c, t in self.columns)
        alter = f"{squawk_ignored(*(t for _, t in self.columns))}ALTER TABLE public.{self.table} {adds}"
        sql = ";\n".join([alter, *(t.rstrip().rstrip(";") for t in self.then)])
        locks = f"ACCESS EXCLUSIVE on {self.table} (catalog only, milliseconds)"
        return [Ddl(sql, locks + (f"; {self.then_locks}" if self.then_locks else ""))]

    def undo_ddl(self) -> list[Ddl]:
        drops = ", ".join(f"DROP COLUMN IF EXISTS {c}" for c, _ in self.columns)
        return [Ddl(f"ALTER TABLE public.{self.table} {drops}",
                    f"ACCESS EXCLUSIVE on {self.table} (catalog only, milliseconds)")]

    def check(self, ctx: Context) -> bool:
        return all(column_exists(ctx, self.table, c) for c, _ in self.columns)
