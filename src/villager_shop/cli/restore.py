"""`villager-shop restore ID`: emergency restore of a manifest backup (the live database is kept)."""

from __future__ import annotations

import sys

import typer
from rich.panel import Panel
from rich.table import Table

from villager_shop.cli import render
from villager_shop.core.config import get_settings
from villager_shop.core.errors import RefusedError
from villager_shop.embedded import session_database_url
from villager_shop.safety.restore import RestorePlan, execute_restore, plan_restore

EXAMPLES = """Examples:
  villager-shop backup list                 the ids
  villager-shop restore ID                  says what would be lost, then asks
  villager-shop restore ID --yes            without asking (scripts)"""

out = render.console()


def _render(plan: RestorePlan) -> None:
    e = plan.entry
    out.print(f"backup {e.id}: database {e.database}, snapshot {e.snapshot_at}, LSN {e.lsn}, "
              f"sha256 verified", markup=False)
    if plan.migration is not None and plan.migration.in_progress:
        out.print(Panel(
            "A migration is in progress (" + plan.migration.detail + ").\n"
            "`villager-shop migrate rollback` returns to the legacy schema WITHOUT losing any write: the "
            "migration keeps the legacy columns in sync until `migrate complete`. Prefer it to a restore.",
            title="use migrate rollback instead", border_style="bold red", expand=False), markup=False)
    else:
        out.print("note: `villager-shop migrate rollback` is preferable whenever it is still possible "
                  "(before `migrate complete`): it loses no write.", markup=False)
    if not plan.live_exists:
        out.print(f"database {plan.live_db} does not exist: the backup will be restored under that name.",
                  markup=False)
        return
    table = Table("table", "rows at backup", "rows now", "inserted after", "updated after",
                  title=f"what a restore would lose (writes after {e.snapshot_at})")
    for t in plan.tables:
        def fmt(v: int | None) -> str:
            return "-" if v is None else str(v)
        table.add_row(t.table, "(new table)" if t.rows_at_backup is None else str(t.rows_at_backup),
                      str(t.rows_now), fmt(t.inserted_after), fmt(t.updated_after))
    out.print(table)
    wal = "unknown" if plan.wal_bytes is None else f"{plan.wal_bytes} bytes"
    out.print(f"{plan.rows_written_after} rows written after the backup would be lost; WAL written since its "
              f"LSN (whole server): {wal}. Deletes, and updates that leave updated_at alone, are not counted.",
              markup=False)
    if plan.missing_tables:
        out.print(f"tables in the backup but not in the database now (restored): {', '.join(plan.missing_tables)}",
                  markup=False)
    out.print(f"plan: restore into new database {plan.restore_name}, check its row counts, then terminate the "
              f"{plan.sessions} connection(s) to {plan.live_db} (pg_terminate_backend), rename {plan.live_db} "
              f"-> {plan.before_name} (kept, not dropped) and {plan.restore_name} -> {plan.live_db}.",
              markup=False)


def restore(
    backup_id: str = typer.Argument(..., metavar="ID", help="backup id from `villager-shop backup list`"),
    yes: bool = typer.Option(False, "--yes", help="do it without asking (required when there is no terminal)"),
) -> None:
    """Restore a manifest backup into a new database and swap it in, keeping the current one renamed.

    Checks the checksum first, then says what would be lost. `villager-shop migrate rollback` loses
    nothing and is preferable while the migration can still be rolled back.
    """
    s = get_settings()
    plan = plan_restore(session_database_url(s, "restore"), s.backup_dir, backup_id)
    _render(plan)
    if not yes:
        if not sys.stdin.isatty():
            raise RefusedError(f"restore of {plan.live_db} from {plan.entry.id} not confirmed: re-run with --yes "
                               "(no terminal to ask); nothing was changed")
        if not typer.confirm(f"Replace database {plan.live_db} by backup {plan.entry.id}?", default=False):
            raise RefusedError("restore not confirmed; nothing was changed")
    result = execute_restore(plan, say=lambda m: out.print(m, markup=False))
    if result.before_name:
        out.print(f"restored: {result.live_db} is now backup {plan.entry.id}; the previous database is kept as "
                  f"{result.before_name} ({result.terminated} connection(s) terminated, {result.seconds:.1f}s). "
                  f"Drop it when sure: DROP DATABASE \"{result.before_name}\"", markup=False)
    else:
        out.print(f"restored: {result.live_db} created from backup {plan.entry.id} ({result.seconds:.1f}s)",
                  markup=False)
