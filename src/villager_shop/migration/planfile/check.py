"""A plan checked against the live database before it runs: every problem, each placed in the file.

spec.py reads the shape of a plan; this module asks the database whether the plan can run on it:
the tables it works on exist in schema public as ordinary tables with a single-column primary key,
outside partitioning and inheritance, the columns exist with a type that fits (a moved column's
type has an equality operator), no constraint or index the plan adds uses a column it moves away,
the names the plan creates (its operations' own indexes too) are free (or are what this very plan
created on an earlier, interrupted run), the operations come in an order that can run, the
functions it names exist (a lookup's key IMMUTABLE), its SQL expressions parse and use only the
table's columns, a link's reference is a foreign key, and no row-level security hides rows from
the migrating role.

The plan is walked in order over a model of the schema: the database's tables, plus what each
operation creates, so that an operation may use a table or column an earlier one created and not
one that only a later one does. Everything runs in one read-only transaction that is rolled back:
catalog queries, and an `EXPLAIN` of every expression (in a savepoint of its own, so that one bad
expression does not hide the next)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from villager_shop.migration import state
from villager_shop.migration.planfile import catalog as planfile_catalog
from villager_shop.migration.planfile.assemble import assemble, row_triggers_before
from villager_shop.migration.planfile.monitoring import OBJECTS as MONITORING_OBJECTS
from villager_shop.migration.planfile.normalizers import shipped_sql
from villager_shop.migration.planfile.spec import (
    IDENT,
    RESERVED,
    AddCheck,
    AddForeignKey,
    CreateIndex,
    DeriveColumn,
    ExtraColumn,
    ExtractLookup,
    LinkChildReference,
    Operation,
    PlanError,
    PlanSpec,
    Problem,
    QuarantineRule,
    RawSql,
    SplitChild,
    columns_created,
    load,
    place,
)
from villager_shop.migration.planfile.steps import Trigger, V
from villager_shop.migration.preflight import ROW_SECURITY
from villager_shop.migration.steps.rebuild import INELIGIBLE, OWN_RELATIONS

RELKINDS = {"r": "table", "p": "partitioned table", "v": "view", "m": "materialized view", "f": "foreign table",
            "i": "index", "I": "partitioned index", "S": "sequence", "c": "composite type", "t": "TOAST table"}

# How long one EXPLAIN may wait for a lock on its table (an ALTER TABLE in progress) or run.
LOCK_TIMEOUT = "2s"
STATEMENT_TIMEOUT = "10s"
_UNVALIDATED = """
SELECT conname, pg_get_expr(conbin, conrelid) FROM pg_constraint
 WHERE conrelid = to_regclass(%s) AND contype = 'c' AND NOT convalidated ORDER BY conname
"""
# How long `migrate plan` looks for values a new unique index or column would repeat.
REPEATS_TIMEOUT = "2s"


@dataclass(frozen=True)
class Col:
    type: str  # format_type(), usable in a cast: 'numeric(8,2)'
    base: int  # the type's oid, a domain's base type's
    category: str  # pg_type.typcategory of the base type: 'S' string, 'N' numeric, 'U' user (uuid), ...
    generated: bool = False  # a generated column: computed from others, so it cannot move
    # Its collation, when that is nondeterministic (values it takes as equal may differ: 'a', 'A').
    loose_collation: str | None = None


UUID = Col("uuid", 2950, "U")
# A reference of another type than its parent's key that PostgreSQL compares (and indexes) with it
# as it is: smallint, integer, bigint; text and varchar (not char: its blanks do not count).
COMPARABLE_INTEGERS, COMPARABLE_TEXTS = {20, 21, 23}, {25, 1043}
TEXT = Col("text", 25, "S")
BOOLEAN = Col("boolean", 16, "B")
TIMESTAMPTZ = Col("timestamp with time zone", 1184, "D")


@dataclass
class Table:
    name: str
    columns: dict[str, Col]
    pk: tuple[str, ...] = ()
    unique: list[frozenset[str]] = field(default_factory=list)  # column sets of unique indexes (with the pk)
    created_by: int = 0  # the operation that creates it; 0: it exists in the database


@dataclass(frozen=True)
class Catalog:
    """What the checks need of the database, read at once."""

    relations: dict[str, str]  # name -> relkind, for every relation of schema public
    tables: dict[str, Table]  # tables, views, ... of schema public with their columns
    constraints: dict[str, set[str]]  # table -> its constraints' names
    references: dict[tuple[str, str], tuple[str, tuple[str, ...]]]  # (table, column) -> (table, columns) it references
    recorded_plan: str | None  # the plan recorded in villager_migration.state (key 'plan'), if any
    # Ordinary tables that are partitions, inherit or are inherited from -> which (the ADD COLUMN of
    # a partition fails, and a parent's statements reach rows its children's triggers never see).
    hierarchy: dict[str, str] = field(default_factory=dict)
    indexes: dict[str, tuple[str, tuple[str, ...]]] = field(default_factory=dict)  # plain index -> table, columns


_MONITORING_OBJECTS = """
SELECT c.relname, CASE c.relkind WHEN 'v' THEN 'view' WHEN 'm' THEN 'materialized view' WHEN 'r' THEN 'table'
       WHEN 'i' THEN 'index' ELSE 'relation' END
  FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace AND c.relname = ANY(%s)
UNION ALL
SELECT DISTINCT p.proname, 'function' FROM pg_proc p WHERE p.pronamespace = 'public'::regnamespace AND p.proname = ANY(%s)
"""

_RELATIONS = """
SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'public'
"""

_COLUMNS = """
SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), bt.oid::int, bt.typcategory,
       a.attgenerated <> '', CASE WHEN NOT co.collisdeterministic THEN co.collname END
  FROM pg_attribute a
  LEFT JOIN pg_collation co ON co.oid = a.attcollation
  JOIN pg_class c ON c.oid = a.attrelid
  JOIN pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_type t ON t.oid = a.atttypid
  JOIN pg_type bt ON bt.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
 WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm', 'f') AND a.attnum > 0 AND NOT a.attisdropped
 ORDER BY c.relname, a.attnum
"""

_UNIQUE = """
SELECT c.relname, i.indisprimary,
       array(SELECT a.attname FROM unnest(i.indkey::int2[]) WITH ORDINALITY k(num, ord)
               JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.num
              WHERE k.ord <= i.indnkeyatts ORDER BY k.ord)
  FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'public' AND i.indisunique AND i.indpred IS NULL AND i.indexprs IS NULL
"""

_HIERARCHY = """
SELECT c.relname, CASE
  WHEN c.relispartition THEN 'is a partition of ' || (SELECT string_agg(i.inhparent::regclass::text, ', ')
                                                        FROM pg_inherits i WHERE i.inhrelid = c.oid)
  WHEN EXISTS (SELECT FROM pg_inherits i WHERE i.inhrelid = c.oid)
    THEN 'inherits from ' || (SELECT string_agg(i.inhparent::regclass::text, ', ') FROM pg_inherits i
                               WHERE i.inhrelid = c.oid)
  ELSE 'has inheritance children (' || (SELECT string_agg(i.inhrelid::regclass::text, ', ' ORDER BY 1)
                                         FROM pg_inherits i WHERE i.inhparent = c.oid) || ')' END
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'public' AND c.relkind = 'r'
   AND (c.relispartition OR EXISTS (SELECT FROM pg_inherits i WHERE i.inhrelid = c.oid OR i.inhparent = c.oid))
