"""A plan file: an ordered list of generic operations, with table and column names, read from TOML.

Only the shape is checked here (known operations, required keys, names that are plain SQL
identifiers, expressions that are single SQL expressions); whether the tables and columns exist is
checked against the live database by check.py. Every problem names its place in the file (the
operation's position and line, the key), so that an operator can fix all of them in one pass."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
OPERATIONS = ("extract_lookup", "split_child", "link_child_reference", "derive_column", "quarantine_rule",
              "add_check", "add_foreign_key", "create_index", "sql")
NORMALIZERS = ("trim", "canonical", "casefold", "upper")
# PostgreSQL's reserved and type/function-name keywords (pg_get_keywords() catcode R and T): the
# generated SQL writes names unquoted, so a plan may not use them.
RESERVED = frozenset("""all analyse analyze and any array as asc asymmetric authorization binary both case cast check
collate collation column concurrently constraint create cross current_catalog current_date current_role
current_schema current_time current_timestamp current_user default deferrable desc distinct do else end except
false fetch for foreign freeze from full grant group having ilike in initially inner intersect into is isnull join
lateral leading left like limit localtime localtimestamp natural not notnull null offset on only or order outer
overlaps placing primary references returning right select session_user similar some symmetric system_user table
tablesample then to trailing true union unique user using variadic verbose when where window with""".split())  # noqa: SIM905
# A column type as written in CREATE TABLE: text, numeric(10, 2), timestamp with time zone, int[].
TYPE = re.compile(r"^[a-z][a-z0-9_]*( [a-z][a-z0-9_]*)*( ?\([0-9]+( ?, ?[0-9]+)?\))?(\[\])?$", re.IGNORECASE)
SLUG = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
FUNCTION = re.compile(r"^[a-z_][a-z0-9_]*\.[a-z_][a-z0-9_]*$")  # a normalizer the plan or the database has
ON_DELETE = ("NO ACTION", "RESTRICT", "CASCADE", "SET NULL", "SET DEFAULT")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a plan, and where: `place` is e.g. 'operation 2 (extract_lookup, line 14), sources[0].table'."""

    place: str
    message: str

    def __str__(self) -> str:
        return f"{self.place}: {self.message}"


class PlanError(Exception):
    """The plan cannot run; every problem found, each with its place in the file."""

    def __init__(self, path: str, problems: list[Problem]) -> None:
        self.path, self.problems = path, problems
        super().__init__(f"{path}: {len(problems)} problem(s): " + "; ".join(map(str, problems[:3]))
                         + (" …" if len(problems) > 3 else ""))


@dataclass(frozen=True)
class Source:
    table: str
    column: str
    fk: str
    constraint: str  # the foreign key's name


@dataclass(frozen=True)
class ExtraColumn:
    """A child column of the new schema alone: the default child gets `initial` (an expression over
    the parent's row) when the migration creates it; it is not kept in sync afterwards."""

    name: str
    type: str
    initial: str | None = None
    default: str | None = None
    not_null: bool = False
    unique: bool = False


@dataclass(frozen=True)
class ExtractLookup:
    """Free-text columns (of one or several tables) -> rows of a lookup table, referenced by id."""

    lookup: str
    column: str
    sources: tuple[Source, ...]
    normalizer: str = "canonical"  # the stored value: a shipped rule or a function the plan names
    key: str | None = None  # what makes two values the same lookup row (default: the normalizer)
    slug: str | None = None  # a unique, URL-safe column derived from the value
    slug_fallback: str = "item"  # the slug of a value with no letter or digit
    extra: tuple[ExtraColumn, ...] = ()  # columns of the new schema alone (is_active), by their defaults
    kind: str = "extract_lookup"
    line: int = 0

    @property
    def key_column(self) -> str:
        return f"{self.column}_key" if self.key else self.column


