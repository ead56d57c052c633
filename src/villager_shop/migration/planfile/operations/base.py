"""What an operation of a plan file contributes, by phase: the assembler (assemble.py) puts the
parts of all operations in the engine's order (functions, tables, seeds, columns with their
triggers, backfills, indexes, constraints, validations), so that operations compose."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from villager_shop.migration import state
from villager_shop.migration.context import Context
from villager_shop.migration.keys import Key
from villager_shop.migration.planfile.catalog import Catalog
from villager_shop.migration.planfile.spec import IDENT, RESERVED, Operation, QuarantineRule, columns_created
from villager_shop.migration.planfile.steps import Trigger
from villager_shop.migration.steps.backfill import Backfill, batch, statement
from villager_shop.migration.steps.base import Step

V = "villager_migration"


@dataclass(frozen=True)
class ConstraintInfo:
    """A constraint the plan adds, as verify checks it: valid, or (a guard or NOT VALID) with every
    violating row quarantined."""

    table: str
    name: str
    violations_sql: str | None = None


@dataclass
class Parts:
    # Indexes the sync triggers need, built before them (a referencing column looked rows up by).
    early_indexes: list[Step] = field(default_factory=list)
    functions: list[tuple[str, str]] = field(default_factory=list)  # (name in villager_migration, SQL)
    tables: list[Step] = field(default_factory=list)
    seeds: list[Step] = field(default_factory=list)
    checks: list[Step] = field(default_factory=list)
    columns: list[Step] = field(default_factory=list)
    late_checks: list[Step] = field(default_factory=list)  # over a column the plan adds to a table
    triggers: list[Trigger] = field(default_factory=list)
    hooks: list[Step] = field(default_factory=list)  # the plan's own SQL (sql operations)
    backfills: list[Step] = field(default_factory=list)
    fk_indexes: list[Step] = field(default_factory=list)
    foreign_keys: list[Step] = field(default_factory=list)
    validations: list[Step] = field(default_factory=list)
    indexes: list[Step] = field(default_factory=list)
    # Data checks: SELECTs of (kind, table_name, row_key text, detail text), one row per disagreement.
    integrity: list[str] = field(default_factory=list)
    integrity_completed: list[str] = field(default_factory=list)
    constraints: list[ConstraintInfo] = field(default_factory=list)
    index_names: list[str] = field(default_factory=list)
    keep_quarantine: list[str] = field(default_factory=list)  # complete: rows' last legacy form


@dataclass(frozen=True)
class Env:
    """What an operation may look at while it is expanded: the catalog, and what earlier
    operations of the plan created (a link_child_reference finds its split_child here)."""

    catalog: Catalog
    earlier: tuple[Operation, ...]
    links: tuple[object, ...]  # every link_child_reference of the plan (the split_child links them)
    indexes: tuple[object, ...] = ()  # every create_index of the plan


def quote_list(columns: list[str], prefix: str = "") -> str:
    return ", ".join(f"{prefix}{c}" for c in columns)


def ident(name: str) -> str:
    """A column name as SQL writes it: quoted when it is not a plain lower-case name ("order")."""
    return name if IDENT.fullmatch(name) and name not in RESERVED else '"' + name.replace('"', '""') + '"'


def row_tuple(columns: list[str], prefix: str) -> str:
    """(a.x, a.y) - a one-column row is written ROW(...) so that IS DISTINCT FROM compares rows."""
    inner = ", ".join(f"{prefix}{ident(c)}" for c in columns)
    return f"ROW({inner})"


@dataclass(frozen=True)
class Actions:
    """Set-based statements run on each batch of a walk (see steps/backfill.py: batch markers)."""

    sqls: tuple[str, ...]
    busy_sqls: tuple[str, ...] = ()
    updates: bool = False  # updates the walked table itself (its rows move: it must come last on a page walk)

    def actions(self) -> list[str]:
        return list(self.sqls)

    def busy(self) -> list[str]:
        return list(self.busy_sqls)


@dataclass(frozen=True)
class WalkPart:
    """An operation's share of a walk of `table`, as parts of the batch's one statement: CTEs over
    `src` (the batch's rows, `SELECT t.*`), and for an operation that fills columns of the table
    itself, what it sets on which rows. The operations sharing a walk make one statement: one read
    of the batch, one round trip, and one new version of a row that several of them fill, not one
    per operation (the villager plan's products walk: four statements per batch became one)."""

    table: str
    parts: tuple[str, ...] = ()  # `name AS (...)`, names unique to the operation
    sets: tuple[tuple[str, str], ...] = ()  # (column, value over the row `t` and the parts)
    applies: str = ""  # the rows `sets` is for (over `t` and the parts)
    busy_sqls: tuple[str, ...] = ()
    # It inserts rows keyed by the walked row's key (a split's default children): walked by key,
    # their index entries go to the pages written just before, not all over the index.
    by_key: bool = False

    @property
    def updates(self) -> bool:
        return bool(self.sets)

    def busy(self) -> list[str]:
        return list(self.busy_sqls)


def walk_statement(parts: list[WalkPart]) -> str:
    """The one statement of a batch for `parts` (of one table). The update reads the batch's rows
    themselves, not `src`: a join of the table with a CTE of thousands of rows plans as a nested loop
    (the planner cannot count a CTE's rows), quadratic in the batch."""
    table = parts[0].table
    ctes = [f"src AS MATERIALIZED (SELECT t.* FROM public.{table} t WHERE {batch('t')})",
            *[c for p in parts for c in p.parts]]
    updating = [p for p in parts if p.sets]
    if not updating:
        return statement(ctes, "SELECT count(*) FROM src")
    sets = [f"{column} = {value}" if len(updating) == 1 else
            f"{column} = CASE WHEN {p.applies} THEN {value} ELSE t.{column} END"
            for p in updating for column, value in p.sets]
    return statement(ctes, f"UPDATE public.{table} t\n   SET {', '.join(sets)}\n"
                           f" WHERE {batch('t')}\n   AND ({' OR '.join(f'({p.applies})' for p in updating)})")


class PlanBackfill(Backfill):
    """A walk of one table for one or more operations: assemble.py merges the walks of a table into
    one where their order allows. `reads_new`: its actions read what another backfill fills (the
    default children, a new column), so it may not move before it."""

    def __init__(self, table: str, actions: Actions | WalkPart, title: str, key: Key, *, only: str | None,
                 replaces: tuple[str, ...], reads_new: bool, rule: QuarantineRule | None = None) -> None:
        super().__init__(table, [actions], title, only=only, replaces=replaces, key=key,
                         walk="key" if getattr(actions, "by_key", False) else None)
        self.reads_new = reads_new
        self.rules: tuple[QuarantineRule, ...] = (rule,) if rule else ()  # what it walks for, if only rules
        # The state key of a table copy that decides these rules as it copies (assemble.py): once it
        # has swapped its copy in, there is nothing left to walk for.
        self.covered_by: str | None = None

    def _covered(self, ctx: Context) -> bool:
        if self.covered_by is None:
            return False
        st = state.get(ctx.conn, self.covered_by)
        return isinstance(st, dict) and st.get("method") == "rebuild" and bool(st.get("swapped"))

    def apply(self, ctx: Context) -> dict[str, Any]:
        if self._covered(ctx):
            return {"rows": 0, "decided_by": f"the copy of {self.table} (its rules were decided as it was copied)"}
        return super().apply(ctx)

    def check(self, ctx: Context) -> bool:
        return self._covered(ctx) or super().check(ctx)

    def actions(self) -> list[str]:
        if all(isinstance(op, WalkPart) for op in self.ops):
            return [walk_statement(self.ops)]
        return [a for op in self.ops for a in op.actions()]

    def merge(self, other: PlanBackfill) -> None:
        """`other`'s actions in this walk: a row needing either is walked. Statements that update the
        table come last, and two of them make it a walk by key (a page walk finds a batch's rows by
        tuple id, which the first update changes); walk parts are one statement whatever they do."""
        ops = sorted([*self.ops, *other.ops], key=lambda a: bool(getattr(a, "updates", False)))
        self.ops = ops
        self.rules = (*self.rules, *other.rules) if self.rules and other.rules else ()
        self.only = None if self.only is None or other.only is None else f"({self.only}) OR ({other.only})"
        self.replaces = tuple(dict.fromkeys((*self.replaces, *other.replaces)))
        self.title = f"{self.title}; {other.title}"
        statements_updating = sum(bool(getattr(a, "updates", False)) for a in ops if not isinstance(a, WalkPart))
        if statements_updating > 1 or other.walk == "key":
            self.walk = "key"


def backfill(table: str, name: str, actions: Actions | WalkPart, title: str, catalog: Catalog, *, only: str | None = None,
             replaces: tuple[str, ...] = (), reads_new: bool = False, rule: QuarantineRule | None = None) -> Step:
    """A walk of `table` by its own primary key (any single-column key)."""
    info = catalog.table(table)
    step = PlanBackfill(table, actions, title, Key(info.key or "id", info.key_type or "uuid"), only=only,
                        replaces=replaces, reads_new=reads_new, rule=rule)
    step.name = name
    return step


TOKEN = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|[A-Za-z_][A-Za-z0-9_$]*|.", re.DOTALL)


def _unquoted(token: str) -> str:
    """The name a token stands for: a quoted name ("order", "Mixed Case") without its quotes."""
    return token[1:-1].replace('""', '"') if len(token) > 1 and token[0] == '"' == token[-1] else token


def rename(definition: str, renamed: dict[str, str]) -> str:
    """Column names in an expression replaced; string literals and function names kept. A quoted
    name ("order") stays quoted when it is only qualified (`NEW."order"`)."""
    tokens = TOKEN.findall(definition)
    out = []
    for i, tok in enumerate(tokens):
        following = next((t for t in tokens[i + 1:] if not t.isspace()), "")
        preceding = next((t for t in reversed(tokens[:i]) if not t.isspace()), "")
        name = _unquoted(tok)
        new = renamed.get(name) if following != "(" and preceding != "." else None
        if new is None or new == name:
            out.append(tok)
        elif name != tok and new.endswith("." + name):
            out.append(new[:-len(name)] + tok)
        else:
            out.append(new)
    return "".join(out)


def columns_read(expr: str, columns: Iterable[str]) -> list[str]:
    """The `columns` an SQL expression names, in their order (string literals left out)."""
    words = {_unquoted(t) for t in TOKEN.findall(re.sub(r"'(?:[^']|'')*'", "''", expr))}
    return [c for c in columns if c in words]


def quoted(text: str) -> str:
    """`text` inside a format() pattern of a generated SQL literal: one line, quotes doubled, % escaped."""
    return " ".join(text.split()).replace("'", "''").replace("%", "%%")


def added_columns(env: Env, table: str) -> set[str]:
    """The columns earlier operations of the plan add to an existing table."""
    return {c for op in env.earlier for t, c in columns_created(op) if t == table}


def refuse_missing(table: str, constraint: str, fk: str, target: str) -> str:
    """PL/pgSQL after a locking read of the row NEW.`fk` names: when it is not there, the error the
    foreign key `constraint` would raise (the key comes after the backfill, or was withdrawn)."""
    return (f"\n            IF NOT FOUND THEN"
            f"\n                RAISE EXCEPTION 'insert or update on table \"{table}\" violates foreign key constraint"
            f" \"{constraint}\"'"
            f"\n                      USING ERRCODE = 'foreign_key_violation',"
            f"\n                            DETAIL = format('Key ({fk})=(%s) is not present in table \"{target}\".',"
            f" NEW.{fk});"
            f"\n            END IF;")