"""

_INDEXES = """
SELECT x.relname, c.relname,
       array(SELECT a.attname FROM unnest(i.indkey::int2[]) WITH ORDINALITY k(num, ord)
               JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.num ORDER BY k.ord)
  FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid JOIN pg_class x ON x.oid = i.indexrelid
  JOIN pg_namespace n ON n.oid = x.relnamespace
 WHERE n.nspname = 'public' AND i.indisvalid AND i.indpred IS NULL AND i.indexprs IS NULL
   AND i.indnkeyatts = i.indnatts
"""

_CONSTRAINTS = """
SELECT c.relname, con.conname FROM pg_constraint con
  JOIN pg_class c ON c.oid = con.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'public'
"""

_FOREIGN_KEYS = """
SELECT c.relname, a.attname, CASE WHEN rn.nspname = 'public' THEN '' ELSE rn.nspname || '.' END || rc.relname,
       array(SELECT ra.attname FROM unnest(con.confkey) WITH ORDINALITY k(num, ord)
               JOIN pg_attribute ra ON ra.attrelid = con.confrelid AND ra.attnum = k.num ORDER BY k.ord)
  FROM pg_constraint con
  JOIN pg_class c ON c.oid = con.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = con.conkey[1]
  JOIN pg_class rc ON rc.oid = con.confrelid JOIN pg_namespace rn ON rn.oid = rc.relnamespace
 WHERE n.nspname = 'public' AND con.contype = 'f' AND cardinality(con.conkey) = 1
"""

_FUNCTIONS = """
SELECT p.oid::regprocedure::text, format_type(p.prorettype, NULL),
       p.prokind = 'f' AND p.pronargs - p.pronargdefaults <= 1 AND p.pronargs >= 1
       AND p.proargtypes[0] = 'text'::regtype AND p.prorettype = 'text'::regtype AND NOT p.proretset,
       p.provolatile = 'i'
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = %s AND p.proname = %s
 ORDER BY 1
"""

_TYPE = """
SELECT bt.oid::int, bt.typcategory FROM pg_type t
  JOIN pg_type bt ON bt.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
 WHERE t.oid = to_regtype(%s)
"""

# Enabled BEFORE row triggers on INSERT or UPDATE of a table, not the migration's, whose names sort
# after a given one (PostgreSQL fires them in that order, byte by byte).
_LATER_TRIGGERS = """
SELECT t.tgname FROM pg_trigger t JOIN pg_proc f ON f.oid = t.tgfoid
 WHERE t.tgrelid = %s::regclass AND NOT t.tgisinternal AND t.tgenabled <> 'D'
   AND t.tgtype & 1 = 1 AND t.tgtype & 2 = 2 AND t.tgtype & (4 | 16) <> 0
   AND f.pronamespace NOT IN (SELECT oid FROM pg_namespace WHERE nspname = 'villager_migration')
   AND t.tgname::text COLLATE "C" > %s::text COLLATE "C"
 ORDER BY t.tgname::text COLLATE "C"
