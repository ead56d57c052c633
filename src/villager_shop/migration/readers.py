"""Who still reads the legacy columns, on the evidence PostgreSQL keeps (SPEC defect 11).

`complete` drops columns that an old application instance may still read. A read leaves no trace
in the tables (the sync triggers only see writes), but `pg_stat_statements` counts every statement
a server runs, per database and role, and `pg_stat_activity` shows who is connected and what each
session ran last. So during `complete`'s quiet window we take the statement counters at its start
and at its end, keep the statements of this database whose count grew and whose text names a
legacy column (or selects `*` from a legacy table), and name the sessions that ran them, matched on
`query_id` where the server computes one (PostgreSQL 14+), else on the statement's shape. Only
top-level statements count where the server tells them apart (14+): the statements of the sync
triggers run nested in the applications' own. The migration's own statements (they name its schema)
are left out.

What it cannot see it says: without pg_stat_statements (not preloaded, not created in this
database, or `pg_stat_statements.track = none`) there is no evidence, and `complete` refuses unless
told to go on without it; a role that may not read other roles' statements (neither superuser nor a
member of pg_read_all_stats) sees their counters grow without their text, and that refuses too,
naming the roles.

The text is read by a small lexer, not a parser: a column counts when it is qualified by a legacy
table or its alias (`products.price`, `p.price`, `"public"."products"."price"`), or unqualified
while the statement names exactly the legacy tables that have a column of that name; output names
(`AS price`), function names and constants never count. A statement of the normalized schema
that joins products with product_variants and reads `v.price` is not a reader.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import psycopg

from villager_shop.core.db import own_timeouts
from villager_shop.core.errors import RefusedError

OURS = "villager_migration"
SAMPLE_S = 0.1  # how often the window looks at pg_stat_activity: a session running a 1 ms query every 100 ms is seen
NO_CHECK_FLAG = "--no-reader-check"


@dataclass(frozen=True)
class Session:
    pid: int
    application_name: str
    client_addr: str | None
    usename: str | None

    def __str__(self) -> str:
        name = self.application_name or "(no application_name)"
        return f"{name} ({self.usename or '?'}@{self.client_addr or 'local socket'}, pid {self.pid})"

    def to_dict(self) -> dict[str, Any]:
        return {"pid": self.pid, "application_name": self.application_name, "client_addr": self.client_addr,
                "usename": self.usename}


@dataclass
class Statement:
    queryid: int | None
    role: str
    query: str
    calls: int  # executions during the window
    reads: tuple[str, ...]  # "products.price", "products.*"
    sessions: list[Session] = field(default_factory=list)

    def __str__(self) -> str:
        text = " ".join(self.query.split())
        text = text if len(text) <= 160 else text[:157] + "..."
        who = ", ".join(map(str, self.sessions)) or "no session connected now ran it (short-lived connections?)"
        return f"{', '.join(self.reads)}: {self.calls} call{'s' if self.calls != 1 else ''} of [{text}] by {who}"

    def to_dict(self) -> dict[str, Any]:
        return {"queryid": self.queryid, "role": self.role, "query": self.query, "calls": self.calls,
                "reads": list(self.reads), "sessions": [s.to_dict() for s in self.sessions]}


@dataclass
class Evidence:
    """What a window saw. `visible` False: no evidence could be had (`why`)."""

    visible: bool
    why: str | None = None
    seconds: float = 0.0
    statements: list[Statement] = field(default_factory=list)
    hidden: dict[str, int] = field(default_factory=dict)  # role -> calls whose text this role may not read

    @property
    def blocking(self) -> bool:
        return bool(self.statements or self.hidden)

    def describe(self) -> str:
        parts = [str(s) for s in self.statements]
        if self.hidden:
            roles = ", ".join(f"{r} ({n} calls)" for r, n in sorted(self.hidden.items()))
            parts.append(f"statements of {roles} that this role may not read (grant it pg_read_all_stats)")
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {"visible": self.visible, "why": self.why, "window_s": round(self.seconds, 3),
                "statements": [s.to_dict() for s in self.statements], "hidden": dict(self.hidden)}


# --- what PostgreSQL can tell -----------------------------------------------------------------------

def _where(conn: psycopg.Connection[Any]) -> tuple[str | None, str | None]:
    """(schema of the pg_stat_statements view, None) or (None, why it cannot be read here)."""
    with own_timeouts(conn):
        row = conn.execute("SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace"
                           " WHERE e.extname = 'pg_stat_statements'").fetchone()
    if row is None:
        return None, ("pg_stat_statements is not created in this database (add it to shared_preload_libraries,"
                      " restart, and run CREATE EXTENSION pg_stat_statements)")
    schema = str(row[0])
    try:
        with own_timeouts(conn):
            conn.execute(f"SELECT 1 FROM {_ident(schema)}.pg_stat_statements LIMIT 1")
            track = conn.execute("SELECT current_setting('pg_stat_statements.track', true)").fetchone()
    except psycopg.Error as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return None, f"pg_stat_statements cannot be read: {first}"
    if track and track[0] == "none":
        return None, "pg_stat_statements.track is 'none': no statement is counted"
    return schema, None


def require_visible(conn: psycopg.Connection[Any]) -> None:
    """Refuse up front (before any wait) when no reader could be seen."""
    _, why = _where(conn)
    if why:
        raise RefusedError(f"complete refused: it cannot see who still reads the legacy columns: {why}; "
                           f"pass {NO_CHECK_FLAG} to go on without that check; nothing was changed")


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _has_column(conn: psycopg.Connection[Any], relation: str, column: str) -> bool:
    return conn.execute("SELECT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = %s::regclass AND attname = %s"
                        " AND NOT attisdropped)", (relation, column)).fetchone() == (True,)


def _catalog(conn: psycopg.Connection[Any]) -> dict[str, set[str]]:
    """Relations of schema public and their columns (what an unqualified column may belong to)."""
    out: dict[str, set[str]] = {}
    for rel, col in conn.execute(
            "SELECT c.relname, a.attname FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid"
            " WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'f')"
            " AND a.attnum > 0 AND NOT a.attisdropped"):
        out.setdefault(str(rel), set()).add(str(col))
    return out


def _candidate_pattern(columns: Iterable[tuple[str, str]]) -> tuple[str, str]:
    """Two POSIX regexes a statement's text must match to be read at all: a legacy table's name, and
    a legacy column's name or a `*`."""
    tables = sorted({t for t, _ in columns})
    names = sorted({c for _, c in columns})
    return (r"\m(" + "|".join(tables) + r")\M", r"\m(" + "|".join(names) + r")\M|\*")


