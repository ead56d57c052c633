"""A Prisma schema file against a live database: every model's table, columns (type, nullability,
default, generated), primary key, unique keys, indexes and relations (foreign keys with their actions)
compared with what pg_catalog reports, both ways. What the schema language cannot express (CHECK
constraints, partial or covering indexes) must at least be named in the schema file's text.

The parser reads the part of the Prisma schema language our schemas use (models, scalar and relation
fields, field and block attributes with their arguments); `prisma validate` checks the rest."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import psycopg

# --- the schema file ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    name: str
    args: tuple[Any, ...] = ()
    kwargs: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class Ident:
    name: str


@dataclass
class Attr:
    name: str
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class Field:
    name: str
    type: str
    optional: bool
    is_list: bool
    attrs: dict[str, Attr]

    @property
    def column(self) -> str:
        a = self.attrs.get("map")
        return str(a.args[0]) if a else self.name


@dataclass
class Model:
    name: str
    fields: list[Field]
    block: list[Attr]

    @property
    def table(self) -> str:
        return next((str(a.args[0]) for a in self.block if a.name == "map"), self.name)


SCALARS = {"String", "Int", "BigInt", "Float", "Decimal", "Boolean", "DateTime", "Json", "Bytes"}


def _strip_comment(line: str) -> str:
    in_string = False
    for i, ch in enumerate(line):
        if ch == '"' and (i == 0 or line[i - 1] != "\\"):
            in_string = not in_string
        if not in_string and line.startswith("//", i):
            return line[:i]
    return line


class _Args:
    """Arguments of an attribute: values are str (string literals), Ident, Call, list, int/float, bool."""

    TOKEN = re.compile(r'\s*(?:(?P<string>"(?:[^"\\]|\\.)*")|(?P<number>-?\d+(?:\.\d+)?)|(?P<ident>[A-Za-z_][\w.]*)'
                       r'|(?P<punct>[()\[\],:]))')

    def __init__(self, text: str) -> None:
        self.toks: list[tuple[str, str]] = []
        pos = 0
        while pos < len(text):
            if text[pos:].strip() == "":
                break
            m = self.TOKEN.match(text, pos)
            assert m, f"cannot read {text[pos:]!r}"
            kind = m.lastgroup or ""
            self.toks.append((kind, m.group(kind)))
            pos = m.end()
        self.i = 0

    def peek(self) -> str | None:
        return self.toks[self.i][1] if self.i < len(self.toks) else None

    def take(self) -> tuple[str, str]:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def arguments(self) -> tuple[list[Any], dict[str, Any]]:
        """`(a, b, name: c)`: the opening parenthesis already taken; takes the closing one."""
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        while self.peek() != ")":
            if (self.i + 1 < len(self.toks) and self.toks[self.i][0] == "ident"
                    and self.toks[self.i + 1][1] == ":"):
                name = self.take()[1]
                self.take()
                kwargs[name] = self.value()
            else:
                args.append(self.value())
            if self.peek() == ",":
                self.take()
        self.take()
        return args, kwargs

    def value(self) -> Any:
        kind, text = self.take()
        if kind == "string":
            return text[1:-1].replace('\\"', '"').replace('\\\\', '\\')
        if kind == "number":
            return float(text) if "." in text else int(text)
        if text == "[":
            items = []
            while self.peek() != "]":
                items.append(self.value())
                if self.peek() == ",":
                    self.take()
            self.take()
            return items
        if kind == "ident":
            if text in ("true", "false"):
                return text == "true"
            if self.peek() == "(":
                self.take()
                args, kwargs = self.arguments()
                return Call(text, tuple(args), tuple(kwargs.items()))
            return Ident(text)
        raise AssertionError(f"unexpected {text!r}")


def _attributes(text: str) -> list[Attr]:
    out: list[Attr] = []
    pos = 0
    head = re.compile(r"\s*@@?([A-Za-z_][\w.]*)")
    while pos < len(text) and text[pos:].strip():
        m = head.match(text, pos)
        assert m, f"cannot read attribute at {text[pos:]!r}"
        attr = Attr(m.group(1))
        pos = m.end()
        if pos < len(text) and text[pos] == "(":
            depth, j, in_string = 0, pos, False
            while True:
                ch = text[j]
                if ch == '"' and text[j - 1] != "\\":
                    in_string = not in_string
                elif not in_string and ch == "(":
                    depth += 1
                elif not in_string and ch == ")":
                    depth -= 1
                    if depth == 0:
                        break
                j += 1
            parser = _Args(text[pos + 1:j] + ")")
            attr.args, attr.kwargs = parser.arguments()
            pos = j + 1
        out.append(attr)
    return out


def parse(text: str) -> dict[str, Model]:
    models: dict[str, Model] = {}
    lines = [_strip_comment(line).rstrip() for line in text.splitlines()]
    i = 0
    while i < len(lines):
        m = re.match(r"^\s*(model|enum|generator|datasource|view|type)\s+(\w+)\s*\{\s*$", lines[i])
        i += 1
        if not m:
            continue
        body = []
        while not re.match(r"^\s*\}\s*$", lines[i]):
            body.append(lines[i].strip())
            i += 1
        i += 1
        if m.group(1) != "model":
            continue
        fields, block = [], []
        for line in filter(None, body):
            if line.startswith("@@"):
                block.extend(_attributes(line))
                continue
            fm = re.match(r"^(\w+)\s+(\w+)(\?|\[\])?\s*(.*)$", line)
            assert fm, f"cannot read field {line!r}"
            attrs = {a.name: a for a in _attributes(fm.group(4))}
            fields.append(Field(fm.group(1), fm.group(2), fm.group(3) == "?", fm.group(3) == "[]", attrs))
        models[m.group(2)] = Model(m.group(2), fields, block)
    return models


# --- what the schema says PostgreSQL has ------------------------------------------------------------------

def _native(f: Field) -> tuple[str, tuple[Any, ...]] | None:
    for name, a in f.attrs.items():
        if name.startswith("db."):
            return name[3:], tuple(a.args)
    return None


def expected_type(f: Field) -> str:
    """What format_type() reports for the column of field `f` (Prisma's defaults where no @db.)."""
    native = _native(f)
    n, args = native if native else ("", ())
    if f.type == "String":
        return {"": "text", "Text": "text", "Uuid": "uuid"}.get(n) or (
            f"character varying({args[0]})" if n == "VarChar" else f"?{n}")
    if f.type == "Decimal":
        p, s = args if n == "Decimal" else (65, 30)
        return f"numeric({p},{s})"
    if f.type == "DateTime":
        p = args[0] if args else (6 if n else 3)
        zone = "with time zone" if n == "Timestamptz" else "without time zone"
        return f"timestamp({p}) {zone}"
    return {"Int": "integer", "BigInt": "bigint", "Float": "double precision", "Boolean": "boolean",
            "Json": "jsonb", "Bytes": "bytea"}[f.type]


def expected_default(f: Field) -> set[str | None]:
    """The column defaults pg_get_expr() may report for `f`'s @default (None: no default)."""
    a = f.attrs.get("default")
    if a is None:
        return {None}
    v = a.args[0]
    if isinstance(v, Call) and v.name == "dbgenerated":
        return {str(v.args[0])}
    if isinstance(v, Call) and v.name == "now":
        return {"now()", "CURRENT_TIMESTAMP"}
    if isinstance(v, Call) and v.name == "autoincrement":
        return {"autoincrement"}
    if isinstance(v, bool):
        return {"true" if v else "false"}
    if isinstance(v, int | float):
        return {str(v), f"{v}::numeric", f"({v})::numeric"}
    if isinstance(v, str):
        return {"'" + v.replace("'", "''") + "'::text"}
    return {repr(v)}


ACTIONS = {"Cascade": "c", "Restrict": "r", "NoAction": "a", "SetNull": "n", "SetDefault": "d"}


# --- what PostgreSQL has ------------------------------------------------------------------------------------

@dataclass
class Table:
    columns: dict[str, tuple[str, bool, str | None, bool]]  # name -> (type, nullable, default, generated)
    primary: tuple[str, tuple[str, ...]] | None = None
    uniques: set[tuple[str, tuple[str, ...]]] = field(default_factory=set)
    indexes: set[tuple[str, tuple[str, ...]]] = field(default_factory=set)  # columns with " DESC" where so
    foreign: set[tuple[str, tuple[str, ...], str, tuple[str, ...], str, str]] = field(default_factory=set)
    inexpressible: set[str] = field(default_factory=set)  # index and CHECK constraint names


def live(conn: psycopg.Connection[Any]) -> dict[str, Table]:
    tables: dict[str, Table] = {}
    for rel, col, typ, notnull, default, generated in conn.execute(
            "SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,"
            " pg_get_expr(d.adbin, d.adrelid), a.attgenerated <> ''"
            " FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped"
            " LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum"
            " WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p') ORDER BY c.relname, a.attnum"):
        if typ == "timestamp with time zone":
            typ = "timestamp(6) with time zone"
        elif typ == "timestamp without time zone":
            typ = "timestamp(6) without time zone"
        tables.setdefault(rel, Table({})).columns[col] = (typ, not notnull, None if generated else default, generated)
    cols = ("(SELECT array_agg(a.attname ORDER BY u.i) FROM unnest({0}) WITH ORDINALITY u(n, i)"
            " JOIN pg_attribute a ON a.attrelid = {1} AND a.attnum = u.n)")
    for rel, name, kind, keys, ref, refkeys, on_delete, on_update in conn.execute(
            f"SELECT c.relname, k.conname, k.contype, {cols.format('k.conkey', 'k.conrelid')},"
            f" r.relname, {cols.format('k.confkey', 'k.confrelid')}, k.confdeltype, k.confupdtype"
            " FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid LEFT JOIN pg_class r ON r.oid = k.confrelid"
            " WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p') AND k.contype IN ('p', 'u', 'f', 'c')"):
        t = tables[rel]
        if kind == "p":
            t.primary = (name, tuple(keys))
        elif kind == "u":
            t.uniques.add((name, tuple(keys)))
        elif kind == "f":
            t.foreign.add((name, tuple(keys), ref, tuple(refkeys), on_delete, on_update))
        else:
            t.inexpressible.add(name)
    for rel, name, unique, plain, keys in conn.execute(
            "SELECT c.relname, ic.relname, i.indisunique,"
            " i.indpred IS NULL AND i.indexprs IS NULL AND i.indnatts = i.indnkeyatts AND am.amname = 'btree',"
            " (SELECT array_agg(a.attname || CASE WHEN i.indoption[k.i - 1] & 1 = 1 THEN ' DESC' ELSE '' END"
            "                   ORDER BY k.i)"
            "    FROM unnest(i.indkey::int2[]) WITH ORDINALITY k(n, i) JOIN pg_attribute a"
            "      ON a.attrelid = i.indrelid AND a.attnum = k.n)"
            " FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid JOIN pg_class ic ON ic.oid = i.indexrelid"
            " JOIN pg_am am ON am.oid = ic.relam"
            " WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p') AND NOT i.indisprimary"
            " AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid AND k.contype IN ('u', 'p'))"):
        t = tables[rel]
        if not plain:
            t.inexpressible.add(name)
        elif unique:
            t.uniques.add((name, tuple(keys)))
        else:
            t.indexes.add((name, tuple(keys)))
    return tables


# --- the comparison -----------------------------------------------------------------------------------------

# Prisma Migrate's own table, in the application's database once it keeps a migration history.
PRISMA_OWN = {"_prisma_migrations"}


def differences(schema_text: str, tables: dict[str, Table]) -> list[str]:
    """Every way the schema and the database disagree (empty: they describe the same tables)."""
    tables = {name: t for name, t in tables.items() if name not in PRISMA_OWN}
    models = parse(schema_text)
    by_table = {m.table: m for m in models.values()}
    out: list[str] = []
    for name in sorted(set(tables) - set(by_table)):
        out.append(f"table {name}: in the database, no model")
    for name in sorted(set(by_table) - set(tables)):
        out.append(f"model {by_table[name].name}: table {name} is not in the database")
    for table in sorted(set(tables) & set(by_table)):
        out += _model_differences(by_table[table], tables[table], models, schema_text)
    return out


def _model_differences(m: Model, t: Table, models: dict[str, Model], text: str) -> list[str]:
    out: list[str] = []
    scalars = [f for f in m.fields if f.type not in models]
    column_of = {f.name: f.column for f in scalars}
    by_column = {f.column: f for f in scalars}
    for col in sorted(set(t.columns) - set(by_column)):
        out.append(f"{m.table}.{col}: column in the database, no field in model {m.name}")
    for col in sorted(set(by_column) - set(t.columns)):
        out.append(f"{m.table}.{col}: field {m.name}.{by_column[col].name} names no column of the database")
    for col in sorted(set(t.columns) & set(by_column)):
        f, (typ, nullable, default, generated) = by_column[col], t.columns[col]
        where = f"{m.table}.{col} ({m.name}.{f.name})"
        if expected_type(f) != typ:
            out.append(f"{where}: type {typ} in the database, {expected_type(f)} in the schema")
        if f.optional != nullable:
            out.append(f"{where}: {'NULL' if nullable else 'NOT NULL'} in the database, "
                       f"{'optional' if f.optional else 'required'} in the schema")
        if generated and "ignore" not in f.attrs:
            out.append(f"{where}: generated by the database, writable in the schema (needs @ignore)")
        if not generated and default not in expected_default(f) and not ({"updatedAt"} & set(f.attrs)
                                                                         and default is None):
            out.append(f"{where}: default {default} in the database, {sorted(map(str, expected_default(f)))} "
                       "in the schema")

    def cols(names: list[Any]) -> tuple[str, ...]:
        out_cols = []
        for n in names:
            if isinstance(n, Call):  # a(sort: Desc)
                desc = dict(n.kwargs).get("sort") == Ident("Desc")
                out_cols.append(column_of[n.name] + (" DESC" if desc else ""))
            else:
                out_cols.append(column_of[n.name if isinstance(n, Ident) else str(n)])
        return tuple(out_cols)

    def named(attr: Attr, columns: tuple[str, ...], suffix: str) -> str:
        return str(attr.kwargs.get("map") or "_".join([m.table, *(c.split()[0] for c in columns), suffix]))

    # Primary key.
    ids = [f for f in scalars if "id" in f.attrs]
    block_id = next((a for a in m.block if a.name == "id"), None)
    if ids:
        pk_cols = (ids[0].column,)
        pk_name = str(ids[0].attrs["id"].kwargs.get("map") or f"{m.table}_pkey")
    elif block_id:
        pk_cols = cols(block_id.args[0])
        pk_name = str(block_id.kwargs.get("map") or f"{m.table}_pkey")
    else:
        pk_cols, pk_name = (), ""
    have_pk = t.primary or ("", ())
    if (pk_name, pk_cols) != have_pk:
        out.append(f"{m.table}: primary key {have_pk} in the database, {(pk_name, pk_cols)} in the schema")

    # Unique keys and indexes.
    uniques = {(named(f.attrs["unique"], (f.column,), "key"), (f.column,)) for f in scalars if "unique" in f.attrs}
    uniques |= {(named(a, cols(a.args[0]), "key"), cols(a.args[0])) for a in m.block if a.name == "unique"}
    indexes = {(named(a, cols(a.args[0]), "idx"), cols(a.args[0])) for a in m.block if a.name == "index"}
    for what, want, have in (("unique key", uniques, t.uniques), ("index", indexes, t.indexes)):
        for name, keys in sorted(have - want):
            out.append(f"{m.table}: {what} {name} {keys} in the database, not in the schema")
        for name, keys in sorted(want - have):
            out.append(f"{m.table}: {what} {name} {keys} in the schema, not in the database")
    for name in sorted(t.inexpressible):
        if not re.search(rf"\b{re.escape(name)}\b", text):
            out.append(f"{m.table}: {name} (a CHECK constraint or a partial, covering or expression index) is not"
                       " named in the schema file")

    # Relations.
    foreign = set()
    for f in m.fields:
        rel = f.attrs.get("relation")
        if f.type not in models or rel is None or "fields" not in rel.kwargs:
            continue
        local = cols(rel.kwargs["fields"])
        target = models[f.type]
        ref_cols = tuple(next(g.column for g in target.fields if g.name == r.name) for r in rel.kwargs["references"])
        required = all(not next(g for g in scalars if g.column == c).optional for c in local)
        on_delete = rel.kwargs.get("onDelete", Ident("Restrict" if required else "SetNull"))
        on_update = rel.kwargs.get("onUpdate", Ident("Cascade"))
        name = str(rel.kwargs.get("map") or "_".join([m.table, *local, "fkey"]))
        foreign.add((name, local, target.table, ref_cols, ACTIONS[on_delete.name], ACTIONS[on_update.name]))
    for fk in sorted(t.foreign - foreign):
        out.append(f"{m.table}: foreign key {fk} in the database, no such relation in the schema")
    for fk in sorted(foreign - t.foreign):
        out.append(f"{m.table}: relation {fk} in the schema, no such foreign key in the database")
    return out
