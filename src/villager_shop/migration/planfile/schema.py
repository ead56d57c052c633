"""The JSON Schema of a plan file (draft 2020-12), for editors: completion, checking and a description of
every key while a plan is written (taplo / Even Better TOML read it through the plan's first line,
`#:schema ./plan.schema.json`).

spec.py stays the one source of truth of what a plan may say: which operations there are, and which
keys each one reads and requires, are taken from its readers (each reader is run on an empty
operation, and every key it asks for is recorded); the patterns and lists (names, normalizers,
on_delete) are spec.py's own. This module adds only what a reader cannot tell: the shape of each
value, a description and an example; `json_schema()` refuses to build a schema in which a key spec.py
reads has none, or one it describes is not read any more. plans/plan.schema.json is its output
(`villager-shop migrate plan --schema > plans/plan.schema.json`); a test keeps the
two equal."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Any

from villager_shop.migration.planfile import spec

ID = "https://github.com/villager-shop/villager-shop/plans/plan.schema.json"


@dataclass(frozen=True)
class Key:
    value: dict[str, Any]  # the JSON Schema of its value
    description: str
    example: Any


NAME: dict[str, Any] = {"$ref": "#/$defs/name"}
NAMES: dict[str, Any] = {"$ref": "#/$defs/names"}
EXPRESSION: dict[str, Any] = {"$ref": "#/$defs/expression"}
SQL: dict[str, Any] = {"type": "string"}
NORMALIZER: dict[str, Any] = {"$ref": "#/$defs/normalizer"}


def _anycase(pattern: str) -> str:
    """`pattern` matching letters of either case (JSON Schema patterns take no flags): a literal letter x
    becomes [xX], and a-z in a character class a-zA-Z; escapes (\\s) are kept."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            out.append(pattern[i:i + 2])
            i += 2
        elif ch == "[":
            end = pattern.index("]", i + 1)
            out.append(pattern[i:end + 1].replace("a-z", "a-zA-Z"))
            i = end + 1
        else:
            out.append(f"[{ch.lower()}{ch.upper()}]" if ch.isalpha() else ch)
            i += 1
    return "".join(out)


OPERATION_DOCS = {
    "extract_lookup": "Free-text columns (of one or several tables) become rows of a new lookup table, referenced"
                      " by id from a new uuid column of each table.",
    "split_child": "Columns of a parent move to a new child table (1:N); one default child per parent carries them.",
    "link_child_reference": "A table that references the split parent gets a uuid column referencing the parent's"
                            " default child.",
    "derive_column": "A new column computed from the table's legacy columns, kept current; given `writes`, a write"
                     " of it by the new application reaches that legacy column.",
    "quarantine_rule": "Rows for which `when` holds are recorded (with `reason`) rather than migrated.",
    "add_check": "A CHECK constraint, added NOT VALID and then validated.",
    "add_foreign_key": "A foreign key, added NOT VALID and then validated.",
    "create_index": "An index, built CONCURRENTLY.",
    "sql": "SQL of the plan's own (a view, a trigger, a grant): `up` once the new tables, columns and sync triggers"
           " exist, `down` by rollback, `complete` by complete; recorded done only when `check` holds.",
}


TOP: dict[str, Key] = {
    "version": Key({"const": 1}, "The version of the plan file format: 1 (the default).", 1),
    "name": Key(NAME, "The plan's name (default: the file's name without .toml). The database records it: a run"
                      " resumed later must name the same plan.", "blog"),
    "functions": Key({"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
                     "SQL the plan ships and runs before its operations: CREATE FUNCTION schema.name(text) RETURNS"
                     " text … of the normalizers and keys its operations name.",
                     ["CREATE OR REPLACE FUNCTION blog.fold(v text) RETURNS text IMMUTABLE LANGUAGE sql"
                      " AS $$ SELECT lower(v) $$"]),
    "monitoring": Key({"type": "boolean"}, "Install the guide's monitoring in the public schema: the views"
                      " db_performance_summary and slow_queries, and check_data_integrity(), one row per row the plan's"
                      " verify would name (default: false; refused where the database has objects of those names).",
                      True),
    "operation": Key({"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/operation"}},
                     "The operations, in the order they run: [[operation]] tables, each with a `type`.",
                     [{"type": "quarantine_rule", "table": "books", "reason": "non_positive_price", "when": "price <= 0"}]),
}