@dataclass
class _Counts:
    statements: dict[tuple[str, int, bool], tuple[int, str]]  # (role, queryid, toplevel) -> (calls, query)
    hidden: dict[str, int]  # role -> calls of statements whose text is hidden from us


def _snapshot(conn: psycopg.Connection[Any], schema: str, patterns: tuple[str, str], toplevel: bool) -> _Counts:
    view = f"{_ident(schema)}.pg_stat_statements"
    top = "toplevel" if toplevel else "true"
    with own_timeouts(conn):
        rows = conn.execute(
            f"SELECT userid::regrole::text, queryid, {top}, calls, query FROM {view}"
            " WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
            f" AND {top} AND queryid IS NOT NULL AND query ~* %s AND query ~* %s AND strpos(query, %s) = 0",
            (*patterns, OURS)).fetchall()
        hidden = conn.execute(
            f"SELECT userid::regrole::text, sum(calls)::bigint FROM {view}"
            " WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
            f" AND {top} AND queryid IS NULL GROUP BY 1").fetchall()
    return _Counts({(str(r), int(q), bool(t)): (int(n), str(text)) for r, q, t, n, text in rows},
                   {str(r): int(n) for r, n in hidden})


@dataclass
class _Seen:
    session: Session
    query_ids: set[int] = field(default_factory=set)
    shapes: set[str] = field(default_factory=set)


def _sample(conn: psycopg.Connection[Any], with_query_id: bool, seen: dict[int, _Seen], table_re: re.Pattern[str]) -> None:
    qid = "query_id" if with_query_id else "NULL::bigint"
    with own_timeouts(conn):  # a transaction: its end drops the activity snapshot for the next sample
        rows = conn.execute(
            f"SELECT pid, coalesce(application_name, ''), client_addr::text, usename, {qid}, query"
            " FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
            " AND backend_type = 'client backend'").fetchall()
    for pid, app, addr, user, query_id, query in rows:
        s = seen.get(pid)
        if s is None or s.session.application_name != app:
            s = seen[pid] = _Seen(Session(int(pid), str(app), addr, user))
        if query_id:
            s.query_ids.add(int(query_id))
        if query and table_re.search(query):
            s.shapes.add(shape(query))


