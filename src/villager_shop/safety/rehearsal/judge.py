"""The verdict: how long the migration would take on production, and every reason for a NO-GO."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from villager_shop.legacy.schema import LEGACY_TABLES
from villager_shop.safety.rehearsal.options import RehearsalOptions
from villager_shop.safety.report.model import RehearsalReport, StepResult

EXIT_NO_GO = 5  # = VerificationFailed.exit_code: the rehearsal ran and says NO-GO


def production_rows(conn: psycopg.Connection[Any]) -> dict[str, dict[str, Any]]:
    """Row counts of the legacy tables on the live database: the planner's estimate (free), or an
    exact count when the table was never analyzed."""
    out: dict[str, dict[str, Any]] = {}
    for table in LEGACY_TABLES:
        row = conn.execute(
            "SELECT c.reltuples, c.relpages FROM pg_class c WHERE c.oid = to_regclass(%s)",
            (f"public.{table}",)).fetchone()
        if row is None:
            continue
        reltuples, relpages = float(row[0]), int(row[1])
        if reltuples > 0 or (reltuples == 0 and relpages > 0):
            out[table] = {"rows": int(reltuples), "source": "pg_class.reltuples"}
        else:  # -1 (never analyzed, PG 14+) or 0 pages (PG 13): count
            n = conn.execute(sql.SQL("SELECT count(*) FROM public.{}").format(sql.Identifier(table))).fetchone()
            out[table] = {"rows": int(n[0]) if n else 0, "source": "count(*)"}
    return out


def project(steps: list[StepResult], backfill: list[dict[str, Any]],
            production: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Production duration = per backfilled table, production rows / staging rows per second, plus
    the other steps as measured (steps that scan one table scaled by its production/staging ratio)."""
    by_step = {s.name: s for s in steps}
    staging_rows: dict[str, int] = {}
    tables = []
    for b in backfill:
        step = by_step.get(b["step"])
        seconds = step.seconds if step and step.seconds else None
        rows = int(b["rows_done"])
        staging_rows[b["table"]] = rows
        rate = rows / seconds if seconds else float(b.get("rows_per_s") or 0)
        prod = production.get(b["table"], {}).get("rows")
        tables.append({"table": b["table"], "staging_rows": rows, "staging_seconds": seconds,
                       "rows_per_s": round(rate, 1), "production_rows": prod,
                       "production_source": production.get(b["table"], {}).get("source"),
                       "projected_seconds": round(prod / rate, 2) if prod is not None and rate > 0 else None})
    other_measured = other_scaled = 0.0
    for s in steps:
        if s.phase == "backfill" or s.seconds is None:
            continue
        other_measured += s.seconds
        table = s.table
        ratio = 1.0
        if s.phase in ("validate", "index") and table in staging_rows and staging_rows[table]:
            prod = production.get(str(table), {}).get("rows")
            if prod is not None:
                ratio = max(1.0, prod / staging_rows[str(table)])
        other_scaled += s.seconds * ratio
    backfill_s = sum(t["projected_seconds"] or 0.0 for t in tables)
    unknown = [t["table"] for t in tables if t["projected_seconds"] is None]
    return {"tables": tables, "backfill_seconds": round(backfill_s, 2),
            "other_steps_seconds_measured": round(other_measured, 2),
            "other_steps_seconds_scaled": round(other_scaled, 2),
            "total_seconds": round(backfill_s + other_scaled, 2),
            "unknown_tables": unknown,
            "note": "rates measured on staging under the rehearsal's writer load; validate/index steps scaled by "
                    "their table's production/staging row ratio, the others as measured"}


def decide(report: RehearsalReport, opts: RehearsalOptions) -> list[str]:
    """Every reason for a NO-GO (empty: GO)."""
    reasons: list[str] = []
    failed = [s for s in report.steps if s.status == "failed"]
    for s in failed:
        reasons.append(f"step {s.name} failed: {s.error or report.run_error or 'see the run error'}")
    if report.run_error and not failed:
        reasons.append(f"the migration run failed: {report.run_error}")
    if not report.verify.get("ok"):
        bad = [c for c in report.verify.get("checks", []) if not c.get("ok")]
        shown = "; ".join(f"{c['name']}: {c.get('detail') or c.get('count')}" for c in bad[:6])
        reasons.append(f"verify failed ({len(bad)} check{'s' if len(bad) != 1 else ''}): {shown}")
    if report.lost_writes["count"]:
        reasons.append(f"{report.lost_writes['count']} writes of the live writer are missing or wrong on staging "
                       f"(e.g. {report.lost_writes['examples'][0]})")
    errors = int(report.writer.get("writer_errors") or 0)
    if errors:
        sample = (report.writer.get("error_samples") or ["?"])[0]
        reasons.append(f"the live writer saw {errors} failed write{'s' if errors != 1 else ''} (e.g. {sample})")
    max_ms = float(report.writer.get("writer_max_ms") or 0.0)
    if max_ms >= opts.max_latency_ms:
        worst = (report.writer.get("slowest") or [None])[0]
        where = ""
        if worst:
            where = f": {worst['op']} at {worst['t']:.1f} s" + (
                f", during {', '.join(worst['during'])}" if worst["during"] else ", while no step was running")
        slow = sum(1 for w in report.writer.get("slowest") or [] if w["ms"] >= opts.max_latency_ms)
        more = f" ({slow}{'+' if slow >= 10 else ''} writes over the threshold)" if slow > 1 else ""
        reasons.append(f"writer max latency {max_ms:.1f} ms >= {opts.max_latency_ms:g} ms (--max-latency-ms)"
                       f"{where}{more}")
    if report.squawk.get("available") and report.squawk.get("ok") is False:
        first = (report.squawk.get("output") or [""])[0]
        reasons.append(f"squawk found problems in `migrate plan --sql`: {first}")
    for t in report.quarantine.get("tables", []):
        if t["over_threshold"]:
            why = ", ".join(f"{r} {n}" for r, n in sorted(t["reasons"].items()))
            reasons.append(f"{t['quarantined']} of {t['rows']} rows of {t['table']} quarantined "
                           f"({t['pct']:.2f}% > {opts.max_quarantine_pct:g}% --max-quarantine-pct): {why}")
    return reasons
