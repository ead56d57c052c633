"""The rehearsal report as files: report.json (everything), report.md and report.html (the same
sections, for people; the HTML adds the timeline SVG). Both human forms are built from one list of
sections so they never disagree."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html import escape
from importlib import resources
from pathlib import Path
from typing import Any

from villager_shop.core.units import format_bytes
from villager_shop.safety.report.model import RehearsalReport
from villager_shop.safety.report.svg import Bar, timeline_svg


@dataclass
class Section:
    title: str
    text: list[str] = field(default_factory=list)
    headers: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    preformatted: list[str] = field(default_factory=list)


def _s(v: float | None, unit: str = " s", digits: int = 2) -> str:
    return "-" if v is None else f"{v:,.{digits}f}{unit}"


def _n(v: Any) -> str:
    return "-" if v is None else f"{int(v):,}"


def sections(r: RehearsalReport) -> list[Section]:
    out: list[Section] = []
    verdict = Section("Verdict", [f"**{r.verdict}**" + (": every check held." if r.go else " — reasons:")])
    verdict.text += [f"- {reason}" for reason in r.reasons]
    out.append(verdict)

    proj = r.projection
    out.append(Section("Rehearsal", [
        f"Live database `{r.live_database}` on {r.server}; staging copy `{r.staging_database}` "
        f"({'kept' if r.staging_kept else 'dropped afterwards'}).",
        f"Backup `{r.backup['id']}` ({'created for this rehearsal' if r.backup['created_now'] else 'from the manifest'},"
        f" snapshot {r.backup['snapshot_at']}, LSN {r.backup['lsn']}, {_n(r.backup['rows'])} rows).",
        f"Started {r.started_at}, finished {r.finished_at}: {r.seconds:.1f} s in all. Live writer: "
        f"{r.thresholds['writer_threads']['legacy']} legacy + {r.thresholds['writer_threads']['new']} new-application "
        "threads on staging during the migration.",
        f"Projected duration on production: **{_s(proj.get('total_seconds'))}** "
        f"(backfill {_s(proj.get('backfill_seconds'))}, other steps {_s(proj.get('other_steps_seconds_scaled'))}).",
    ], ["phase", "seconds", "status"], [[p.name, _s(p.seconds), p.status] for p in r.phases]))
    if r.run_error:
        out[-1].text.append(f"The migration run failed: {r.run_error}")

    out.append(Section("Steps", [], ["#", "step", "phase", "status", "seconds", "attempts", "detail"], [
        [str(i), s.name, s.phase, s.status, _s(s.seconds, "", 3), str(s.attempts or ""),
         s.error or _detail(s.detail)] for i, s in enumerate(r.steps, 1)]))

    lk, w = r.locks, r.writer
    out.append(Section("Locks: longest waits and holds", [
        "Backfill batches hold row locks on one batch only; brief-lock DDL steps wait at most lock_timeout and "
        "retry; the writer's latency is what the application felt."], ["measure", "value"], [
        ["longest backfill batch (row locks held)",
         f"{_s(lk.get('max_backfill_batch_ms'), ' ms', 1)} ({lk.get('max_backfill_batch_table') or '-'})"],
        ["longest brief-lock DDL step (upper bound of its lock hold, retries included)",
         f"{_s(lk.get('longest_brief_lock_step_ms'), ' ms', 1)} ({lk.get('longest_brief_lock_step') or '-'})"],
        ["DDL lock retries (lock_timeout hit, then retried)",
         f"{lk.get('ddl_lock_retries', 0)}" + "".join(
             f"; {d['step']}: {d['lock_retries']}" for d in lk.get("ddl_retried_steps", []))],
        ["writer max latency", _s(w.get("writer_max_ms"), " ms", 1)],
        ["writer p99 / p50 latency", f"{_s(w.get('writer_p99_ms'), ' ms', 1)} / {_s(w.get('writer_p50_ms'), ' ms', 1)}"],
        ["writer writes / errors", f"{_n(w.get('writer_ops'))} / {_n(w.get('writer_errors'))}"],
        ["writer rows checked afterwards / missing or wrong",
         f"{_n(r.lost_writes['checked_rows'])} / {_n(r.lost_writes['count'])}"],
    ]))

    if w.get("slowest"):
        out.append(Section("Slowest writes of the live writer", [], ["t (s)", "ms", "operation", "during"], [
            [f"{x['t']:.2f}", f"{x['ms']:.1f}", x["op"], ", ".join(x["during"]) or "-"] for x in w["slowest"]]))

    out.append(Section("Backfill rates (staging)", [], ["table", "rows", "rows/s", "batches", "max batch ms"], [
        [b["table"], _n(b["rows_done"]), _n(b["rows_per_s"]), _n(b["batches"]), _s(b["max_batch_ms"], "", 1)]
        for b in r.backfill]))

    q = Section("Quarantine", [f"Threshold: more than {r.thresholds['max_quarantine_pct']:g}% of a table is NO-GO."],
                ["table", "rows", "quarantined", "%", "reasons"],
                [[t["table"], _n(t["rows"]), _n(t["quarantined"]), f"{t['pct']:.2f}" + (" (over)" if t["over_threshold"]
                                                                                          else ""),
                  ", ".join(f"{k} {v}" for k, v in sorted(t["reasons"].items())) or "-"]
                 for t in r.quarantine.get("tables", [])])
    q.preformatted = [f"{e['table']} {e['row_id']} [{e['reason']}] {e['detail']}"
                      for e in r.quarantine.get("examples", [])]
    out.append(q)

    sq = r.squawk
    state = "not run" if not sq.get("available") else ("passed" if sq.get("ok") else "FAILED")
    out.append(Section("squawk on `migrate plan --sql`", [f"{state}: {sq.get('detail', '')}"],
                       preformatted=list(sq.get("output") or [])[:20]))

    bl = r.baseline
    b = Section("Baseline diff (staging, before → after)", [
        "Tables whose sequential scans became index scans: " + (", ".join(bl.get("seq_to_index") or []) or "none"),
        "New indexes used: " + (", ".join(f"{i['index']} ({i['idx_scan']} scans)" for i in
                                          bl.get("new_indexes_used") or []) or "none"),
        "New indexes not used yet: " + (", ".join(bl.get("new_indexes_unused") or []) or "none"),
    ], ["table", "Δ seq_scan", "Δ idx_scan", "Δ seq_tup_read", "size before", "size after"], [
        [t["table"] + (" (new)" if t["new"] else ""), _n(t["seq_scan"]), _n(t["idx_scan"]), _n(t["seq_tup_read"]),
         format_bytes(t["bytes_before"]), format_bytes(t["bytes_after"])] for t in bl.get("tables", [])])
    b.text += [f"note: {n}" for n in bl.get("notes", [])]
    out.append(b)

    out.append(Section("Catalog query plans (same questions, legacy schema → normalized schema)", [],
                       ["query", "before", "mean ms", "after", "mean ms"], [
        [p["query"], "; ".join(p.get("before", {}).get("scans", [])) or "-", _s(p.get("before", {}).get("mean_ms"), "", 3),
         "; ".join(p.get("after", {}).get("scans", [])) or "-", _s(p.get("after", {}).get("mean_ms"), "", 3)]
        for p in r.query_plans]))

    out.append(Section("Projected duration on production", [
        proj.get("note", ""),
        f"Total: {_s(proj.get('total_seconds'))} = backfill {_s(proj.get('backfill_seconds'))} + other steps "
        f"{_s(proj.get('other_steps_seconds_scaled'))} (as measured on staging: "
        f"{_s(proj.get('other_steps_seconds_measured'))})."],
        ["table", "staging rows", "rows/s", "production rows", "source", "projected"], [
        [t["table"], _n(t["staging_rows"]), _n(t["rows_per_s"]), _n(t["production_rows"]),
         t.get("production_source") or "-", _s(t["projected_seconds"])] for t in proj.get("tables", [])]))
    if r.notes:
        out.append(Section("Notes", [f"- {n}" for n in r.notes]))
    return out


def _detail(d: dict[str, Any]) -> str:
    keep = {k: v for k, v in d.items() if k not in ("seconds", "attempts", "statements")}
    return ", ".join(f"{k}={v}" for k, v in keep.items())[:160]


# --- markdown ---------------------------------------------------------------------------------------

def _md_cell(v: str) -> str:
    return v.replace("|", "\\|").replace("\n", " ")


def to_markdown(r: RehearsalReport) -> str:
    lines = [f"# Migration rehearsal: {r.verdict}", ""]
    for sec in sections(r):
        lines += [f"## {sec.title}", ""]
        for t in sec.text:
            lines.append(t)
        if sec.text:
            lines.append("")
        if sec.headers:
            lines.append("| " + " | ".join(sec.headers) + " |")
            lines.append("|" + "---|" * len(sec.headers))
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in sec.rows]
            lines.append("")
        if sec.preformatted:
            lines += ["```", *sec.preformatted, "```", ""]
    return "\n".join(lines)


# --- html -------------------------------------------------------------------------------------------

def _inline(text: str) -> str:
    """Escape, then the two bits of markdown the sections use: **bold** and `code`."""
    out = escape(text)
    parts = out.split("**")
    out = "".join(f"<strong>{p}</strong>" if i % 2 else p for i, p in enumerate(parts))
    parts = out.split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def _html_sections(r: RehearsalReport) -> str:
    out: list[str] = []
    for sec in sections(r)[1:]:  # the verdict has its own banner
        out.append(f"<section><h2>{_inline(sec.title)}</h2>")
        bullets = [t for t in sec.text if t.startswith("- ")]
        for t in sec.text:
            if not t.startswith("- "):
                out.append(f"<p>{_inline(t)}</p>")
        if bullets:
            out.append("<ul>" + "".join(f"<li>{_inline(t[2:])}</li>" for t in bullets) + "</ul>")
        if sec.headers:
            out.append("<table><thead><tr>" + "".join(f"<th>{escape(h)}</th>" for h in sec.headers) + "</tr></thead>"
                       "<tbody>" + "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>"
                                           for row in sec.rows) + "</tbody></table>")
        if sec.preformatted:
            out.append("<pre>" + escape("\n".join(sec.preformatted)) + "</pre>")
        out.append("</section>")
    return "\n".join(out)


def bars(r: RehearsalReport) -> tuple[list[Bar], float]:
    """The Gantt bars (phases, then every step that ran), in seconds since the first phase."""
    origin = r.phases[0].start if r.phases else 0.0
    out = [Bar(p.name, p.start - origin, p.end - origin, "phase", status=p.status) for p in r.phases]
    for s in r.steps:
        if s.start is None or s.end is None:
            continue
        out.append(Bar(s.name, s.start - origin, s.end - origin, "step", s.phase, s.status,
                       s.error or _detail(s.detail)))
    end = max((p.end for p in r.phases), default=origin) - origin
    return out, end


def to_html(r: RehearsalReport) -> str:
    template = resources.files("villager_shop.safety.report").joinpath("rehearsal.html").read_text(encoding="utf-8")
    bar_list, duration = bars(r)
    svg = timeline_svg(bar_list, r.latency_series, threshold_ms=float(r.thresholds["max_latency_ms"]),
                       duration=duration)
    reasons = "".join(f"<li>{escape(x)}</li>" for x in r.reasons) or "<li>every check held</li>"
    values = {
        "title": escape(f"Migration rehearsal of {r.live_database}: {r.verdict}"),
        "verdict": escape(r.verdict),
        "verdict_class": "go" if r.go else "nogo",
        "reasons": reasons,
        "generated": escape(datetime.now(UTC).isoformat(timespec="seconds")),
        "timeline_svg": svg,
        "sections": _html_sections(r),
    }
    for key, value in values.items():
        template = template.replace("{{" + key + "}}", value)
    return template


def write_report(r: RehearsalReport, report_dir: Path) -> list[Path]:
    """Write report.json, report.md and report.html (owner-only: they quote quarantined rows)."""
    report_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    files = {"report.json": json.dumps(r.to_dict(), indent=2, default=str) + "\n",
             "report.md": to_markdown(r), "report.html": to_html(r)}
    written = []
    for name, text in files.items():
        path = report_dir / name
        tmp = path.with_suffix(path.suffix + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
        written.append(path)
    return written
