"""Is the normalized data equivalent to the legacy data, row by row? One implementation: the
database function check_data_integrity() lists every disagreement; verify reads it one legacy table
at a time on two sessions sharing one snapshot, and adds the catalog checks (objects present,
constraints validated or explained, indexes valid) and the per-table counts (migrated + quarantined
= legacy rows)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus

from villager_shop.core.db import own_timeouts, relation_exists
from villager_shop.legacy.schema import LEGACY_TABLES
from villager_shop.migration import state
from villager_shop.migration.plan import CONSTRAINTS, INDEXES, VIOLATIONS
from villager_shop.migration.shared_snapshot import run_on_snapshot

EXAMPLES = 5
NEW_TABLES = ("addresses", "product_categories", "product_variants")


@dataclass
class Check:
    name: str
    ok: bool
    count: int = 0
    detail: str = ""
    examples: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Report:
    ok: bool
    phase: str
    checks: list[Check]
    counts: dict[str, dict[str, int]]

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "phase": self.phase, "checks": [asdict(c) for c in self.checks],
                "counts": self.counts}

    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]


def verify(conn: psycopg.Connection[Any], examples: int = EXAMPLES) -> Report:
    """`examples`: how many differing rows each failed data check lists (0: every one). One
    transaction with no statement_timeout of the database's: comparing every row takes long. On a
    connection with no transaction open, the rows are compared on two more sessions sharing this
    transaction's snapshot; inside a caller's transaction, on this one alone (it sees its own writes)."""
    alone = conn.info.transaction_status != TransactionStatus.IDLE
    with own_timeouts(conn):
        return _verify(conn, examples, alone)


def _verify(conn: psycopg.Connection[Any], examples: int, alone: bool) -> Report:
    phase = state.phase(conn)
    checks: list[Check] = []
    if phase in ("not_started", "rolled_back", "rolling_back") or not state.schema_exists(conn):
        checks.append(Check("migration_present", False, detail=f"nothing to verify: phase is {phase}"))
        return Report(False, phase, checks, {})
    checks += _objects(conn)
    if not all(c.ok for c in checks):
        return Report(False, phase, checks, {})
    held_back = state.withdrawn(conn)
    catalog: list[Check] = []

    def alongside() -> None:
        catalog.extend(_constraints(conn, completed=phase == "completed", withdrawn=held_back))
        catalog.extend(_indexes(conn, held_back))

    data, counts = _data(conn, examples, alongside, alone)
    checks += data + catalog
    if phase not in ("migrated", "completed"):
        checks.append(Check("run_finished", False, detail=f"migrate run has not finished (phase {phase})"))
    return Report(all(c.ok for c in checks), phase, checks, counts)


def _objects(conn: psycopg.Connection[Any]) -> list[Check]:
    missing = [t for t in (*NEW_TABLES, "db_performance_summary", "slow_queries")
               if not relation_exists(conn, f"public.{t}")]
    if not conn.execute("SELECT to_regproc('public.check_data_integrity') IS NOT NULL").fetchone()[0]:  # type: ignore[index]
        missing.append("check_data_integrity()")
    return [Check("objects_present", not missing, len(missing), "missing: " + ", ".join(missing) if missing else "all present")]


# One piece per legacy table (largest first: the pieces are shared out in this order), and one for
# quarantine entries that name any other table. check_data_integrity() is an SQL function the planner
# inlines: the table filter drops every branch of other tables, so each piece reads only its own.
PIECES = ("order_items", "products", "orders", "users", "shops", None)

_PIECE = """
WITH v AS MATERIALIZED (SELECT kind, table_name, row_id, detail FROM public.check_data_integrity() WHERE {filter})
SELECT kind, table_name, count(*), (array_agg(json_build_object('row_id', row_id, 'detail', detail)
       ORDER BY row_id))[1:{n}]
  FROM v GROUP BY kind, table_name
UNION ALL
SELECT NULL, table_name, count(DISTINCT row_id), NULL FROM v WHERE kind <> 'stale_quarantine' GROUP BY table_name
"""

_TABLE_COUNTS = """
SELECT (SELECT count(*) FROM public.{table}),
       (SELECT count(*) FROM villager_migration.quarantine q WHERE q.table_name = {name}
           AND EXISTS (SELECT 1 FROM public.{table} t WHERE t.id = q.row_id))
"""

Piece = tuple[list[tuple[str | None, str, int, Any]], dict[str, tuple[int, ...]]]


def _piece(table: str | None, examples: int) -> Callable[[psycopg.Connection[Any]], Piece]:
    """The differing rows of one legacy table (grouped by kind, the first `examples` of each named),
    how many distinct rows differ, and the table's row and quarantine counts."""
    n = sql.Literal(examples if examples > 0 else 2**31 - 1)
    if table is None:
        where = sql.SQL("table_name <> ALL({})").format(sql.Literal(list(LEGACY_TABLES)))
    else:
        where = sql.SQL("table_name = {}").format(sql.Literal(table))

    def run(conn: psycopg.Connection[Any]) -> Piece:
        rows = conn.execute(sql.SQL(_PIECE).format(filter=where, n=n)).fetchall()
        sizes: dict[str, tuple[int, ...]] = {}
        if table is not None:
            total, quarantined = conn.execute(sql.SQL(_TABLE_COUNTS).format(
                table=sql.Identifier(table), name=sql.Literal(table))).fetchone()  # type: ignore[misc]
            sizes[table] = (int(total), int(quarantined))
        else:
            for new in NEW_TABLES:
                sizes[new] = (int(conn.execute(sql.SQL("SELECT count(*) FROM public.{}").format(
                    sql.Identifier(new))).fetchone()[0]),)  # type: ignore[index]
        return [(k, t, int(c), ex) for k, t, c, ex in rows], sizes

    return run