def watch(conn: psycopg.Connection[Any], columns: Iterable[tuple[str, str]], seconds: float,
          *, sample_s: float = SAMPLE_S) -> Evidence:
    """Watch the database for `seconds`: the statements naming `columns` ((table, column) of schema
    public) that ran meanwhile, with the sessions that ran them. `conn` must be in autocommit."""
    columns = tuple(columns)
    schema, why = _where(conn)
    if schema is None:
        return Evidence(False, why, seconds)
    with own_timeouts(conn):
        toplevel = _has_column(conn, f"{_ident(schema)}.pg_stat_statements", "toplevel")
        with_query_id = _has_column(conn, "pg_catalog.pg_stat_activity", "query_id")
        catalog = _catalog(conn)
    patterns = _candidate_pattern(columns)
    table_re = re.compile(patterns[0].replace(r"\m", r"\b").replace(r"\M", r"\b"), re.I)
    seen: dict[int, _Seen] = {}
    t0 = time.monotonic()
    before = _snapshot(conn, schema, patterns, toplevel)
    while True:
        _sample(conn, with_query_id, seen, table_re)
        left = seconds - (time.monotonic() - t0)
        if left <= 0:
            break
        time.sleep(min(sample_s, left))
    after = _snapshot(conn, schema, patterns, toplevel)
    elapsed = time.monotonic() - t0
    statements = []
    for key, (calls, query) in after.statements.items():
        grew = calls - before.statements.get(key, (0, ""))[0]
        if grew <= 0:
            continue
        reads = analyze(query, columns, catalog)
        if not reads:
            continue
        role, queryid, _ = key
        form = shape(query)
        sessions = sorted({s.session for s in seen.values() if queryid in s.query_ids or form in s.shapes},
                          key=lambda s: s.pid)
        statements.append(Statement(queryid, role, query, grew, tuple(sorted(reads)), sessions))
    statements.sort(key=lambda s: -s.calls)
    hidden = {r: n - before.hidden.get(r, 0) for r, n in after.hidden.items() if n > before.hidden.get(r, 0)}
    return Evidence(True, None, elapsed, statements, hidden)


def wait(seconds: float) -> Evidence | None:
    """The quiet window without the reader check: no evidence."""
    time.sleep(max(0.0, seconds))
    return None


def refuse_if_read(evidence: Evidence | None, seconds: float) -> None:
    if evidence is None or not evidence.blocking:
        return
    raise RefusedError(f"complete refused: the legacy columns were read in the last {seconds:g} s: "
                       f"{evidence.describe()}; switch or stop those instances first (docs/application-switch.md),"
                       " or, if they read nothing that complete drops, pass --no-reader-check")


# --- reading a statement ----------------------------------------------------------------------------

_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<comment>--[^\n]*|/\*.*?\*/)
  | (?P<dollar>\$(?P<tag>[A-Za-z_][A-Za-z_0-9]*)?\$.*?\$(?P=tag)?\$)
  | (?P<param>\$\d+)
  | (?P<estring>[Ee]'(?:[^'\\]|\\.|'')*')
  | (?P<string>(?:[BbXxNn]|[Uu]&)?'(?:[^']|'')*')
  | (?P<qident>(?:[Uu]&)?"(?:[^"]|"")*")
  | (?P<ident>[A-Za-z_\u0080-\U0010ffff][A-Za-z_0-9$\u0080-\U0010ffff]*)
  | (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<punct>::|[.,()*;\[\]])
  | (?P<other>.)