@dataclass(frozen=True)
class ChildColumn:
    parent: str  # the parent's legacy column
    child: str  # its name in the child table
    # A transformed column: the child's value is `source` over the parent's column (greatest(stock, 0)),
    # and a child write reaches the parent as `back` over the child's columns (default: its value) -
    # only when the parent's value does not already map to it, so that -5 is not rewritten to 0.
    source: str | None = None
    back: str | None = None
    type: str | None = None  # default: the parent's type (16- and 32-bit integers widened)
    default: str | None = None  # default: the parent's, for a plain column
    not_null: bool | None = None  # default: the parent's, for a plain column

    @property
    def plain(self) -> bool:
        return self.source is None and self.back is None


@dataclass(frozen=True)
class SplitChild:
    """Columns of a parent -> a child table (1:N); one default child per parent carries them."""

    parent: str
    child: str
    columns: tuple[ChildColumn, ...]
    fk: str
    default_flag: str = "is_default"
    # The parents that carry their values to a default child (price > 0): the others get none, and
    # one they have keeps its values and, given `active_flag`, is marked inactive until they qualify.
    when: str | None = None
    active_flag: str | None = None
    extra: tuple[ExtraColumn, ...] = ()
    kind: str = "split_child"
    line: int = 0


@dataclass(frozen=True)
class LinkChildReference:
    """A table that references the parent gets the id of the parent's default child."""

    table: str
    reference: str  # its column referencing the parent's primary key
    child: str  # a split_child's child table
    fk: str  # the new column
    constraint: str  # its foreign key's name
    kind: str = "link_child_reference"
    line: int = 0


@dataclass(frozen=True)
class DeriveColumn:
    """A new column of a table computed from its legacy columns (base_price = the price when positive);
    a write of it by the new application reaches the legacy column `writes` as `back`."""

    table: str
    column: str
    column_type: str
    source: str  # the plan's `from`: an SQL expression over the row's legacy columns
    writes: str | None = None
    back: str | None = None  # default: the new column's value
    kind: str = "derive_column"
    line: int = 0


@dataclass(frozen=True)
class QuarantineRule:
    """Rows for which `when` holds are recorded (with `reason`) rather than migrated."""

    table: str
    reason: str
    when: str
    kind: str = "quarantine_rule"
    line: int = 0


@dataclass(frozen=True)
class AddCheck:
    table: str
    name: str
    check: str
    columns: tuple[str, ...] = ()  # the checked columns (default: the identifiers of `check`)
    kind: str = "add_check"
    line: int = 0


@dataclass(frozen=True)
class AddForeignKey:
    table: str
    name: str
    columns: tuple[str, ...]
    references: str
    ref_columns: tuple[str, ...] = ()  # default: the referenced table's primary key
    on_delete: str = "NO ACTION"
    kind: str = "add_foreign_key"
    line: int = 0


@dataclass(frozen=True)
class CreateIndex:
    table: str
    name: str
    columns: tuple[str, ...]  # column names or expressions, with ASC/DESC
    unique: bool = False
    where: str | None = None
    include: tuple[str, ...] = ()
    kind: str = "create_index"
    line: int = 0


@dataclass(frozen=True)
class RawSql:
    """SQL of the operator's own (pgroll's `sql`), run once the plan's new tables, columns and sync
    triggers exist: `up` by run, `down` by rollback, `complete` by complete, each in one transaction
    with the others of its command; `check` says whether `up` is in place."""

    name: str
    up: str
    down: str
    check: str
    complete: str = ""
    tables: tuple[str, ...] = ()  # the existing tables it works on (the lock order of rollback and complete)
    locks: str = ""  # what `migrate plan` says it locks
    kind: str = "sql"
    line: int = 0


Operation = (ExtractLookup | SplitChild | LinkChildReference | DeriveColumn | QuarantineRule | AddCheck | AddForeignKey
             | CreateIndex | RawSql)


