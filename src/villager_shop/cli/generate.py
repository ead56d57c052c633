"""`villager-shop generate`: fill the legacy schema with realistic, deterministic, messy data."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from villager_shop.core.config import get_settings
from villager_shop.embedded import database_url
from villager_shop.legacy import generate as gen


class _RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        elapsed = (task.finished_time if task.finished else task.elapsed) or 0.0
        if elapsed <= 0 or not task.completed:
            return Text("")
        return Text(f"{task.completed / elapsed:>10,.0f} rows/s", style="progress.data.speed")


def load_with_progress(url: str, *, scale: float, seed: int, force: bool = False) -> gen.GenerateReport:
    """Run the generator with a Rich progress bar per table on stderr."""
    console = Console(stderr=True)
    tasks: dict[str, TaskID] = {}
    bar = Progress(TextColumn("{task.description:<12}"), BarColumn(), MofNCompleteColumn(), _RateColumn(),
                   TimeElapsedColumn(), console=console, transient=False)

    def progress(table: str, done: int, total: int) -> None:
        if table not in tasks:
            bar.start()  # on the first row, so that a run refused up front prints its one error line only
            tasks[table] = bar.add_task(table, total=total)
        bar.update(tasks[table], completed=done, total=max(total, done))

    try:
        return gen.generate(url, scale=scale, seed=seed, force=force, progress=progress)
    finally:
        if bar.live.is_started:  # stopping one never started prints an empty line
            bar.stop()


def render_report(report: gen.GenerateReport, console: Console) -> None:
    """Rows per table and messy-row counts, as Rich tables."""
    rows = Table("table", "rows", "seconds", "rows/s",
                 title=f"legacy data in {report.database} (scale {report.scale:g}, seed {report.seed})")
    for table, n in report.rows.items():
        secs = report.table_seconds.get(table, 0.0)
        rows.add_row(table, f"{n:,}", f"{secs:.2f}", f"{n / secs:,.0f}" if secs else "-")
    if "analyze" in report.table_seconds:
        rows.add_row("ANALYZE", "", f"{report.table_seconds['analyze']:.2f}", "")
    rows.add_row("total", f"{report.total_rows:,}", f"{report.elapsed_seconds:.2f}",
                 f"{report.rows_per_second:,.0f}", style="bold")
    console.print(rows)
    messy = Table("column", "kind", "rows", title="messy rows (measured with SQL on the loaded data)")
    for group, kinds in report.messy.items():
        for kind, n in kinds.items():
            messy.add_row(group, kind, f"{n:,}")
    console.print(messy)


def generate(
    scale: float = typer.Option(1.0, "--scale", help="data size: 1 = 10k users, 1k shops, 50k products, 100k orders"),
    seed: int = typer.Option(42, "--seed", help="random seed: same seed and scale give identical rows"),
    force: bool = typer.Option(False, "--force", help="truncate the legacy tables first (destroys their rows)"),
    as_json: bool = typer.Option(False, "--json", help="print the report as JSON on stdout (no progress bar)"),
) -> None:
    """Fill the empty legacy tables with realistic, deterministic, deliberately messy data (COPY streaming)."""
    url = database_url(get_settings())
    if as_json:
        report = gen.generate(url, scale=scale, seed=seed, force=force)
        typer.echo(json.dumps(report.to_dict(), indent=2))
        return
    report = load_with_progress(url, scale=scale, seed=seed, force=force)
    render_report(report, Console())