""", re.S | re.X)

# Words after a table name that are not its alias.
_NOT_ALIAS = frozenset((
    "where", "join", "inner", "left", "right", "full", "outer", "cross", "natural", "on", "using", "set", "values",
    "default", "returning", "order", "group", "having", "limit", "offset", "fetch", "for", "window", "union",
    "except", "intersect", "lateral", "tablesample", "with", "select", "as", "only", "from", "into", "do", "update",
    "delete", "insert", "when", "then", "else", "end", "and", "or", "not", "is", "in",
))


# Words after which an identifier is an expression, not an output name.
_BEFORE_EXPRESSION = frozenset((
    "select", "distinct", "all", "where", "and", "or", "not", "by", "on", "set", "when", "then", "else", "case",
    "having", "returning", "in", "is", "between", "like", "ilike", "similar", "any", "some", "exists", "using",
    "with", "values", "array", "row", "over", "partition", "filter", "within", "interval",
))


def tokens(sql: str) -> list[tuple[str, str]]:
    """(kind, text) of each token; identifiers lower-cased unless quoted; comments and spaces dropped."""
    out = []
    for m in _TOKEN.finditer(sql):
        kind = m.lastgroup or "other"
        if kind in ("ws", "comment"):
            continue
        text = m.group(kind if kind != "tag" else "dollar")
        if kind == "ident":
            out.append(("ident", text.lower()))
        elif kind == "qident":
            body = text[text.index('"') + 1:-1]
            out.append(("ident", body.replace('""', '"')))
        elif kind in ("string", "estring", "dollar", "param", "number"):
            out.append(("const", "?"))
        else:
            out.append((kind, text))
    return out


def shape(sql: str) -> str:
    """A statement's text with constants and parameters blanked and case and spaces folded: what
    pg_stat_statements keeps of it and what pg_stat_activity shows of it compare equal."""
    return " ".join(text for _, text in tokens(sql))


def analyze(sql: str, columns: Iterable[tuple[str, str]], catalog: dict[str, set[str]]) -> set[str]:
    """The legacy columns `sql` names ("table.column"), and "table.*" for a `*` over a legacy table.
    `catalog` holds the relations of schema public with their columns."""
    legacy: dict[str, set[str]] = {}
    for t, c in columns:
        legacy.setdefault(t, set()).add(c)
    toks = tokens(sql)
    n = len(toks)

    def word(i: int) -> str | None:
        return toks[i][1] if 0 <= i < n and toks[i][0] == "ident" else None

    # Dotted names: start index -> parts, and whether a `.*` follows.
    names: list[tuple[int, list[str], bool]] = []
    i = 0
    while i < n:
        if toks[i][0] == "ident" and not (i > 0 and toks[i - 1][1] == "."):
            parts, j = [toks[i][1]], i + 1
            star = False
            while j + 1 < n and toks[j][1] == ".":
                if toks[j + 1][0] == "ident":
                    parts.append(toks[j + 1][1])
                    j += 2
                elif toks[j + 1][1] == "*":
                    star = True
                    j += 2
                    break
                else:
                    break
            names.append((i, parts, star))
            i = j
        else:
            i += 1

    # Relations the statement names, and the aliases bound to them.
    referenced: set[str] = set()
    bound: dict[str, str] = {}
    table_at: set[int] = set()
    refs: list[tuple[int, str]] = []  # (token index, relation), in order
    for start, parts, star in names:
        if star or len(parts) > 2 or (len(parts) == 2 and parts[0] != "public"):
            continue
        rel = parts[-1]
        if rel not in catalog:
            continue
        end = start + 2 * len(parts) - 1  # index after the name
        prev = word(start - 1)
        if end < n and toks[end][1] == "(" and prev != "into":
            continue  # a function call of the same name
        if end < n and toks[end][1] == "." :
            continue
        if prev == "as":
            continue  # an output name
        referenced.add(rel)
        bound.setdefault(rel, rel)
        table_at.add(start)
        refs.append((start, rel))
        k = end
        if word(k) == "as":
            k += 1
        alias = word(k)
        if alias and alias not in _NOT_ALIAS:
            bound[alias] = rel
            table_at.add(k)
        if prev == "into":
            bound.setdefault("excluded", rel)

    found: set[str] = set()
    for start, parts, star in names:
        if start in table_at:
            continue
        if star or len(parts) >= 2:
            qualifier = parts if star else parts[:-1]
            if len(qualifier) == 2 and qualifier[0] != "public":
                continue
            if len(qualifier) > 2:
                continue
            owner = bound.get(qualifier[-1]) if len(qualifier) == 1 else (
                qualifier[-1] if qualifier[-1] in referenced else None)
            if owner is None or owner not in legacy:
                continue
            rel = owner
            if star:
                found.add(f"{rel}.*")
            elif parts[-1] in legacy[rel]:
                found.add(f"{rel}.{parts[-1]}")
            continue
        col = parts[0]
        prev = word(start - 1)
        after = toks[start + 1][1] if start + 1 < n else ""
        if prev == "as" or after in ("(", ".") or col in bound:
            continue
        if start > 0 and ((prev is not None and prev not in _BEFORE_EXPRESSION)
                          or toks[start - 1][0] == "const" or toks[start - 1][1] == ")"):
            continue  # right after an expression: an output name (`SELECT p.base_price price`)
        owners = {rel for rel in referenced if col in catalog.get(rel, set())}
        if owners and all(rel in legacy and col in legacy[rel] for rel in owners):
            found.update(f"{rel}.{col}" for rel in owners)

    # `SELECT *` reads every column of the relations in its own FROM (same parenthesis level, up to
    # the next SELECT there); `RETURNING *` those of its INSERT, UPDATE or DELETE; `TABLE x` all of x.
    depth, level = [], 0
    for _, text in toks:
        level -= text == ")"
        depth.append(level)
        level += text == "("
    for i, (kind, text) in enumerate(toks):
        if kind != "punct" or text != "*":
            continue
        prev = word(i - 1)
        if prev == "returning":
            verbs = [j for j in range(i) if depth[j] == depth[i] and word(j) in ("insert", "update", "delete")]
            if verbs:
                target = next((rel for j, rel in refs if j > verbs[-1] and depth[j] == depth[i]), None)
                if target in legacy:
                    found.add(f"{target}.*")
        elif prev in ("select", "distinct", "all") or (i > 0 and toks[i - 1][1] == ","):
            end = next((j for j in range(i + 1, n) if depth[j] < depth[i]
                        or (depth[j] == depth[i] and word(j) == "select")), n)
            found.update(f"{rel}.*" for j, rel in refs if i < j < end and depth[j] == depth[i] and rel in legacy)
    if word(0) == "table" and word(1) in legacy:
        found.add(f"{word(1)}.*")
    return found