@dataclass(frozen=True)
class PlanSpec:
    name: str
    operations: tuple[Operation, ...]
    path: str = ""
    text: str = field(default="", repr=False)  # the file as read (recorded in the database by run)
    functions: tuple[str, ...] = ()  # SQL the plan ships (CREATE FUNCTION ... of its normalizers)
    monitoring: bool = False  # the guide's monitoring views and check_data_integrity() (planfile/monitoring.py)

    def tables(self) -> list[str]:
        """The existing tables the plan works on, in first-use order: not those it creates, which
        a later operation may also name (a check on a split's child)."""
        created = set(self.new_tables())
        out: list[str] = []
        for op in self.operations:
            for t in _tables_of(op):
                if t not in out and t not in created:
                    out.append(t)
        return out

    def new_tables(self) -> list[str]:
        return [op.lookup if isinstance(op, ExtractLookup) else op.child
                for op in self.operations if isinstance(op, ExtractLookup | SplitChild)]


def columns_created(op: Operation) -> list[tuple[str, str]]:
    """The (table, column) an operation adds to a table (not to the tables it creates)."""
    if isinstance(op, ExtractLookup):
        return [(s.table, s.fk) for s in op.sources]
    if isinstance(op, LinkChildReference):
        return [(op.table, op.fk)]
    if isinstance(op, DeriveColumn):
        return [(op.table, op.column)]
    return []


def _tables_of(op: Operation) -> list[str]:
    if isinstance(op, ExtractLookup):
        return [s.table for s in op.sources]
    if isinstance(op, SplitChild):
        return [op.parent]
    if isinstance(op, RawSql):
        return list(op.tables)
    return [op.table]


class _Reader:
    """Reads one operation's table, collecting problems instead of stopping at the first."""

    def __init__(self, problems: list[Problem], place: str, data: dict[str, Any]) -> None:
        self.problems, self.place, self.data = problems, place, data
        self.used: set[str] = {"type"}

    def bad(self, key: str, message: str) -> None:
        self.problems.append(Problem(f"{self.place}, {key}" if key else self.place, message))

    def _get(self, key: str, required: bool) -> Any:
        self.used.add(key)
        if key not in self.data:
            if required:
                self.bad(key, "missing")
            return None
        return self.data[key]

    def ident(self, key: str, required: bool = True, default: str | None = None) -> str:
        value = self._get(key, required)
        if value is None:
            return default or ""
        if not isinstance(value, str) or not IDENT.fullmatch(value):
            self.bad(key, f"{value!r} is not a plain lower-case SQL name (letters, digits, _; at most 63)")
            return default or ""
        if value in RESERVED:
            self.bad(key, f"{value!r} is a reserved SQL word: the generated SQL cannot use it unquoted")
            return default or ""
        return value

    def idents(self, key: str, required: bool = True) -> tuple[str, ...]:
        value = self._get(key, required)
        if value is None:
            return ()
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not value or not all(isinstance(v, str) and IDENT.fullmatch(v)
                                                               and v not in RESERVED for v in value):
            self.bad(key, f"{value!r} is not a list of plain lower-case SQL names (reserved words excluded)")
            return ()
        return tuple(value)

    def expr(self, key: str, required: bool = True) -> str | None:
        value = self._get(key, required)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            self.bad(key, "must be a non-empty SQL expression")
            return None
        if ";" in value or "--" in value or "/*" in value:
            self.bad(key, "must be one SQL expression (no ';', no comments)")
            return None
        return value.strip()

    def text(self, key: str, required: bool = True) -> str:
        """SQL statements, as written (`sql` operations)."""
        value = self._get(key, required)
        if value is None:
            return ""
        if not isinstance(value, str) or (required and not value.strip()):
            self.bad(key, "must be SQL text" + (" (empty: nothing)" if not required else ""))
            return ""
        return value.strip()

    def sqltype(self, key: str, required: bool = True) -> str | None:
        value = self._get(key, required)
        if value is None:
            return None
        if not isinstance(value, str) or not TYPE.fullmatch(value.strip()):
            self.bad(key, f"{value!r} is not a column type (text, bigint, numeric(10, 2), timestamptz, ...)")
            return None
        return value.strip()

    def maybe_flag(self, key: str) -> bool | None:
        return self.flag(key, False) if key in self.data else None

    def flag(self, key: str, default: bool) -> bool:
        value = self._get(key, False)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.bad(key, "must be true or false")
            return default
        return value

    def done(self) -> None:
        for key in sorted(set(self.data) - self.used):
            self.bad(key, "unknown key")