def _data(conn: psycopg.Connection[Any], examples: int, alongside: Callable[[], None], alone: bool
          ) -> tuple[list[Check], dict[str, dict[str, int]]]:
    """Every row compared, as of one snapshot: the pieces run on two more sessions that import this
    transaction's snapshot while this one checks the catalog; `alone`: here, one after another."""
    jobs = [_piece(t, examples) for t in PIECES]
    if alone:
        alongside()
        results = [job(conn) for job in jobs]
    else:
        results = run_on_snapshot(conn, jobs, workers=2, alongside=alongside)
    checks: list[Check] = []
    violating: dict[str, int] = {}
    sizes: dict[str, tuple[int, ...]] = {}
    for rows, piece_sizes in results:
        sizes.update(piece_sizes)
        for kind, table, n, ex in rows:
            if kind is None:
                violating[table] = violating.get(table, 0) + n
            else:
                checks.append(Check(f"{kind}:{table}", False, n, f"{n} rows", list(ex)))
    checks.sort(key=lambda c: c.name)
    if not checks:
        checks = [Check("data_equivalence", True, 0, "every legacy row matches its normalized form or is quarantined")]
    return checks, _counts(sizes, violating)


def _by_operator(mark: dict[str, Any]) -> str:
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(mark["at"]))) if mark.get("at") else "?"
    return f"withdrawn by the operator ({mark.get('by', '?')}, {when}" + (
        f": {mark['reason']})" if mark.get("reason") else ")")


def _constraints(conn: psycopg.Connection[Any], *, completed: bool,
                 withdrawn: dict[str, dict[str, Any]] | None = None) -> list[Check]:
    out = []
    for table, name, _, _ in CONSTRAINTS:
        mark = (withdrawn or {}).get(f"constraint_{name}")
        if mark is not None:
            out.append(Check(f"constraint:{name}", True, detail=_by_operator(mark)))
            continue
        row = conn.execute("SELECT contype::text, convalidated FROM pg_constraint WHERE conname = %s"
                           " AND conrelid = to_regclass(%s)", (name, f"public.{table}")).fetchone()
        if row is None:
            out.append(Check(f"constraint:{name}", False, detail="missing"))
        elif row[0] != "t" and row[1]:
            out.append(Check(f"constraint:{name}", True, detail="valid"))
        else:
            # A guard (or NOT VALID) is acceptable only when every violating legacy row is quarantined.
            bad = int(conn.execute(VIOLATIONS[name]).fetchone()[0]) if name in VIOLATIONS else -1  # type: ignore[index]
            ok = bad >= 0
            form = ("a guard trigger: enforced on new rows and changed values" if row[0] == "t"
                    else "NOT VALID: enforced for new writes")
            out.append(Check(f"constraint:{name}", ok, bad if bad > 0 else 0,
                             f"{form}; {bad} legacy rows violate it (each one must be quarantined: the data"
                             " checks list any that is not)" if ok else "NOT VALID (validate step has not run)"))
    return out


def _indexes(conn: psycopg.Connection[Any], withdrawn: dict[str, dict[str, Any]] | None = None) -> list[Check]:
    names = ["idx_order_items_product_id", *[i[0] for i in INDEXES]]
    out = [Check(f"index:{n}", True, detail=_by_operator(mark)) for n in names
           if (mark := (withdrawn or {}).get(f"index_{n}")) is not None]
    names = [n for n in names if f"index_{n}" not in (withdrawn or {})]
    rows = dict(conn.execute(
        "SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
        " WHERE c.relname = ANY(%s)", (names,)).fetchall())
    bad = [n for n in names if rows.get(n) is not True]
    return [*out, Check("indexes_valid", not bad, len(bad),
                        "missing or INVALID: " + ", ".join(bad) if bad else "all valid")]


def _counts(sizes: dict[str, tuple[int, ...]], violating: dict[str, int]) -> dict[str, dict[str, int]]:
    """Per legacy table: rows, quarantined, violations, migrated (= rows - quarantined - violations).
    Quarantined: the entries that name a row of the table (one that names no row, or a row that is
    fine, is a `stale_quarantine` violation of check_data_integrity())."""
    out: dict[str, dict[str, int]] = {}
    for table in LEGACY_TABLES:
        total, q = sizes[table]
        v = int(violating.get(table, 0))
        out[table] = {"legacy_rows": total, "migrated": total - q - v, "quarantined": q, "violations": v}
    for table in NEW_TABLES:
        out[table] = {"rows": sizes[table][0]}
    return out