SOURCE: dict[str, Key] = {
    "table": Key(NAME, "An existing table (schema public) with a free-text column to extract.", "posts"),
    "column": Key(NAME, "Its text, varchar or char column; `complete` drops it.", "author_name"),
    "fk": Key(NAME, "The new uuid column of the table that references the lookup row (default: <lookup>_id).",
              "author_id"),
    "constraint": Key(NAME, "The name of its foreign key to the lookup table (default: fk_<table>_<fk>).",
                      "fk_posts_author"),
}

TYPE: dict[str, Any] = {"type": "string", "pattern": _anycase(spec.TYPE.pattern),
                        "description": "A column type as in CREATE TABLE."}

CHILD_COLUMN: dict[str, Key] = {
    "parent": Key(NAME, "The parent's column that moves; `complete` drops it.", "stock"),
    "child": Key(NAME, "Its name in the child table (default: the same).", "stock"),
    "from": Key(EXPRESSION, "The child's value as an SQL expression over that parent column (default: the value"
                            " itself). Verify compares the child with it.", "greatest(stock, 0)"),
    "back": Key(EXPRESSION, "What a write of the child's column gives the parent's, as an SQL expression over the"
                            " child's moved columns (default: the value itself). The parent is written only when"
                            " its value does not already give the child's.", "stock"),
    "type": Key(TYPE, "The child column's type (default: the parent's; 16- and 32-bit integers become bigint).",
                "bigint"),
    "default": Key(EXPRESSION, "The child column's default (default: the parent's, for a column without"
                               " `from`/`back`).", "0"),
    "not_null": Key({"type": "boolean"}, "NOT NULL on the child column (default: as on the parent, for a column"
                                         " without `from`/`back`; else false).", True),
}

EXTRA_COLUMN: dict[str, Key] = {
    "name": Key(NAME, "The new column of the child table.", "sku"),
    "type": Key(TYPE, "Its type.", "text"),
    "initial": Key(EXPRESSION, "Its value in each default child the migration creates, as an SQL expression over"
                               " the parent's row; not kept in sync afterwards.", "id::text || '-default'"),
    "default": Key(EXPRESSION, "Its default for rows the new application inserts.", "'Default'"),
    "not_null": Key({"type": "boolean"}, "NOT NULL (default: false).", True),
    "unique": Key({"type": "boolean"}, "A unique constraint on it (default: false).", True),
}