def _normalizer(r: _Reader, key: str, required: bool, default: str | None) -> str | None:
    value = r._get(key, required)
    if value is None:
        return default
    if isinstance(value, str) and (value in NORMALIZERS or FUNCTION.fullmatch(value)):
        return value
    r.bad(key, f"{value!r}: one of {', '.join(NORMALIZERS)}, or a function schema.name(text) RETURNS text"
               " that the plan ships or the database has")
    return default


def _extract_lookup(r: _Reader, line: int) -> ExtractLookup:
    lookup, column = r.ident("lookup"), r.ident("column", False, "name")
    sources = []
    raw = r._get("sources", True)
    if raw is not None and (not isinstance(raw, list) or not raw):
        r.bad("sources", "must be a non-empty list of { table, column, fk }")
        raw = []
    for i, s in enumerate(raw or []):
        if not isinstance(s, dict):
            r.bad(f"sources[{i}]", "must be a table { table, column, fk }")
            continue
        sr = _Reader(r.problems, f"{r.place}, sources[{i}]", s)
        sr.used = set()
        table, col = sr.ident("table"), sr.ident("column")
        fk = sr.ident("fk", False, f"{lookup}_id"[:63] if lookup else "")
        constraint = sr.ident("constraint", False, f"fk_{table}_{fk}"[:63])
        sr.done()
        sources.append(Source(table, col, fk, constraint))
    normalizer = _normalizer(r, "normalizer", False, "canonical") or "canonical"
    key = _normalizer(r, "key", False, None)
    slug = r.ident("slug", False) or None
    fallback = r._get("slug_fallback", False)
    if fallback is not None and not (isinstance(fallback, str) and SLUG.fullmatch(fallback)):
        r.bad("slug_fallback", f"{fallback!r} is not a slug (lower-case letters and digits, words joined by '-')")
        fallback = None
    return ExtractLookup(lookup, column, tuple(sources), normalizer, key if key != normalizer else None, slug,
                         fallback or "item", _extra_columns(r), line=line)


def _child_column(r: _Reader, i: int, raw: Any) -> ChildColumn | None:
    if isinstance(raw, str):
        if IDENT.fullmatch(raw) and raw not in RESERVED:
            return ChildColumn(raw, raw)
        r.bad(f"columns[{i}]", f"{raw!r} is not a plain lower-case SQL name (reserved words excluded)")
        return None
    if not isinstance(raw, dict):
        r.bad(f"columns[{i}]", "a column name, or a table { parent, child, from, back, type, default, not_null }")
        return None
    cr = _Reader(r.problems, f"{r.place}, columns[{i}]", raw)
    cr.used = set()
    parent = cr.ident("parent")
    column = ChildColumn(parent, cr.ident("child", False, parent), cr.expr("from", False), cr.expr("back", False),
                         cr.sqltype("type", False), cr.expr("default", False), cr.maybe_flag("not_null"))
    cr.done()
    return column


def _extra_column(r: _Reader, i: int, raw: Any) -> ExtraColumn | None:
    if not isinstance(raw, dict):
        r.bad(f"extra_columns[{i}]", "a table { name, type, initial, default, not_null, unique }")
        return None
    er = _Reader(r.problems, f"{r.place}, extra_columns[{i}]", raw)
    er.used = set()
    column = ExtraColumn(er.ident("name"), er.sqltype("type") or "text", er.expr("initial", False),
                         er.expr("default", False), er.flag("not_null", False), er.flag("unique", False))
    er.done()
    return column