"""

_SHIPPED = re.compile(r'CREATE\s+(?:OR\s+REPLACE\s+)?FUNCTION\s+"?([A-Za-z_][\w$]*)"?\s*\.\s*"?([A-Za-z_][\w$]*)"?\s*\(',
                      re.IGNORECASE)
_IMMUTABLE = re.compile(r"\bIMMUTABLE\b", re.IGNORECASE)
_LITERAL = re.compile(r"'(?:[^']|'')*'")
_CALL = re.compile(r"([A-Za-z_][\w$]*)\s*\(")
_WORD = re.compile(r'"([^"]+)"|([A-Za-z_][A-Za-z0-9_$]*)')


def read_catalog(conn: psycopg.Connection[Any]) -> Catalog:
    relations = {name: kind for name, kind in conn.execute(_RELATIONS).fetchall()}
    tables: dict[str, Table] = {}
    for rel, col, typ, base, category, generated, loose in conn.execute(_COLUMNS).fetchall():
        tables.setdefault(rel, Table(rel, {})).columns[col] = Col(typ, base, category, bool(generated), loose)
    for rel, primary, cols in conn.execute(_UNIQUE).fetchall():
        if rel in tables:
            tables[rel].unique.append(frozenset(cols))
            if primary:
                tables[rel].pk = tuple(cols)
    constraints: dict[str, set[str]] = {}
    for rel, name in conn.execute(_CONSTRAINTS).fetchall():
        constraints.setdefault(rel, set()).add(name)
    references = {(rel, col): (target, tuple(cols)) for rel, col, target, cols in conn.execute(_FOREIGN_KEYS).fetchall()}
    hierarchy = {rel: what for rel, what in conn.execute(_HIERARCHY).fetchall()}
    indexes = {name: (rel, tuple(cols)) for name, rel, cols in conn.execute(_INDEXES).fetchall()}
    return Catalog(relations, tables, constraints, references, _recorded_plan(conn), hierarchy, indexes)


def _recorded_plan(conn: psycopg.Connection[Any]) -> str | None:
    """The name of the plan the database's migration state records (a string, or an object with 'name');
    None once it was rolled back (its objects are gone: one of its names found now is someone else's)."""
    try:
        with conn.transaction():
            value = state.get(conn, "plan")
            if state.phase(conn) == "rolled_back":
                return None
    except psycopg.Error:  # a role that may not read the state: no resumed run can be recognised
        return None
    if isinstance(value, dict):
        value = value.get("name")
    return value if isinstance(value, str) else None


def check(conn: psycopg.Connection[Any], spec: PlanSpec) -> list[Problem]:
    """Every problem that keeps `spec` from running on the database of `conn`, in plan order.

    Read-only: one transaction (a savepoint if `conn` is already in one), read-only and rolled back."""
    with conn.transaction(force_rollback=True):
        conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
        conn.execute(f"SET LOCAL statement_timeout = '{STATEMENT_TIMEOUT}'")
        problems = _install_functions(conn, spec)
        conn.execute("SET LOCAL transaction_read_only = on")
        return problems + _Checker(conn, spec, read_catalog(conn)).run()


def load_and_check(conn: psycopg.Connection[Any], path: str) -> tuple[PlanSpec | None, list[Problem]]:
    """The plan file at `path` and every problem that keeps it from running on the database of
    `conn` (a file of the wrong shape: its shape's problems, and no plan)."""
    try:
        spec = load(path)
    except PlanError as exc:
        return None, exc.problems
    return spec, check(conn, spec)


def _install_functions(conn: psycopg.Connection[Any], spec: PlanSpec) -> list[Problem]:
    """The normalizers and the plan's own functions, created in the check's transaction (rolled back)
    as the run creates them before any operation: a condition or expression may call them."""
    problems: list[Problem] = []
    if not spec.functions:
        return problems
    try:
        with conn.transaction():
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {V}")
            utf8 = conn.execute("SELECT current_setting('server_encoding') = 'UTF8'").fetchone()
            conn.execute(shipped_sql(bool(utf8 and utf8[0])).encode())
    except psycopg.Error as exc:
        return [Problem("functions", f"cannot be checked: {_one_line(exc)}")]
    for i, text in enumerate(spec.functions):
        try:
            with conn.transaction():
                conn.execute(text.encode())
        except psycopg.Error as exc:
            problems.append(Problem(f"functions[{i}]", f"does not run: {_one_line(exc)}"))
    return problems


def _operation_number(problem: Problem) -> int:
    found = re.match(r"operation (\d+) ", problem.place)
    return int(found.group(1)) if found else 0


def _words(expr: str) -> list[str]:
    """The names an SQL expression uses (string literals left out)."""
    return [q or w.lower() for q, w in _WORD.findall(_LITERAL.sub("''", expr))]


# String types whose equality is the text's: citext, say, takes 'Rome' and 'ROME' as equal.
EXACT_TEXT = frozenset({25, 1043, 1042, 19})  # text, varchar, char, name


def _loose(col: Col) -> str:
    """What makes a string column's equality looser than its values."""
    if col.loose_collation:
        return f"has the nondeterministic collation {col.loose_collation}"
    return f"is {col.type}, whose equality is not text's"


def _a(noun: str) -> str:
    return f"{'an' if noun[:1] in 'aeiou' else 'a'} {noun}"


def _one_line(exc: psycopg.Error) -> str:
    diag = exc.diag
    text = diag.message_primary or str(exc).strip().splitlines()[0]
    if diag.message_hint:
        text += f" ({diag.message_hint.rstrip('.')})"
    return " ".join(text.split())


class _Checker:
    def __init__(self, conn: psycopg.Connection[Any], spec: PlanSpec, cat: Catalog) -> None:
        self.conn, self.spec, self.cat = conn, spec, cat
        self.problems: list[Problem] = []
        self.resumed = cat.recorded_plan is not None and cat.recorded_plan == spec.name
        # What the plan creates, anywhere in it (to tell "created later" from "does not exist").
        self.plan_tables: dict[str, int] = {}
        self.plan_columns: dict[tuple[str, str], int] = {}
        for i, op in enumerate(spec.operations, 1):
            for t in self._tables_created(op):
                self.plan_tables.setdefault(t, i)
            for tc in columns_created(op):
                self.plan_columns.setdefault(tc, i)
        # The schema so far, as the walk reaches each operation.
        self.model: dict[str, Table] = {}
        self.children: dict[str, tuple[int, SplitChild]] = {}
        self.created_relations: dict[str, tuple[int, str]] = {}  # name -> (operation, what)
        self.created_columns: dict[tuple[str, str], str] = {}  # (table, column) -> where
        self.created_constraints: dict[tuple[str, str], str] = {}
        self.moved: dict[tuple[str, str], str] = {}  # columns an extract/split moves away (complete drops them)
        self.first_use: dict[str, str] = {}  # existing table -> where the plan first names it
        self.table_said: set[str] = set()
        # Tables that are not there, and those the plan would make from them: an operation that
        # names one reports only that, not what follows from a table it cannot see.
        self.unseen: set[str] = set()
        self.blind = False
        # The plan's own functions -> whether declared IMMUTABLE (a lookup key is a generated column).
        self.shipped = {f"{s}.{n}".lower(): bool(_IMMUTABLE.search(text))
                        for text in spec.functions for s, n in _SHIPPED.findall(text)}
        self.reasons: dict[tuple[str, str], str] = {}  # (table, quarantine reason) -> where
        self.looked_up: set[tuple[str, str]] = set()  # (table, reference) of the links so far
        self.implied: dict[str, tuple[str, tuple[str, ...]]] = {}  # index an operation builds -> table, columns
        self.uses: list[tuple[str, str, str, str]] = []  # (where, table, column, what): constraints and indexes
        self.instead_said: set[str] = set()  # tables whose INSTEAD rules are said (once)

    # --- what each operation creates -----------------------------------------------------------

    @staticmethod
    def _tables_created(op: Operation) -> list[str]:
        if isinstance(op, ExtractLookup):
            return [op.lookup]
        if isinstance(op, SplitChild):
            return [op.child]
        return []

    # --- helpers ---------------------------------------------------------------------------------

    def bad(self, where: str, message: str) -> None:
        self.problems.append(Problem(where, message))

    def _recorded(self) -> str:
        if self.cat.recorded_plan and not self.resumed:
            return f" (the database records plan {self.cat.recorded_plan!r}, not {self.spec.name!r})"
        return ""

    def table(self, i: int, where: str, name: str) -> Table | None:
        """The table `name` as operation i sees it, or None (and a problem) when it cannot use it."""
        if name in self.unseen:
            self.blind = True
        if name in self.model:
            return self.model[name]
        if name in self.plan_tables and (self.resumed or name not in self.cat.relations):
            self.bad(where, f"table {name} is created only by operation {self.plan_tables[name]}, which comes later")
            return None
        kind = self.cat.relations.get(name)
        said = name in self.table_said
        self.table_said.add(name)
        if kind is None:
            self.unseen.add(name)
            self.blind = True
            if not said:
                self.bad(where, f"there is no table public.{name}")
            return None
        if kind != "r":
            if not said:
                self.bad(where, f"public.{name} is {_a(RELKINDS.get(kind, kind))}, not an ordinary table")
            return None
        if name in self.cat.hierarchy:
            if not said:
                self.bad(where, f"table {name} {self.cat.hierarchy[name]}; the plan works on ordinary tables"
                                " outside partitioning and inheritance")
            return None
        found = self.cat.tables.get(name) or Table(name, {})
        t = self.model[name] = Table(name, dict(found.columns), found.pk, list(found.unique))
        self.first_use.setdefault(name, where)
        if not said:
            if not t.pk:
                self.bad(where, f"table {name} has no primary key; the plan needs one of a single column")
            elif len(t.pk) > 1:
                self.bad(where, f"table {name} has a primary key of {len(t.pk)} columns ({', '.join(t.pk)});"
                                " the plan needs one of a single column")
            elif not IDENT.fullmatch(t.pk[0]) or t.pk[0] in RESERVED:
                self.bad(where, f"table {name}'s primary key {t.pk[0]!r} is not a plain lower-case SQL name;"
                                " the generated SQL writes it unquoted")
        return t

    def column(self, i: int, where: str, t: Table, name: str) -> Col | None:
        if self._later(i, t, name):
            k = self.plan_columns[(t.name, name)]
            self.bad(where, f"column {t.name}.{name} is created only by operation {k}, which comes later")
            return None
        col = t.columns.get(name)
        if col is None:
            self.bad(where, f"table {t.name} has no column {name}")
        return col

    def _later(self, i: int, t: Table, name: str) -> bool:
        """Whether column `name` of `t` is one that only an operation after operation i creates (a column
        of the database's that a later operation would create again is its collision, said there)."""
        k = self.plan_columns.get((t.name, name), 0)
        if k < i or (t.name, name) in self.created_columns:
            return False
        return self.resumed or t.created_by > 0 or name not in self._db_columns(t)

    def _db_columns(self, t: Table) -> dict[str, Col]:
        found = self.cat.tables.get(t.name) if not t.created_by and self.cat.relations.get(t.name) == "r" else None
        return found.columns if found is not None else {}

    def move(self, where: str, table: str, column: str) -> None:
        """An extract or split takes `column` away from `table` (complete drops it): only once."""
        before = self.moved.get((table, column))
        if before:
            self.bad(where, f"{table}.{column} is already moved by {before}; complete drops it, so no operation"
                            " can move it again")
        else:
            self.moved[(table, column)] = where

    def creates_relation(self, i: int, where: str, name: str, what: str, implied: str = "") -> bool:
        """Whether the name is free for what operation i creates (else a problem says why not).
        `implied`: the object is not named in the file (an operation's own index), said so."""
        before = self.created_relations.get(name)
        if before:
            self.bad(where, f"{implied}operation {before[0]} creates {_a(before[1])} named {name} too")
            return False
        self.created_relations[name] = (i, what)
        kind = self.cat.relations.get(name)
        if kind is not None and not (self.resumed and kind == ("i" if what == "index" else "r")):
            self.bad(where, f"{implied}public.{name} already exists ({_a(RELKINDS.get(kind, kind))}){self._recorded()}")
            return False
        return True

    def implied_index(self, i: int, where: str, table: str, columns: tuple[str, ...]) -> None:
        """The index an operation builds for a new reference or foreign key (named as assemble names
        it): a name taken by another object is a problem. An index of the database on exactly these
        columns is the operation's already (it builds none, and rollback leaves it)."""
        if any(p.place == where for p in self.problems):
            return  # its column is a problem already (created twice, or there already)
        name = f"idx_{table}_{'_'.join(columns)}"[:63]
        if self.implied.get(name) == (table, columns):
            return  # another operation's index on the same columns serves this one too (built once)
        self.implied[name] = (table, columns)
        if self.cat.indexes.get(name) == (table, columns) and name not in self.created_relations:
            self.created_relations[name] = (i, "index")
            return
        self.creates_relation(i, where, name, "index", f"the index this operation builds on {table} ({', '.join(columns)}): ")

    def uses_columns(self, where: str, t: Table, columns: list[str], what: str) -> None:
        """A constraint or index over these columns of `t`: checked at the end against the moved ones."""
        self.uses += [(where, t.name, c, what) for c in dict.fromkeys(columns) if c in t.columns]

    def moved_away(self) -> None:
        """Constraints and indexes the plan adds over a column that an extract or split moves: complete
        drops the column and them with it (verify then misses them), or refuses over the plan's own guard."""
        said = {p.place for p in self.problems}
        for where, table, column, what in self.uses:
            moved = self.moved.get((table, column))
            if moved and moved not in said:  # a column that cannot move (a problem said there) is not moved
                self.bad(where, f"uses {table}.{column}, which {moved} moves away: `complete` drops the column and"
                                f" this {what} with it; put the {what} on the new table or column instead")

    def creates_column(self, where: str, t: Table, name: str, col: Col) -> bool:
        """False when the name is taken (its constraint's name would only repeat the problem)."""
        before = self.created_columns.get((t.name, name))
        if before:
            self.bad(where, f"{before} adds a column {t.name}.{name} too")
            return False
        self.created_columns[(t.name, name)] = where
        found = self._db_columns(t).get(name)
        if found is not None:
            if not self.resumed:
                self.bad(where, f"table {t.name} already has a column {name}{self._recorded()}")
                return False  # the column stays the database's
            if found.base != col.base:
                self.bad(where, f"{t.name}.{name} exists as {found.type}, not the {col.type} this plan creates")
        t.columns[name] = col
        return True

    def creates_constraint(self, where: str, t: Table, name: str) -> None:
        before = self.created_constraints.get((t.name, name))
        if before:
            self.bad(where, f"{before} adds a constraint {name} to {t.name} too")
            return
        self.created_constraints[(t.name, name)] = where
        if not t.created_by and name in self.cat.constraints.get(t.name, set()) and not self.resumed:
            self.bad(where, f"table {t.name} already has a constraint {name}{self._recorded()}")

    def new_table(self, i: int, p: str, key: str, name: str, columns: list[tuple[str, str, Col]],
                  unique: list[str]) -> Table:
        """A table operation i creates: `columns` as (key in the plan, name, type), the first its id."""
        free = self.creates_relation(i, f"{p}, {key}", name, "table")
        t = Table(name, {}, (columns[0][1],), [frozenset([c]) for c in [columns[0][1], *unique]], created_by=i)
        seen: dict[str, str] = {}
        for k, col, typ in columns:
            if len(col) > 63:
                self.bad(f"{p}, {k}", f"the column name {col} is longer than 63 characters")
            if col in seen:
                self.bad(f"{p}, {k}", f"the new table {name} would have two columns {col} ({seen[col]} and {k})")
                continue
            seen[col] = "its id" if k == "id" else k
            t.columns[col] = typ
        if free:  # else the name stays what it was: a table of the database's, or of an earlier operation
            self.model[name] = t
        return t

    def function(self, where: str, name: str, immutable: bool = False) -> None:
        """A normalizer or key naming `schema.fn`: fn(text) RETURNS text, in the plan or the database;
        `immutable`: declared so (a lookup's key column is generated from it)."""
        if "." not in name:
            return
        not_immutable = (f"{name} is not declared IMMUTABLE: the lookup's key column is generated from it, which"
                         " PostgreSQL allows only for an IMMUTABLE function")
        if name.lower() in self.shipped:
            if immutable and not self.shipped[name.lower()]:
                self.bad(where, not_immutable)
            return
        schema, fn = name.split(".", 1)
        rows = self.conn.execute(_FUNCTIONS, (schema, fn)).fetchall()
        if not rows:
            self.bad(where, f"there is no function {name}, and the plan's functions do not create it")
        elif not any(ok for _, _, ok, _ in rows):
            found = "; ".join(f"{sig} RETURNS {ret}" for sig, ret, _, _ in rows)
            self.bad(where, f"{name} must take text and return text; the database has {found}")
        elif immutable and not any(ok and fixed for _, _, ok, fixed in rows):
            self.bad(where, not_immutable)

    def expression(self, i: int, where: str, t: Table | None, expr: str, *, value: str | None = None,
                   only: tuple[str, ...] | None = None) -> None:
        """`expr` parses as a condition on the rows of `t` (or, given `value`, as a value of that type) and
        uses only its columns - or, given `only`, only those (EXPLAIN, rolled back)."""
        if t is None or not expr:
            return
        words = set(_words(expr))
        if "select" in words:
            self.bad(where, "uses a subquery; the expression may use only the columns of its table")
            return
        if only is not None:
            other = sorted(w for w in words if w in t.columns and w not in only)
            if other:
                self.bad(where, f"uses {', '.join(other)}; it may use only {', '.join(only)}")
                return
        later = sorted(w for w in words if self._later(i, t, w))
        if later:
            self.bad(where, f"uses {', '.join(later)}, created only by operation "
                            f"{self.plan_columns[(t.name, later[0])]}, which comes later")
            return
        in_db = self.cat.tables.get(t.name) if not t.created_by and self.cat.relations.get(t.name) == "r" else None
        extra = [(c, col) for c, col in t.columns.items() if in_db is None or c not in in_db.columns]
        rel = sql.Identifier(t.name)
        if in_db is not None and not extra:
            source: sql.Composable = sql.SQL("public.{}").format(rel)
        else:  # columns (or a table) an earlier operation creates: typed NULLs in their place
            items: list[sql.Composable] = [sql.SQL("NULL::{} AS {}").format(sql.SQL(col.type), sql.Identifier(c)) for c, col in extra]
            if in_db is not None:
                items.insert(0, sql.SQL("t.*"))
            source = sql.SQL("(SELECT {} {}) AS {}").format(
                sql.SQL(", ").join(items), sql.SQL("FROM public.{} t").format(rel) if in_db is not None else sql.SQL(""),
                rel)
        if value is None:
            query = sql.SQL("EXPLAIN SELECT 1 FROM {} WHERE ({})").format(source, sql.SQL(expr))
        else:
            query = sql.SQL("EXPLAIN SELECT ({})::{} FROM {}").format(sql.SQL(expr), sql.SQL(value), source)
        try:
            with self.conn.transaction():
                self.conn.execute(query)
        except psycopg.Error as exc:
            what = "a condition" if value is None else f"a value of type {value}"
            self.bad(where, f"does not run as {what} on {t.name}: {_one_line(exc)}")

    def sqltype(self, where: str, name: str) -> Col | None:
        """The type a plan names for a new column, as the database knows it."""
        try:
            with self.conn.transaction():
                row = self.conn.execute(_TYPE, (name,)).fetchone()
        except psycopg.Error as exc:
            self.bad(where, f"{name!r} is not a type: {_one_line(exc)}")
            return None
        if row is None:
            self.bad(where, f"there is no type {name}")
            return None
        return Col(name, row[0], row[1])

    # --- the walk --------------------------------------------------------------------------------

    def run(self) -> list[Problem]:
        for i, op in enumerate(self.spec.operations, 1):
            p, before, self.blind = place(op, i), len(self.problems), False
            self._operation(i, p, op)
            if self.blind:
                self.unseen.update(self._tables_created(op))
                self.problems[before:] = [q for q in self.problems[before:]
                                          if q.message.startswith("there is no table")]
        self.moved_away()
        self.unvalidated_checks()
        self.monitoring()
        self.problems.sort(key=_operation_number)  # those found after the walk, in their place too
        self.row_security()
        if not self.problems:
            self.assembles()
        return self.problems

    def _operation(self, i: int, p: str, op: Operation) -> None:
        if isinstance(op, ExtractLookup):
            self.extract_lookup(i, p, op)
        elif isinstance(op, SplitChild):
            self.split_child(i, p, op)
        elif isinstance(op, LinkChildReference):
            self.link(i, p, op)
        elif isinstance(op, DeriveColumn):
            self.derive_column(i, p, op)
        elif isinstance(op, QuarantineRule):
            self.quarantine(i, p, op)
        elif isinstance(op, AddCheck):
            self.add_check(i, p, op)
        elif isinstance(op, AddForeignKey):
            self.add_foreign_key(i, p, op)
        elif isinstance(op, CreateIndex):
            self.create_index(i, p, op)
        elif isinstance(op, RawSql):
            for j, name in enumerate(op.tables):
                self.table(i, f"{p}, tables[{j}]", name)

    def unvalidated_checks(self) -> None:
        """PostgreSQL checks a table's CHECK constraints on every row an UPDATE writes, `NOT VALID`
        ones too: the in-place backfill of a lookup reference, a derived column or a link (a table
        that cannot be rebuilt) would stop at the first legacy row that violates one (as would the
        old application's own update of it)."""
        updated: list[tuple[str, str, str]] = []  # (table, where, the rows it updates)
        for i, op in enumerate(self.spec.operations, 1):
            if isinstance(op, ExtractLookup):
                updated += [(s.table, f"{place(op, i)}, sources[{j}].table", f"{s.column} IS NOT NULL")
                            for j, s in enumerate(op.sources)]
            elif isinstance(op, DeriveColumn):
                updated.append((op.table, f"{place(op, i)}, table", "true"))
            elif isinstance(op, LinkChildReference) and self._in_place(op.table):
                updated.append((op.table, f"{place(op, i)}, table", f"{op.reference} IS NOT NULL"))
        said: set[tuple[str, str]] = set()
        for table, where, walked in updated:
            if self.cat.relations.get(table) != "r" or self.resumed or not IDENT.fullmatch(walked.split()[0]):
                continue
            for name, expr in self.conn.execute(_UNVALIDATED, (f"public.{table}",)).fetchall():
                key = None if (table, name) in said else self.violating(table, f"NOT ({expr}) AND {walked}")
                if key is not None:
                    said.add((table, name))
                    self.bad(where, f"{table} row {key} violates its NOT VALID check {name}: the backfill's"
                                    f" update of that row would fail; fix such rows or drop {name} first")

    def _in_place(self, table: str) -> bool:
        """Whether a link's backfill updates `table` in place rather than filling a copy of it."""
        t = self.cat.tables.get(table)
        if t is None or len(t.pk) != 1 or self.cat.relations.get(table) != "r":
            return False
        return table in OWN_RELATIONS or self.conn.execute(
            INELIGIBLE, (t.pk[0], f"public.{table}")).fetchone()[0] is not None  # type: ignore[index]

    def violating(self, table: str, condition: str) -> str | None:
        """The key of a row of `table` that meets `condition`; None when there is none, or when
        finding out takes longer than REPEATS_TIMEOUT (the run then stops at that row, naming it)."""
        t = self.cat.tables.get(table)
        key = t.pk[0] if t is not None and len(t.pk) == 1 else "ctid"
        return self._first_within_timeout(f"SELECT {key}::text FROM public.{table} WHERE {condition} LIMIT 1")

    def _first_within_timeout(self, query: str, hashed: bool = False) -> str | None:
        """The first value `query` returns, as text; None when it returns none, fails (an expression
        another check reports) or runs longer than REPEATS_TIMEOUT. The check's own statement timeout
        is given back: a released savepoint keeps a SET LOCAL made in it."""
        before, sort = self.conn.execute(  # type: ignore[misc]
            "SELECT current_setting('statement_timeout'), current_setting('enable_sort')").fetchone()
        try:
            with self.conn.transaction():
                self.conn.execute(f"SET LOCAL statement_timeout = '{REPEATS_TIMEOUT}'")
                if hashed:
                    self.conn.execute("SET LOCAL enable_sort = off")
                row = self.conn.execute(query.encode()).fetchone()
        except psycopg.Error:
            return None
        finally:
            self.conn.execute("SELECT set_config('statement_timeout', %s, true), set_config('enable_sort', %s, true)",
                              (before, sort))
        return None if row is None else str(row[0])

    def assembles(self) -> None:
        """The steps the plan makes, built as `migrate run` builds them: two that would share a name
        (names cut at 63 characters) are a problem of the file, not an internal error."""
        try:
            found = planfile_catalog.read(self.conn, self.spec.tables())
            assemble(self.spec, found)
        except ValueError as exc:
            self.bad("file", f"{exc} (shorten or change the names)")
            return
        self.triggers_after_ours(row_triggers_before(self.spec, found))

    def triggers_after_ours(self, ours: list[tuple[int, Trigger]]) -> None:
        """A table's own BEFORE row trigger that PostgreSQL fires after the plan's (in name order)
        could change a value the plan's trigger has already carried to the new column: the two would
        differ, and `complete` would keep the new one."""
        for i, trig in ours:
            later = self.conn.execute(_LATER_TRIGGERS, (f"public.{trig.table}", trig.name)).fetchall()
            if not later:
                continue
            op = self.spec.operations[i - 1]
            key = "table"
            if isinstance(op, ExtractLookup):
                key = next(f"sources[{j}].table" for j, s in enumerate(op.sources) if s.table == trig.table)
            names = ", ".join(str(n) for (n,) in later)
            self.bad(f"{place(op, i)}, {key}",
                     f"{trig.table} has BEFORE row triggers of its own that fire after the plan's {trig.name}"
                     f" (in name order): {names}; a value they set would not reach the new column. Rename them"
                     f" to sort before {trig.name!r}")

    def quarantine(self, i: int, p: str, op: QuarantineRule) -> None:
        t = self.table(i, f"{p}, table", op.table)
        before = self.reasons.setdefault((op.table, op.reason), p)
        if before != p:
            self.bad(f"{p}, reason", f"{before} quarantines {op.table} rows as {op.reason} too; each rule of a"
                                     " table needs its own reason")
        self.expression(i, f"{p}, when", t, op.when)

    def extract_lookup(self, i: int, p: str, op: ExtractLookup) -> None:
        sources: list[Table | None] = []
        for j, s in enumerate(op.sources):
            t = self.table(i, f"{p}, sources[{j}].table", s.table)
            sources.append(t)
            self.instead_rules(f"{p}, sources[{j}].table", t)
            if t is None:
                continue
            where = f"{p}, sources[{j}].column"
            col = self.column(i, where, t, s.column)
            if col is not None and col.category != "S":
                self.bad(where, f"{s.table}.{s.column} is {col.type}, not text, varchar or char")
            elif col is not None and (col.loose_collation or col.base not in EXACT_TEXT):
                self.bad(where, f"{s.table}.{s.column} {_loose(col)}: values it takes as equal ('Rome', 'ROME')"
                                " would share one lookup row and lose their spelling; change its collation or"
                                " type first, and give the lookup a `key` (casefold) to make such values one")
            if col is not None and s.column in t.pk:
                self.bad(where, f"{s.column} is the primary key of {s.table}; it cannot move to a lookup table")
            if col is not None and col.generated:
                self.bad(where, f"{s.table}.{s.column} is a generated column; it cannot move")
            self.move(where, s.table, s.column)
        columns = [("id", "id", UUID), ("column", op.column, TEXT)]
        if op.key:
            columns.append(("key", op.key_column, TEXT))
        if op.slug:
            columns.append(("slug", op.slug, TEXT))
        columns += [("its own column", "created_at", TIMESTAMPTZ), ("its own column", "updated_at", TIMESTAMPTZ)]
        extra = self.extra_columns(i, p, op.extra, None)
        lookup = self.new_table(i, p, "lookup", op.lookup, columns + extra,
                                [op.key_column] + ([op.slug] if op.slug else []) + [e.name for e in op.extra if e.unique])
        self.extra_defaults(i, p, op.extra, lookup, extra)
        self.unique_repeats(p, op.extra, "lookup row", None)
        for j, (s, t) in enumerate(zip(op.sources, sources, strict=True)):
            if t is not None and self.creates_column(f"{p}, sources[{j}].fk", t, s.fk, UUID):
                self.creates_constraint(f"{p}, sources[{j}].constraint", t, s.constraint)
        self.function(f"{p}, normalizer", op.normalizer)
        if op.key:
            self.function(f"{p}, key", op.key, immutable=True)
        for j, (s, t) in enumerate(zip(op.sources, sources, strict=True)):
            if t is not None:
                self.implied_index(i, f"{p}, sources[{j}].fk", s.table, (s.fk,))

    def _unlogged(self, t: Table | None) -> bool:
        """Whether `t` is an existing unlogged table: a logged table's foreign key cannot reference it."""
        return t is not None and not t.created_by and bool(self.conn.execute(
            "SELECT relpersistence = 'u' FROM pg_class WHERE oid = to_regclass(%s)", (f"public.{t.name}",)).fetchone()
            == (True,))

    def instead_rules(self, where: str, t: Table | None) -> None:
        """Rules of a table the plan writes (its backfill, or the sync triggers of the other form) that
        replace a write: they would replace the plan's writes too, and the two forms drift apart."""
        if t is None or t.created_by or t.name in self.instead_said:
            return
        self.instead_said.add(t.name)
        found = self.conn.execute(
            "SELECT string_agg(rulename, ', ' ORDER BY rulename) FROM pg_rewrite WHERE ev_class = to_regclass(%s)"
            " AND is_instead AND ev_type <> '1' AND ev_enabled <> 'D'", (f"public.{t.name}",)).fetchone()
        if found and found[0]:
            self.bad(where, f"table {t.name} has INSTEAD rules of its own ({found[0]}): they would replace the"
                            " plan's writes to its rows too, and the two forms would drift apart; make them"
                            " triggers (or drop them) first")

    def split_child(self, i: int, p: str, op: SplitChild) -> None:
        parent = self.table(i, f"{p}, parent", op.parent)
        self.instead_rules(f"{p}, parent", parent)
        if self._unlogged(parent):
            self.bad(f"{p}, parent", f"table {op.parent} is unlogged: the child's foreign key to it could not be"
                                     f" created (a logged table references only logged ones); make it logged first"
                                     f" (ALTER TABLE {op.parent} SET LOGGED)")
        types: list[Col] = []
        for j, c in enumerate(op.columns):
            where = f"{p}, columns[{j}]"
            col = self.column(i, where, parent, c.parent) if parent is not None else None
            declared = self.sqltype(f"{where}.type", c.type) if c.type else None
            types.append(declared or col or TEXT)
            if parent is not None and col is not None:
                if c.parent in parent.pk:
                    self.bad(where, f"{c.parent} is the primary key of {op.parent}; it stays with the parent")
                if col.generated:
                    self.bad(where, f"{op.parent}.{c.parent} is a generated column; it cannot move")
                self.comparable(where, op.parent, c.parent, col)
                self.move(where, op.parent, c.parent)
                if c.source:
                    self.expression(i, f"{where}.from", parent, c.source, value=(declared or col).type,
                                    only=(c.parent,))
        pk_type = parent.columns.get(parent.pk[0]) if parent is not None and len(parent.pk) == 1 else None
        columns = [("id", "id", UUID), ("its own column", "created_at", TIMESTAMPTZ),
                   ("its own column", "updated_at", TIMESTAMPTZ), ("fk", op.fk, pk_type or UUID)]
        columns += [(f"columns[{j}]", c.child, typ) for j, (c, typ) in enumerate(zip(op.columns, types, strict=True))]
        extra = self.extra_columns(i, p, op.extra, parent)
        columns += extra
        columns.append(("default_flag", op.default_flag, BOOLEAN))
        if op.active_flag:
            columns.append(("active_flag", op.active_flag, BOOLEAN))
            if not op.when:
                self.bad(f"{p}, active_flag", "needs `when`: it marks the default child of a parent that does not"
                                              " meet it")
        if op.when:
            self.expression(i, f"{p}, when", parent, op.when)
        child = self.new_table(i, p, "child", op.child, columns, [e.name for e in op.extra if e.unique])
        for j, c in enumerate(op.columns):
            # A child of another type (the parent's text, the child's integer) needs a cast back.
            back = c.back or (c.child if c.type else None)
            if back and parent is not None and c.parent in parent.columns:
                self.expression(i, f"{p}, columns[{j}].{'back' if c.back else 'type'}", child, back,
                                value=parent.columns[c.parent].type, only=tuple(m.child for m in op.columns))
        self.extra_defaults(i, p, op.extra, child, extra)
        self.unique_repeats(p, op.extra, f"default {op.child} row", parent, op.when)
        self.children[op.child] = (i, op)

    def extra_columns(self, i: int, p: str, extras: tuple[ExtraColumn, ...],
                      parent: Table | None) -> list[tuple[str, str, Col]]:
        """A new table's columns of its own: (key in the plan, name, type). `parent`: the row an
        `initial` value is computed from (a lookup row has none)."""
        out: list[tuple[str, str, Col]] = []
        for j, e in enumerate(extras):
            where = f"{p}, extra_columns[{j}]"
            typ = self.sqltype(f"{where}.type", e.type)
            out.append((f"extra_columns[{j}]", e.name, typ or TEXT))
            if e.initial and parent is None:
                self.bad(f"{where}.initial", "a lookup row has no row of its own to take it from; give a default")
            elif e.not_null and not e.initial and not e.default:
                self.bad(where, f"{e.name} is NOT NULL without {'an initial value or ' if parent else ''}a default:"
                                " the migration could not create a row")
            elif e.initial and typ is not None:
                self.expression(i, f"{where}.initial", parent, e.initial, value=typ.type)
        return out

    def extra_defaults(self, i: int, p: str, extras: tuple[ExtraColumn, ...], table: Table,
                       columns: list[tuple[str, str, Col]]) -> None:
        """The defaults of those columns, as values of their types that read no column."""
        for j, e in enumerate(extras):
            if e.default:
                self.expression(i, f"{p}, extra_columns[{j}].default", table, e.default, value=columns[j][2].type,
                                only=())

    def repeated(self, table: str, exprs: list[str], where: str | None) -> str | None:
        """A value of `exprs` (none NULL) that two rows of `table` meeting `where` share, as text; None
        when there is none, or when finding out takes longer than REPEATS_TIMEOUT (a large table:
        then the run finds it, stops and says so)."""
        values = ", ".join(f"({e})" for e in exprs)
        query = (f"SELECT concat_ws(', ', {values}) FROM public.{table} WHERE ({where or 'true'})"
                 + "".join(f" AND ({e}) IS NOT NULL" for e in exprs) + f" GROUP BY {values} HAVING count(*) > 1 LIMIT 1")
        # Hashed, not sorted: the planner sorts the values (a collation-aware external sort of every
        # row's text) where a hash of them takes a third less (100,000 products: 140 ms against 93).
        return self._first_within_timeout(query, hashed=True)

    def unique_repeats(self, p: str, extras: tuple[ExtraColumn, ...], what: str, parent: Table | None,
                       when: str | None = None) -> None:
        """A unique extra column that the migration would give every row it creates the same value: an
        expression that reads no column of the parent and calls no volatile function (a constant,
        now()). The second row would stop the backfill, and an old application's write would fail."""
        for j, e in enumerate(extras):
            expr = e.initial or e.default
            if not e.unique or not expr:
                continue
            if parent is not None and e.initial and any(w in parent.columns for w in _words(e.initial)):
                found = self.repeated(parent.name, [e.initial], when) if not parent.created_by else None
                if found is not None:
                    self.bad(f"{p}, extra_columns[{j}].initial",
                             f"{e.name} is unique, but initial {expr!r} gives more than one {parent.name} row"
                             f" the value {found}: the backfill would stop there")
                continue
            calls = sorted({m.group(1).lower() for m in _CALL.finditer(_LITERAL.sub("''", expr))})
            if calls and self.conn.execute("SELECT count(*) > 0 FROM pg_proc WHERE proname = ANY(%s)"
                                           " AND provolatile = 'v'", (calls,)).fetchone()[0]:  # type: ignore[index]
                continue
            key = "initial" if e.initial else "default"
            self.bad(f"{p}, extra_columns[{j}].{key}", f"{e.name} is unique, but {key} {expr!r} gives every"
                                                       f" {what} the same value: the second one would fail")

    def comparable(self, where: str, table: str, column: str, col: Col) -> None:
        """A moved column's values are compared by the sync triggers (IS DISTINCT FROM): its type needs
        an equality operator (json, xml, point have none) that tells every change."""
        if col.category == "S" and (col.loose_collation or col.base not in EXACT_TEXT):
            self.bad(where, f"{table}.{column} {_loose(col)}: the sync would miss a change it takes as equal"
                            " ('Rome' to 'ROME'); change its collation or type first, or leave it with the parent")
            return
        try:
            with self.conn.transaction():
                self.conn.execute(sql.SQL("EXPLAIN SELECT ROW(NULL::{t}) IS DISTINCT FROM ROW(NULL::{t})").format(
                    t=sql.SQL(col.type)))
        except psycopg.Error:
            self.bad(where, f"{table}.{column} is {col.type}, a type without an equality operator: the sync could"
                            " not tell a changed value; change its type first (json: jsonb), or leave it with the parent")

    def link(self, i: int, p: str, op: LinkChildReference) -> None:
        t = self.table(i, f"{p}, table", op.table)
        self.instead_rules(f"{p}, table", t)
        split = self.children.get(op.child)
        if split is None:
            later = next((k for k, o in enumerate(self.spec.operations, 1)
                          if isinstance(o, SplitChild) and o.child == op.child), None)
            if later is not None:
                self.bad(f"{p}, child", f"{op.child} is created only by operation {later} (split_child),"
                                        " which comes later")
            else:
                self.bad(f"{p}, child", f"{op.child} is not the child table of an earlier split_child of this plan")
        ref = self.column(i, f"{p}, reference", t, op.reference) if t is not None else None
        parent = (self.model.get(split[1].parent) or self.cat.tables.get(split[1].parent)) if split else None
        if ref is not None and split is not None and parent is not None and len(parent.pk) == 1:
            pk = parent.columns.get(parent.pk[0])
            fits = pk is None or pk.base == ref.base or {pk.base, ref.base} <= COMPARABLE_INTEGERS or {
                pk.base, ref.base} <= COMPARABLE_TEXTS
            if pk is not None and not fits:
                self.bad(f"{p}, reference", f"{op.table}.{op.reference} is {ref.type}; the primary key of"
                                            f" {parent.name} ({parent.pk[0]}) is {pk.type}")
            target = self.cat.references.get((op.table, op.reference))
            if target is not None and target != (parent.name, parent.pk):
                self.bad(f"{p}, reference", f"{op.table}.{op.reference} references {target[0]}"
                                            f" ({', '.join(target[1])}), not the primary key of {parent.name}")
        if t is not None:
            if self.creates_column(f"{p}, fk", t, op.fk, UUID):
                self.creates_constraint(f"{p}, constraint", t, op.constraint)
            self.implied_index(i, f"{p}, fk", op.table, (op.fk,))
            if ref is not None and (op.table, op.reference) not in self.looked_up and not any(
                    tbl == op.table and cols[:1] == (op.reference,) for tbl, cols in self.cat.indexes.values()):
                self.implied_index(i, f"{p}, reference", op.table, (op.reference,))
            self.looked_up.add((op.table, op.reference))  # one index serves every link of that reference

    def derive_column(self, i: int, p: str, op: DeriveColumn) -> None:
        t = self.table(i, f"{p}, table", op.table)
        self.instead_rules(f"{p}, table", t)
        typ = self.sqltype(f"{p}, column_type", op.column_type) if op.column_type else None
        if t is None:
            return
        legacy = tuple(c for c in self._db_columns(t) if c != op.column)
        target: Col | None = None
        # Over the legacy columns alone: another operation's column may be set by a trigger after ours.
        if typ is not None:
            self.expression(i, f"{p}, from", t, op.source, value=typ.type, only=legacy)
        if op.writes:
            target = self.column(i, f"{p}, writes", t, op.writes)
            if target is not None and op.writes not in legacy:
                self.bad(f"{p}, writes", f"{op.writes} is not a legacy column of {op.table}")
            elif target is not None and target.generated:
                self.bad(f"{p}, writes", f"{op.table}.{op.writes} is a generated column")
            elif target is not None and op.writes in t.pk:
                self.bad(f"{p}, writes", f"{op.writes} is the primary key of {op.table}")
        elif op.back:
            self.bad(f"{p}, back", "needs `writes`: the legacy column it gives a value")
        # Before `back` is checked: it may read the new column itself.
        if typ is not None and self.creates_column(f"{p}, column", t, op.column, typ) and op.back \
                and target is not None:
            self.expression(i, f"{p}, back", t, op.back, value=target.type, only=(*legacy, op.column))

    def add_check(self, i: int, p: str, op: AddCheck) -> None:
        t = self.table(i, f"{p}, table", op.table)
        if t is None:
            return
        for j, c in enumerate(op.columns):
            self.column(i, f"{p}, columns[{j}]", t, c)
        self.creates_constraint(f"{p}, name", t, op.name)
        self.expression(i, f"{p}, check", t, op.check)
        self.uses_columns(f"{p}, check", t, list(op.columns) or _words(op.check), "check")

    def add_foreign_key(self, i: int, p: str, op: AddForeignKey) -> None:
        t = self.table(i, f"{p}, table", op.table)
        cols = [self.column(i, f"{p}, columns[{j}]", t, c) if t is not None else None
                for j, c in enumerate(op.columns)]
        r = self.table(i, f"{p}, references", op.references)
        if t is not None and self._unlogged(r) and not self._unlogged(t):
            self.bad(f"{p}, references", f"table {op.references} is unlogged and {op.table} is not: a logged table's"
                                         f" foreign key references only logged ones; make {op.references} logged first"
                                         f" (ALTER TABLE {op.references} SET LOGGED)")
        if r is not None:
            ref_cols = op.ref_columns or r.pk
            key = "ref_columns" if op.ref_columns else "references"
            if not ref_cols:
                pass  # the table's missing primary key is already said
            elif len(ref_cols) != len(op.columns):
                self.bad(f"{p}, columns", f"{len(op.columns)} column(s) cannot reference the {len(ref_cols)}-column"
                                          f" primary key of {op.references} ({', '.join(ref_cols)})")
            else:
                refs = [self.column(i, f"{p}, {key}[{j}]" if op.ref_columns else f"{p}, references", r, c)
                        for j, c in enumerate(ref_cols)]
                if all(refs) and frozenset(ref_cols) not in r.unique:
                    self.bad(f"{p}, {key}", f"{op.references} ({', '.join(ref_cols)}) has no primary key or unique"
                                            " index on exactly these columns; a foreign key needs one")
                for j, (c, rc) in enumerate(zip(cols, refs, strict=True)):
                    if c is not None and rc is not None and c.category != rc.category:
                        self.bad(f"{p}, columns[{j}]", f"{op.table}.{op.columns[j]} is {c.type}; the referenced"
                                                       f" {op.references}.{ref_cols[j]} is {rc.type}")
        if t is not None:
            self.creates_constraint(f"{p}, name", t, op.name)
            if all(cols):
                self.implied_index(i, f"{p}, columns", op.table, op.columns)
            self.uses_columns(f"{p}, columns", t, list(op.columns), "foreign key")
        if r is not None:
            self.uses_columns(f"{p}, references", r, list(op.ref_columns or r.pk), "foreign key")

    def create_index(self, i: int, p: str, op: CreateIndex) -> None:
        t = self.table(i, f"{p}, table", op.table)
        if t is not None:
            for j, item in enumerate(op.columns):
                self.column(i, f"{p}, columns[{j}]", t, item.split()[0].lower())
            for j, c in enumerate(op.include):
                self.column(i, f"{p}, include[{j}]", t, c)
        self.creates_relation(i, f"{p}, name", op.name, "index")
        if op.where:
            self.expression(i, f"{p}, where", t, op.where)
        if t is not None:
            used = [c.split()[0].lower() for c in op.columns] + list(op.include) + _words(op.where or "")
            self.uses_columns(f"{p}, columns", t, used, "index")
            names = [c.split()[0].lower() for c in op.columns]
            if op.unique and set(names) <= set(self._db_columns(t)):
                found = self.repeated(t.name, names, op.where)
                if found is not None:
                    self.bad(f"{p}, columns", f"{op.table} has rows that repeat ({', '.join(names)}) = ({found}):"
                                              " the unique index could not be built; remove the repeats first")

    def monitoring(self) -> None:
        """`monitoring = true` creates the guide's views and function in the public schema: one of
        those names the database has already belongs to someone else, and is not replaced."""
        if not self.spec.monitoring or self.resumed:
            return
        for name, what in self.conn.execute(_MONITORING_OBJECTS, (list(MONITORING_OBJECTS),) * 2).fetchall():
            self.bad("file, monitoring", f"public.{name} already exists ({_a(what)}): the plan's monitoring would"
                                         " replace it; drop or rename it, or leave monitoring out")

    def row_security(self) -> None:
        if not self.first_use:
            return
        for qualified, why, n in self.conn.execute(ROW_SECURITY, (list(self.first_use),)).fetchall():
            name = qualified.removeprefix("public.")
            self.bad(self.first_use.get(name, "file"),
                     f"row-level security applies to this role on table {name} ({why}, {n} polic"
                     f"{'y' if n == 1 else 'ies'}): the migration would see only the rows its policies show;"
                     " migrate as a role with BYPASSRLS, or as the owner without FORCE ROW LEVEL SECURITY")