KEYS: dict[str, dict[str, Key]] = {
    "extract_lookup": {
        "lookup": Key(NAME, "The new lookup table: id uuid, the value column, and the key and slug columns if"
                            " named.", "authors"),
        "column": Key(NAME, "The lookup table's value column (default: name).", "name"),
        "sources": Key({"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/source"}},
                       "The free-text columns whose values become lookup rows: { table, column, fk } each.",
                       [{"table": "posts", "column": "author_name", "fk": "author_id"}]),
        "normalizer": Key(NORMALIZER, "What is stored as the value (default: canonical): trim; canonical"
                                      " (zero-width characters out, NFKC, whitespace runs to one space, trimmed);"
                                      " casefold; upper; or schema.function(text) RETURNS text.", "canonical"),
        "key": Key(NORMALIZER, "What makes two values one lookup row (default: the normalizer). When it differs"
                               " from the normalizer, a unique generated column <column>_key holds it and the row"
                               " is named after the first spelling met.", "casefold"),
        "slug": Key(NAME, "A unique, URL-safe column of the lookup table derived from the value.", "slug"),
        "slug_fallback": Key({"type": "string", "pattern": spec.SLUG.pattern},
                             "The slug of a value with no letter or digit (default: item); a taken one gets -2 …",
                             "category"),
        "extra_columns": Key({"type": "array", "items": {"$ref": "#/$defs/extra_column"}},
                             "Columns of the lookup table alone, set by their defaults: { name, type, default,"
                             " not_null, unique } each (a lookup row has no row to take an initial value from).",
                             [{"name": "is_active", "type": "boolean", "default": "true", "not_null": True}]),
    },
    "split_child": {
        "parent": Key(NAME, "An existing table (schema public, single-column primary key) whose columns move to"
                            " the child.", "books"),
        "child": Key(NAME, "The new child table: id uuid, the fk to the parent, the moved columns and the default"
                           " flag.", "editions"),
        "columns": Key({"anyOf": [{"type": "array", "minItems": 1,
                                   "items": {"anyOf": [NAME, {"$ref": "#/$defs/child_column"}]}},
                                  {"type": "object", "minProperties": 1, "propertyNames": NAME,
                                   "additionalProperties": NAME}]},
                       "The parent's columns that move to the child: a list of names (or of { parent, child, from,"
                       " back, ... } tables, to rename or transform one), or a table"
                       " { parent_column = \"child_column\" } to rename them; `complete` drops them from the parent.",
                       ["price", {"parent": "stock", "from": "greatest(stock, 0)"}]),
        "fk": Key(NAME, "The child's column referencing the parent's primary key, of its type (default:"
                        " <parent>_id).", "book_isbn"),
        "default_flag": Key(NAME, "The child's boolean column marking each parent's one default child (default:"
                                  " is_default).", "is_default"),
        "when": Key(EXPRESSION, "An SQL condition on the parent's row: the parents that carry their values to a"
                                " default child (default: all). The others get none; one they have keeps its"
                                " values.", "price > 0"),
        "active_flag": Key(NAME, "A boolean column of the child (default true), set false on the default child of a"
                                 " parent that does not meet `when`, and true again once it does.", "is_active"),
        "extra_columns": Key({"type": "array", "items": {"$ref": "#/$defs/extra_column"}},
                             "Columns of the child alone, such as a sku: { name, type, initial, default, not_null,"
                             " unique } each.", [{"name": "sku", "type": "text", "initial": "id::text || '-default'",
                                                 "not_null": True, "unique": True}]),
    },
    "link_child_reference": {
        "table": Key(NAME, "An existing table that references the split parent.", "loans"),
        "reference": Key(NAME, "Its column holding the parent's primary key (same type, ideally with a foreign key"
                               " to it).", "isbn"),
        "child": Key(NAME, "The child table of an earlier split_child.", "editions"),
        "fk": Key(NAME, "The new uuid column referencing the parent's default child.", "edition_id"),
        "constraint": Key(NAME, "The name of its foreign key to the child table (default: fk_<table>_<fk>).",
                          "fk_loans_edition"),
    },
    "derive_column": {
        "table": Key(NAME, "An existing table (schema public).", "products"),
        "column": Key(NAME, "The new column.", "base_price"),
        "column_type": Key(TYPE, "Its type.", "numeric(10, 2)"),
        "from": Key(EXPRESSION, "Its value: an SQL expression over the row's legacy columns, computed on every write"
                                " and by the backfill; verify compares.", "CASE WHEN price > 0 THEN price END"),
        "writes": Key(NAME, "A legacy column that a write of the new column by the new application sets (default:"
                            " none; the column is then computed whatever is written to it).", "price"),
        "back": Key(EXPRESSION, "What such a write gives `writes`, an SQL expression over the row (default: the new"
                                " column's value).", "base_price"),
    },
    "quarantine_rule": {
        "table": Key(NAME, "An existing table (schema public).", "books"),
        "reason": Key(NAME, "The reason recorded for every row the rule sets aside.", "non_positive_price"),
        "when": Key(EXPRESSION, "An SQL condition on the table's columns: the rows for which it holds are recorded"
                                " (with the reason) rather than migrated.", "price <= 0"),
    },
    "add_check": {
        "table": Key(NAME, "The table (existing, or created by an earlier operation).", "posts"),
        "name": Key(NAME, "The constraint's name.", "chk_posts_title_not_blank"),
        "check": Key(EXPRESSION, "The SQL condition every row must meet; added NOT VALID, then validated.",
                     "btrim(title) <> ''"),
        "columns": Key(NAMES, "The checked columns (default: the names used in `check`).", ["title"]),
    },
    "add_foreign_key": {
        "table": Key(NAME, "The referencing table (existing, or created by an earlier operation).", "posts"),
        "name": Key(NAME, "The constraint's name.", "fk_posts_tag"),
        "columns": Key(NAMES, "The referencing columns.", ["tag_id"]),
        "references": Key(NAME, "The referenced table.", "tags"),
        "ref_columns": Key(NAMES, "The referenced columns, as many as `columns`, with a primary key or unique"
                                  " index (default: the referenced table's primary key).", ["id"]),
        "on_delete": Key({"anyOf": [{"enum": list(spec.ON_DELETE)},
                                    {"type": "string", "pattern": _anycase("^(" + "|".join(spec.ON_DELETE) + ")$")}]},
                         "What deleting a referenced row does (default: NO ACTION); any letter case.", "CASCADE"),
    },
    "create_index": {
        "table": Key(NAME, "The table (existing, or created by an earlier operation).", "posts"),
        "name": Key(NAME, "The index's name; built CONCURRENTLY.", "idx_posts_tag_published"),
        "columns": Key({"anyOf": [{"$ref": "#/$defs/index_item"},
                                  {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/index_item"}}]},
                       "The indexed columns, each optionally followed by ASC or DESC and NULLS FIRST or LAST.",
                       ["tag_id", "published_at DESC"]),
        "unique": Key({"type": "boolean"}, "A unique index (default: false).", False),
        "where": Key(EXPRESSION, "A partial index's SQL condition on the table's columns.",
                     "published_at IS NOT NULL"),
        "include": Key(NAMES, "Columns stored in the index without being indexed (INCLUDE).", ["title"]),
    },
    "sql": {
        "name": Key(NAME, "The step's name (sql_<name>).", "posts_by_author_view"),
        "up": Key(SQL, "Statements run by `migrate run` in one transaction.",
                  "CREATE VIEW posts_by_author AS SELECT a.name, count(*) FROM posts p JOIN authors a"
                  " ON a.id = p.author_id GROUP BY 1"),
        "down": Key(SQL, "Statements that undo `up`, run by rollback (empty: nothing to undo).",
                    "DROP VIEW IF EXISTS posts_by_author"),
        "check": Key(EXPRESSION, "An SQL condition that holds once `up` is in place.",
                     "to_regclass('public.posts_by_author') IS NOT NULL"),
        "complete": Key(SQL, "Statements run by `migrate complete` before the legacy columns are dropped"
                             " (default: none).", "GRANT SELECT ON posts_by_author TO reporting"),
        "tables": Key(NAMES, "The existing tables the statements work on: rollback and complete lock them in the"
                             " plan's order.", ["posts"]),
        "locks": Key({"type": "string"}, "What `migrate plan` says the statements lock.", "none on application tables"),
    },
}


# Keys holding a list of tables: the $defs entry, its description and its keys.
NESTED: dict[str, tuple[str, str, dict[str, Key]]] = {
    "sources": ("source", "A free-text column to extract, and the column that will reference the lookup row.",
                SOURCE),
    "columns": ("child_column", "A parent column that moves to the child, renamed or transformed.", CHILD_COLUMN),
    "extra_columns": ("extra_column", "A column of the child alone, given a value when the migration creates a"
                      " default child.", EXTRA_COLUMN),
}


class _Asked(dict[str, Any]):
    """An operation's table that records every key a reader asks for, in order."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.asked: list[str] = []

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str) and key not in self.asked:
            self.asked.append(key)
        return super().__contains__(key)


def keys_read(kind: str) -> tuple[list[str], set[str], dict[str, tuple[list[str], set[str]]]]:
    """The keys spec.py's reader of `kind` reads, those it requires, and for a key holding a list of
    tables (extract_lookup's sources) the keys read and required of each table."""
    def read(data: _Asked) -> set[str]:
        problems: list[spec.Problem] = []
        spec.READERS[kind](spec._Reader(problems, "op", data), 0)
        return {p.place.removeprefix("op, ") for p in problems if p.message == "missing"}

    bare = _Asked({"type": kind})
    missing = read(bare)
    nested: dict[str, tuple[list[str], set[str]]] = {}
    for key in NESTED:
        if key in bare.asked:  # a list of tables, each read by a reader of its own
            inner = _Asked()
            inner_missing = read(_Asked({"type": kind, key: [inner]}))
            if inner.asked:
                nested[key] = (inner.asked, {k.removeprefix(f"{key}[0], ") for k in inner_missing
                                             if k.startswith(f"{key}[0], ")})
    return [k for k in bare.asked if k != "type"], missing, nested


def _object(title: str, description: str, keys: dict[str, Key], required: list[str],
            const_type: str | None = None) -> dict[str, Any]:
    props: dict[str, Any] = {}
    if const_type:
        props["type"] = {"const": const_type, "description": f"The operation: {const_type}."}
    for name, key in keys.items():
        props[name] = {**key.value, "description": key.description, "examples": [key.example]}
    return {"type": "object", "title": title, "description": description, "properties": props,
            "required": (["type"] if const_type else []) + required, "additionalProperties": False}


def _checked(where: str, described: dict[str, Key], read: list[str], required: set[str]) -> list[str]:
    if list(described) != read:
        raise RuntimeError(f"plan schema out of step with spec.py: {where} reads {read}, the schema describes"
                           f" {list(described)}")
    return [k for k in read if k in required]


def json_schema() -> dict[str, Any]:
    """The JSON Schema of a plan file as JSON (TOML's tables and arrays), built from spec.py's readers."""
    if not list(KEYS) == list(OPERATION_DOCS) == list(spec.OPERATIONS) or set(spec.READERS) != set(spec.OPERATIONS):
        raise RuntimeError(f"plan schema out of step with spec.py: operations {list(spec.OPERATIONS)},"
                           f" readers {sorted(spec.READERS)}, described {list(KEYS)}")
    defs: dict[str, Any] = {
        "name": {"type": "string", "pattern": spec.IDENT.pattern,
                 "description": "A plain lower-case SQL name: a letter or _, then letters, digits or _; at most 63."},
        "names": {"anyOf": [NAME, {"type": "array", "minItems": 1, "items": NAME}],
                  "description": "A name, or a list of names."},
        "expression": {"type": "string", "pattern": r"^(?![\s\S]*(;|--|/\*))[\s\S]*\S",
                       "description": "One SQL expression on the table's columns: no ';', no comments."},
        "normalizer": {"anyOf": [{"enum": list(spec.NORMALIZERS)}, {"type": "string", "pattern": spec.FUNCTION.pattern}],
                       "description": f"One of {', '.join(spec.NORMALIZERS)}, or schema.function(text) RETURNS text"
                                      " that the plan ships (functions) or the database has."},
        "index_item": {"type": "string", "pattern": r"^\s*" + _anycase(spec.INDEX_ITEM.pattern.strip("^$")) + r"\s*$",
                       "description": "A column name, optionally followed by ASC or DESC and NULLS FIRST or LAST."},
    }
    branches = []
    for kind in spec.OPERATIONS:
        read, required, nested = keys_read(kind)
        req = _checked(kind, KEYS[kind], read, required)
        defs[kind] = _object(kind, OPERATION_DOCS[kind], KEYS[kind], req, kind)
        branches.append({"$ref": f"#/$defs/{kind}"})
        for key, (sub_read, sub_required) in nested.items():
            name, description, keys = NESTED[key]
            defs[name] = _object(name, description, keys, _checked(f"{kind}.{key}", keys, sub_read, sub_required))
    defs["operation"] = {
        "type": "object", "required": ["type"],
        "properties": {"type": {"enum": list(spec.OPERATIONS), "description": "What the operation does."}},
        "oneOf": branches,
    }
    top = _object("villager-shop migration plan", "A plan of generic operations that `villager-shop migrate run"
                  " --plan FILE` carries out online, in order; `migrate plan --plan FILE` checks it against the"
                  " database first.", TOP, ["operation"])
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": ID, **top, "$defs": defs}


def schema_text() -> str:
    """plans/plan.schema.json, as it must read."""
    return json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    sys.stdout.write(schema_text())
