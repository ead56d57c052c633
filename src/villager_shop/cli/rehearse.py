"""`villager-shop rehearse`: the migration rehearsed on a staging copy, judged GO or NO-GO.

Exit codes: 0 GO; 5 NO-GO (the rehearsal ran, the report lists every reason); 4 refused (e.g. a
staging name that could be the live database); other failures as every command (one line).
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from villager_shop.cli import plan_choice, render
from villager_shop.core.config import get_settings
from villager_shop.core.db import connection
from villager_shop.core.errors import VerificationFailed
from villager_shop.embedded import session_database_url
from villager_shop.migration.context import SilentReporter
from villager_shop.safety.rehearsal.judge import EXIT_NO_GO
from villager_shop.safety.rehearsal.options import RehearsalOptions
from villager_shop.safety.rehearsal.run import rehearse as run_rehearsal

EXAMPLES = """Examples:
  villager-shop backup create && villager-shop rehearse          the newest backup, on a staging copy
  villager-shop rehearse --backup ID --scale-writer 4 --keep --json > rehearsal.json
  villager-shop rehearse --plan my-plan.toml                     another plan file (default plans/villager.toml)"""


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
    plan_file: str | None = typer.Option(None, "--plan", metavar="FILE",
                                         help="rehearse this plan file (default plans/villager.toml; checked against"
                                              " the database first, exit 2 on a problem); `built-in`: the"
                                              " Python-coded villager_shop plan"),
) -> None:
    """Rehearse the migration on a staging copy: restore a backup into <db>_staging_<ts>, run the whole
    online migration under a live writer, verify, compare baselines, lint the plan with squawk, project
    the production duration, and say GO (exit 0) or NO-GO (exit 5, with every reason). The staging
    database is dropped afterwards unless --keep; production is only read."""
    s = get_settings()
    url = session_database_url(s, "rehearse")
    plan = None
    with connection(url, autocommit=True, application_name="villager-shop rehearse") as conn:
        # A migration under way on production is rehearsed with the plan it recorded.
        path = plan_choice.path_to_check(conn, plan_file)
        if path is not None:  # checked against the database before anything is done
            plan = plan_choice.checked_spec(conn, path, named=bool(plan_file))
    opts = RehearsalOptions(backup_id=backup, writer_threads=scale_writer, keep=keep, report_dir=report_dir,
                            max_latency_ms=max_latency_ms, max_quarantine_pct=max_quarantine_pct, plan=plan)
    quiet = as_json
    progress = render.migration_progress(render.console(stderr=True), disable=quiet)

    def say(message: str) -> None:
        if not quiet:
            progress.console.print(f"[cyan]▸[/] {message}", markup=True, highlight=False)

    with progress:
        report = run_rehearsal(url, s, opts, say=say, reporter=SilentReporter() if quiet else render.MigrationReporter(progress))
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2, default=str))
        if not report.go:
            raise typer.Exit(EXIT_NO_GO)
        return
    render.rehearsal_verdict(report, render.console())
    if not report.go:
        raise VerificationFailed(f"rehearsal: NO-GO ({len(report.reasons)} reason"
                                 f"{'s' if len(report.reasons) != 1 else ''}, listed above; report in "
                                 f"{report.report_dir})", exit_code=EXIT_NO_GO)
