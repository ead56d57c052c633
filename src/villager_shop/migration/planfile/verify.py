"""`migrate verify` for a plan file: the same report as the built-in plan's (verify.py), from the
checks each operation generated: every source row agrees with its normalized form (a lookup
reference, a default child, a child reference) or is quarantined by a rule; every constraint the
plan added is valid, or a guard whose violating rows are all quarantined; every index is valid."""

from __future__ import annotations

from functools import partial
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus

from villager_shop.core.db import own_timeouts, relation_exists
from villager_shop.migration import state
from villager_shop.migration.planfile import record
from villager_shop.migration.planfile.assemble import FilePlan
from villager_shop.migration.planfile.steps import QUARANTINE
from villager_shop.migration.shared_snapshot import run_on_snapshot
from villager_shop.migration.verify import EXAMPLES, Check, Report, _by_operator
from villager_shop.migration.verify import verify as verify_builtin


def verify_database(conn: psycopg.Connection[Any], examples: int = EXAMPLES) -> Report:
    """Whichever plan the database is migrated with."""
    plan = record.current(conn)
    if plan is None:
        return verify_builtin(conn, examples)
    # Outside a caller's transaction the data checks run on two more sessions sharing this one's
    # snapshot (as the built-in verify does); inside one, here alone (it sees its own writes).
    alone = conn.info.transaction_status != TransactionStatus.IDLE
    with own_timeouts(conn):
        return verify(conn, plan, examples, alone=alone)


def verify(conn: psycopg.Connection[Any], plan: FilePlan, examples: int, *, alone: bool = True) -> Report:
    phase = state.phase(conn)
    checks: list[Check] = []
    if phase in ("not_started", "rolled_back", "rolling_back"):
        return Report(False, phase, [Check("migration_present", False, detail=f"nothing to verify: phase is {phase}")],
                      {})
    missing = [t for t in (*plan.new_tables, QUARANTINE.split(".")[1]) if not relation_exists(
        conn, f"villager_migration.{t}" if t == QUARANTINE.split(".")[1] else f"public.{t}")]
    checks.append(Check("objects_present", not missing, len(missing),
                        "missing: " + ", ".join(missing) if missing else "all present"))
    if missing:
        return Report(False, phase, checks, {})
    completed = phase == "completed"
    checks += _data(conn, plan.integrity_completed if completed else plan.integrity, examples, alone)
    held_back = state.withdrawn(conn)
    for c in plan.constraints:
        mark = held_back.get(f"constraint_{c.name}")
        if mark is not None:
            checks.append(Check(f"constraint:{c.name}", True, detail=_by_operator(mark)))
            continue
        row = conn.execute("SELECT contype::text, convalidated FROM pg_constraint WHERE conname = %s"
                           " AND conrelid = to_regclass(%s)", (c.name, f"public.{c.table}")).fetchone()
        if row is None:
            checks.append(Check(f"constraint:{c.name}", False, detail="missing"))
        elif row[0] != "t" and row[1]:
            checks.append(Check(f"constraint:{c.name}", True, detail="valid"))
        elif c.violations_sql is None:
            checks.append(Check(f"constraint:{c.name}", False, detail="NOT VALID (validate step has not run)"))
        else:
            bad = int(conn.execute(c.violations_sql).fetchone()[0])  # type: ignore[index]
            form = "a guard trigger" if row[0] == "t" else "NOT VALID"
            checks.append(Check(f"constraint:{c.name}", bad == 0, bad,
                                f"{form}: enforced on new rows and changed values; " + (
                                    "every legacy row violating it is quarantined" if bad == 0 else
                                    f"{bad} violating rows are not quarantined")))
    names = [n for n in plan.index_names if f"index_{n}" not in held_back]
    checks += [Check(f"index:{n}", True, detail=_by_operator(held_back[f"index_{n}"]))
               for n in plan.index_names if f"index_{n}" in held_back]
    valid = dict(conn.execute(
        "SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
        " WHERE c.relname = ANY(%s) AND c.relnamespace = 'public'::regnamespace", (names,)).fetchall())
    bad_ix = [n for n in names if valid.get(n) is not True]
    checks.append(Check("indexes_valid", not bad_ix, len(bad_ix),
                        "missing or INVALID: " + ", ".join(bad_ix) if bad_ix else "all valid"))
    if phase not in ("migrated", "completed"):
        checks.append(Check("run_finished", False, detail=f"migrate run has not finished (phase {phase})"))
    failing: dict[str, int] = {}
    for ck in checks:
        if not ck.ok and ":" in ck.name and not ck.name.startswith(("constraint:", "index:")):
            table = ck.name.split(":", 1)[1]
            failing[table] = failing.get(table, 0) + ck.count
    return Report(all(c.ok for c in checks), phase, checks, _counts(conn, plan, failing))


def _disagreements(query: str, limit: int, conn: psycopg.Connection[Any]) -> list[Check]:
    rows = conn.execute(
        "SELECT kind, table_name, count(*), (array_agg(json_build_object('row_id', row_key, 'detail', detail)"
        f" ORDER BY row_key))[1:{int(limit)}] FROM ({query}) x(kind, table_name, row_key, detail) GROUP BY 1, 2"
        " ORDER BY 1, 2").fetchall()  # no parameters: the checks' format() strings hold '%'
    return [Check(f"{kind}:{table}", False, int(n), f"{n} rows", list(ex)) for kind, table, n, ex in rows]


def _data(conn: psycopg.Connection[Any], queries: list[str], examples: int, alone: bool) -> list[Check]:
    limit = examples if examples > 0 else 2**31 - 1
    jobs = [partial(_disagreements, q, limit) for q in queries]
    results = [job(conn) for job in jobs] if alone or len(jobs) < 2 else run_on_snapshot(conn, jobs, workers=2)
    out = sorted((c for checks in results for c in checks), key=lambda c: c.name)
    return out or [Check("data_equivalence", True, 0, "every legacy row matches its normalized form or is quarantined")]


def _counts(conn: psycopg.Connection[Any], plan: FilePlan, failing: dict[str, int]) -> dict[str, dict[str, int]]:
    """Per table: rows, quarantined, violations (rows a data check names), migrated (the rest)."""
    out: dict[str, dict[str, int]] = {}
    for table in plan.tables:
        total = int(conn.execute(f"SELECT count(*) FROM public.{table}").fetchone()[0])  # type: ignore[index]
        # An entry that names no row of the table (stale) is no quarantined row.
        key = plan.catalog.table(table).key
        names_a_row = f" AND EXISTS (SELECT 1 FROM public.{table} t WHERE t.{key}::text = q.row_key)" if key else ""
        q = int(conn.execute(f"SELECT count(DISTINCT row_key) FROM {QUARANTINE} q WHERE table_name = %s{names_a_row}",
                             (table,)).fetchone()[0])  # type: ignore[index]
        v = failing.get(table, 0)
        out[table] = {"legacy_rows": total, "quarantined": q, "violations": v, "migrated": max(0, total - q - v)}
    for table in plan.new_tables:
        out[table] = {"rows": int(conn.execute(f"SELECT count(*) FROM public.{table}").fetchone()[0])}  # type: ignore[index]
    return out
