"""`villager-shop backup`: create, list, verify and prune manifest backups."""

from __future__ import annotations

import json
from contextlib import nullcontext
from typing import Any

import typer
from rich.progress import DownloadColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn, TransferSpeedColumn
from rich.table import Table

from villager_shop.cli import render
from villager_shop.core.config import get_settings
from villager_shop.embedded import session_database_url
from villager_shop.safety import backup as backups
from villager_shop.safety import prune as pruning
from villager_shop.safety.manifest import BackupEntry

EXAMPLES = """Examples:
  villager-shop backup create                      then: villager-shop backup verify ID
  villager-shop backup list --json
  villager-shop backup prune --keep 3 --dry-run    what would be removed; without --dry-run, remove it"""

app = typer.Typer(help="Backups recorded in a manifest (file, sha256, snapshot time, LSN, row counts).",
                  epilog=EXAMPLES, no_args_is_help=True)

out = render.console()
err = render.console(stderr=True)


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def _entry_json(e: BackupEntry, backup_dir: Any) -> dict[str, Any]:
    return {**e.to_dict(), "path": str(backup_dir / e.file)}


@app.command()
def create(as_json: bool = typer.Option(False, "--json", help="print the manifest entry as JSON")) -> None:
    """Dump the shop database (pg_dump --format=custom, one consistent snapshot) into the backups folder."""
    s = get_settings()
    url = session_database_url(s, "backup create")
    show = err.is_terminal and not as_json
    progress = Progress(SpinnerColumn(), TextColumn("pg_dump"), DownloadColumn(), TransferSpeedColumn(),
                        TimeElapsedColumn(), console=err, transient=True)
    task = progress.add_task("dump", total=None)
    with progress if show else nullcontext():
        entry = backups.create_backup(
            url, s.backup_dir,
            progress=(lambda n: progress.update(task, completed=n)) if show else None,
            say=(lambda m: out.print(m, markup=False)) if show else (lambda m: None),
        )
    if as_json:
        typer.echo(json.dumps(_entry_json(entry, s.backup_dir), indent=2))
        return
    rows = sum(entry.row_counts.values())
    out.print(f"backup {entry.id} created", markup=False)
    out.print(f"  file    {s.backup_dir / entry.file} ({_size(entry.size)})", markup=False)
    out.print(f"  sha256  {entry.sha256}", markup=False)
    out.print(f"  lsn     {entry.lsn} at {entry.snapshot_at} (PostgreSQL {entry.server_version})", markup=False)
    out.print(f"  rows    {rows} in {len(entry.row_counts)} tables (database {_size(entry.database_size)})",
              markup=False)


@app.command("list")
def list_(as_json: bool = typer.Option(False, "--json", help="machine-readable output")) -> None:
    """The backups recorded in the manifest, oldest first."""
    s = get_settings()
    entries = backups.list_backups(s.backup_dir)
    if as_json:
        typer.echo(json.dumps([_entry_json(e, s.backup_dir) for e in entries], indent=2))
        return
    if not entries:
        out.print(f"no backups in {s.backup_dir}", markup=False)
        return
    table = Table("id", "database", "created (UTC)", "size", "rows", "lsn", "verified (UTC)", "file present",
                  title=f"backups in {s.backup_dir}")
    for e in entries:
        present = "yes" if (s.backup_dir / e.file).is_file() else "MISSING"
        table.add_row(e.id, e.database, e.created_at, _size(e.size), str(sum(e.row_counts.values())), e.lsn,
                      e.verified_at or "-", present)
    out.print(table)


@app.command()
def verify(
    backup_id: str = typer.Argument(..., metavar="ID", help="backup id (or a unique prefix)"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
) -> None:
    """Prove a backup restores: sha256, pg_restore --list, and a real restore into a scratch database
    (dropped afterwards) whose per-table row counts must equal the manifest's. Exit 5 otherwise.
    A role without CREATEDB: VILLAGER_SCRATCH_URL names an empty database to use (emptied afterwards)."""
    s = get_settings()
    url = session_database_url(s, "backup verify")
    say = (lambda m: None) if as_json else (lambda m: out.print(m, markup=False))
    scratch = s.villager_scratch_url.get_secret_value() if s.villager_scratch_url is not None else None
    report = backups.verify_backup(url, s.backup_dir, backup_id, scratch_url=scratch, say=say)
    if as_json:
        typer.echo(json.dumps({"id": report.entry.id, "ok": True, "toc_entries": report.toc_entries,
                               "tables": report.tables, "rows": report.rows,
                               "seconds": round(report.seconds, 2)}, indent=2))
        return
    out.print(f"backup {report.entry.id} OK: sha256 matches, {report.toc_entries} archive entries, "
              f"{report.rows} rows in {report.tables} tables restored and counted "
              f"({report.seconds:.1f}s, scratch database {report.scratch_database} {report.scratch_afterwards})",
              markup=False)


@app.command()
def prune(
    keep: int = typer.Option(pruning.DEFAULT_KEEP, "--keep", min=0, metavar="N",
                             help="backups to keep per database, the newest"),
    older_than: float | None = typer.Option(None, "--older-than", min=0, metavar="DAYS",
                                            help="remove only backups older than this"),
    dry_run: bool = typer.Option(False, "--dry-run", help="list what would be removed; remove nothing"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
) -> None:
    """Remove old backups from the manifest and the disk: per database, all but the newest N, and
    never the newest one `backup verify` proved (it is the one known to restore)."""
    s = get_settings()
    plan = pruning.prune_backups(s.backup_dir, keep=keep, older_than_days=older_than, dry_run=dry_run)
    if as_json:
        typer.echo(json.dumps({"dry_run": dry_run, "freed_bytes": plan.freed_bytes,
                               "removed": [_entry_json(e, s.backup_dir) for e in plan.remove],
                               "kept": [{"id": e.id, "database": e.database, "why": why} for e, why in plan.keep]},
                              indent=2))
        return
    if not plan.remove:
        out.print(f"nothing to remove in {s.backup_dir}: {len(plan.keep)} backup(s), all kept", markup=False)
        return
    verb = "would remove" if dry_run else "removed"
    table = Table("id", "database", "created (UTC)", "size", "verified (UTC)",
                  title=f"{verb} from {s.backup_dir}")
    for e in plan.remove:
        table.add_row(e.id, e.database, e.created_at, _size(e.size), e.verified_at or "-")
    out.print(table)
    out.print(f"{verb} {len(plan.remove)} backup(s), {_size(plan.freed_bytes)}; kept {len(plan.keep)}"
              + (" (run without --dry-run to remove them)" if dry_run else ""), markup=False)