def _extra_columns(r: _Reader) -> tuple[ExtraColumn, ...]:
    raw = r._get("extra_columns", False)
    if isinstance(raw, list):
        return tuple(e for i, item in enumerate(raw) if (e := _extra_column(r, i, item)) is not None)
    if raw is not None:
        r.bad("extra_columns", "a list of { name, type, initial, default, not_null, unique } tables")
    return ()


def _split_child(r: _Reader, line: int) -> SplitChild:
    parent, child = r.ident("parent"), r.ident("child")
    raw = r._get("columns", True)
    columns: list[ChildColumn] = []
    if isinstance(raw, list) and raw:
        columns = [c for i, item in enumerate(raw) if (c := _child_column(r, i, item)) is not None]
    elif isinstance(raw, dict) and raw and all(IDENT.fullmatch(k) and isinstance(v, str) and IDENT.fullmatch(v)
                                               for k, v in raw.items()):
        columns = [ChildColumn(k, v) for k, v in raw.items()]
    elif raw is not None:
        r.bad("columns", "a list of the parent's column names (or { parent, child, from, back, ... } tables),"
                         " or a table { parent_column = \"child_column\" }")
    fk = r.ident("fk", False, f"{parent}_id"[:63] if parent else "")
    flag = r.ident("default_flag", False, "is_default")
    when = r.expr("when", False)
    active = r.ident("active_flag", False) or None
    return SplitChild(parent, child, tuple(columns), fk, flag, when, active, _extra_columns(r), line=line)


def _link(r: _Reader, line: int) -> LinkChildReference:
    table, reference, child, fk = r.ident("table"), r.ident("reference"), r.ident("child"), r.ident("fk")
    return LinkChildReference(table, reference, child, fk, r.ident("constraint", False, f"fk_{table}_{fk}"[:63]),
                              line=line)


def _derive(r: _Reader, line: int) -> DeriveColumn:
    return DeriveColumn(r.ident("table"), r.ident("column"), r.sqltype("column_type") or "", r.expr("from") or "",
                        r.ident("writes", False) or None, r.expr("back", False), line=line)


def _quarantine(r: _Reader, line: int) -> QuarantineRule:
    return QuarantineRule(r.ident("table"), r.ident("reason"), r.expr("when") or "", line=line)


def _check(r: _Reader, line: int) -> AddCheck:
    return AddCheck(r.ident("table"), r.ident("name"), r.expr("check") or "", r.idents("columns", False), line=line)


def _foreign_key(r: _Reader, line: int) -> AddForeignKey:
    table, name = r.ident("table"), r.ident("name")
    columns, references = r.idents("columns"), r.ident("references")
    ref_columns = r.idents("ref_columns", False)
    on_delete = r._get("on_delete", False) or "NO ACTION"
    if not isinstance(on_delete, str) or on_delete.upper() not in ON_DELETE:
        r.bad("on_delete", f"one of {', '.join(ON_DELETE)}")
        on_delete = "NO ACTION"
    if ref_columns and columns and len(ref_columns) != len(columns):
        r.bad("ref_columns", f"{len(ref_columns)} columns for {len(columns)} referencing columns")
    return AddForeignKey(table, name, columns, references, ref_columns, on_delete.upper(), line=line)


INDEX_ITEM = re.compile(r"^[a-z_][a-z0-9_]*( (ASC|DESC))?( NULLS (FIRST|LAST))?$", re.IGNORECASE)


