"""`villager-shop rehearse`: the migration rehearsed on a staging copy, judged GO or NO-GO.

Exit codes: 0 GO; 5 NO-GO (the rehearsal ran, the report lists every reason); 4 refused (e.g. a
staging name that could be the live database); other failures as every command (one line).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from villager_shop.cli.migrate import RichReporter
from villager_shop.core.config import get_settings
from villager_shop.core.errors import VerificationFailed
from villager_shop.embedded import session_database_url
from villager_shop.migration.steps.base import SilentReporter
from villager_shop.safety.rehearse import EXIT_NO_GO, RehearsalOptions
from villager_shop.safety.rehearse import rehearse as run_rehearsal
from villager_shop.safety.report.model import RehearsalReport

out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def render(r: RehearsalReport) -> None:
    t = Table("step", "status", "seconds", title="migration steps on staging (failed, and those >= 0.05 s)")
    for s in r.steps:
        if s.status not in ("done", "pending") or (s.seconds or 0) >= 0.05:
            t.add_row(s.name, s.status, "-" if s.seconds is None else f"{s.seconds:.2f}")
    out.print(t)
    pending = sum(1 for s in r.steps if s.status == "pending")
    if pending:
        out.print(f"{pending} steps did not run", markup=False)
    w, lk, p = r.writer, r.locks, r.projection
    batch = lk.get("max_backfill_batch_ms")
    out.print(f"writer: {w.get('writer_ops')} writes, {w.get('writer_errors')} errors, p99 {w.get('writer_p99_ms')} ms,"
              f" max {w.get('writer_max_ms')} ms; longest backfill batch {'-' if batch is None else f'{batch} ms'}; "
              f"DDL lock retries {lk.get('ddl_lock_retries')}", markup=False)
    rates = ", ".join(f"{b['table']} {b['rows_per_s']:,}/s" for b in r.backfill)
    out.print(f"backfill rates: {rates or '-'}", markup=False)
    if p.get("complete"):
        out.print(f"projected on production: {p.get('total_seconds')} s (backfill {p.get('backfill_seconds')} s)",
                  markup=False)
    else:
        out.print("projected on production: n/a (the run did not finish on staging)", markup=False)
    sq = r.squawk
    out.print(f"squawk: {'not run' if not sq.get('available') else ('ok' if sq.get('ok') else 'FAILED')}"
              f" ({sq.get('detail')})", markup=False)
    if r.baseline.get("seq_to_index") or r.baseline.get("new_indexes_used"):
        out.print("baseline: seq → index scans on " + (", ".join(r.baseline.get("seq_to_index") or []) or "-") +
                  "; new indexes used: " + (", ".join(i["index"] for i in r.baseline.get("new_indexes_used") or [])
                                            or "-"), markup=False)
    out.print(f"report: {r.report_dir}/report.html (and report.md, report.json)", markup=False)
    if r.go:
        out.print("[bold green]GO[/]: every check held on staging.")
    else:
        out.print("[bold red]NO-GO[/]:")
        for reason in r.reasons:
            out.print(f"  - {reason}", markup=False)


def rehearse(
    backup: str | None = typer.Option(None, "--backup", metavar="ID",
                                      help="backup to restore (default: the newest of this database; "
                                           "none: one is created first)"),
    scale_writer: int = typer.Option(2, "--scale-writer", min=0, max=32, metavar="N",
                                     help="legacy-application writer threads on staging (plus 1 new-app thread)"),
    keep: bool = typer.Option(False, "--keep", help="keep the staging database afterwards"),
    report_dir: Path | None = typer.Option(None, "--report-dir", metavar="DIR",
                                           help="where to write report.json/md/html "
                                                "(default DATA_DIR/reports/rehearsal-<ts>)"),
    max_latency_ms: float = typer.Option(100.0, "--max-latency-ms", min=0.0,
                                         help="NO-GO when a write takes this long or longer"),
    max_quarantine_pct: float = typer.Option(5.0, "--max-quarantine-pct", min=0.0, max=100.0,
                                             help="NO-GO when more than this percentage of a table is quarantined"),
    as_json: bool = typer.Option(False, "--json", help="print the report JSON on stdout"),
) -> None:
    """Rehearse the migration on a staging copy: restore a backup into <db>_staging_<ts>, run the whole
    online migration under a live writer, verify, compare baselines, lint the plan with squawk, project
    the production duration, and say GO (exit 0) or NO-GO (exit 5, with every reason). The staging
    database is dropped afterwards unless --keep; production is only read."""
    s = get_settings()
    url = session_database_url(s, "rehearse")
    opts = RehearsalOptions(backup_id=backup, writer_threads=scale_writer, keep=keep, report_dir=report_dir,
                            max_latency_ms=max_latency_ms, max_quarantine_pct=max_quarantine_pct)
    quiet = as_json
    progress = Progress(TextColumn("{task.description:<22}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), console=err, disable=quiet,
                        transient=False)

    def say(message: str) -> None:
        if not quiet:
            progress.console.print(f"[cyan]▸[/] {message}", markup=True, highlight=False)

    with progress:
        report = run_rehearsal(url, s, opts, say=say, reporter=SilentReporter() if quiet else RichReporter(progress))
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2, default=str))
        if not report.go:
            raise typer.Exit(EXIT_NO_GO)
        return
    render(report)
    if not report.go:
        raise VerificationFailed(f"rehearsal: NO-GO ({len(report.reasons)} reason"
                                 f"{'s' if len(report.reasons) != 1 else ''}, listed above; report in "
                                 f"{report.report_dir})", exit_code=EXIT_NO_GO)