def _index(r: _Reader, line: int) -> CreateIndex:
    table, name = r.ident("table"), r.ident("name")
    raw = r._get("columns", True)
    columns: tuple[str, ...] = ()
    if isinstance(raw, str):
        raw = [raw]
    if isinstance(raw, list) and raw and all(isinstance(c, str) and INDEX_ITEM.fullmatch(c.strip())
                                                    and c.split()[0] not in RESERVED for c in raw):
        columns = tuple(c.strip() for c in raw)
    elif raw is not None:
        r.bad("columns", "a list of column names, each optionally followed by ASC/DESC and NULLS FIRST/LAST")
    return CreateIndex(table, name, columns, r.flag("unique", False), r.expr("where", False),
                       r.idents("include", False), line=line)


def _sql(r: _Reader, line: int) -> RawSql:
    name, up = r.ident("name"), r.text("up")
    down = r.text("down", False) if "down" in r.data else r.text("down")  # required, may be empty
    check = r.expr("check") or ""
    complete, tables = r.text("complete", False), r.idents("tables", False)
    locks = r._get("locks", False)
    if locks is not None and not isinstance(locks, str):
        r.bad("locks", "must be a text saying what the SQL locks")
        locks = None
    return RawSql(name, up, down, check, complete, tables, locks or "", line=line)


READERS: dict[str, Callable[[_Reader, int], Operation]] = {
    "extract_lookup": _extract_lookup, "split_child": _split_child, "link_child_reference": _link,
    "derive_column": _derive, "quarantine_rule": _quarantine, "add_check": _check, "add_foreign_key": _foreign_key,
           "create_index": _index, "sql": _sql}


def _operation_lines(text: str) -> list[int]:
    return [i for i, line in enumerate(text.splitlines(), 1) if re.match(r"^\s*\[\[\s*operation\s*\]\]", line)]


def parse(text: str, path: str = "<plan>") -> PlanSpec:
    """The plan in `text`; PlanError listing every problem of shape."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PlanError(path, [Problem("file", f"not valid TOML: {exc}")]) from None
    problems: list[Problem] = []
    top = _Reader(problems, "file", data)
    top.used = set()
    name = top.ident("name", False, Path(path).stem if path else "plan") or "plan"
    version = top._get("version", False)
    if version is not None and (type(version) is not int or version != 1):
        top.bad("version", f"{version!r}: this tool reads plan files of version 1")
    functions = top._get("functions", False) or []
    if isinstance(functions, str):
        functions = [functions]
    if not isinstance(functions, list) or not all(isinstance(f, str) for f in functions):
        top.bad("functions", "a list of SQL texts (CREATE FUNCTION ...) the plan ships")
        functions = []
    monitoring = top.flag("monitoring", False)
    raw_ops = top._get("operation", True)
    top.done()
    lines = _operation_lines(text)
    ops: list[Operation] = []
    if raw_ops is not None and not isinstance(raw_ops, list):
        problems.append(Problem("operation", "must be an array of tables: [[operation]]"))
        raw_ops = []
    for i, raw in enumerate(raw_ops or [], 1):
        line = lines[i - 1] if i - 1 < len(lines) else 0
        kind = raw.get("type") if isinstance(raw, dict) else None
        place = f"operation {i} ({kind or '?'}" + (f", line {line})" if line else ")")
        if kind not in READERS:
            problems.append(Problem(place, f"type {kind!r}: one of {', '.join(OPERATIONS)}"))
            continue
        r = _Reader(problems, place, raw)
        ops.append(READERS[kind](r, line))
        r.done()
    if raw_ops == []:
        problems.append(Problem("operation", "the plan has no operation"))
    if problems:
        raise PlanError(path, problems)
    return PlanSpec(name, tuple(ops), path, text, tuple(functions), monitoring)


def load(path: str | Path) -> PlanSpec:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PlanError(str(path), [Problem("file", f"cannot be read: {exc.__class__.__name__}: {exc}")]) from None
    return parse(text, str(path))


def place(op: Operation, index: int) -> str:
    return f"operation {index} ({op.kind}" + (f", line {op.line})" if op.line else ")")
