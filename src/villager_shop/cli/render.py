"""How the commands print: the Rich consoles they all use, the help they all show, and the renderers
more than one command shows (the generator's progress and report, the migration's progress, the
rehearsal's verdict). A command module imports its renderers from here, never from another command.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
from rich.rule import Rule
from rich.table import Table
from rich.text import Text

from villager_shop.core.errors import ConfigError
from villager_shop.migration.planfile import bundled

if TYPE_CHECKING:
    from villager_shop.legacy import generate as gen
    from villager_shop.safety.report.model import RehearsalReport

# Written to a pipe or a file, Rich would lay everything out 80 columns wide: tables squeezed, their
# cells wrapped or cut with "…", a path or a URL broken in two. There, tables get this much room (a
# table is only as wide as its content) and lines are never wrapped.
PIPED_WIDTH = 1000
RULE_WIDTH = 100  # a section rule in piped output: as wide as a terminal's, not PIPED_WIDTH


def refuse_plan(path: str, problems: list[Any], *, named: bool = True) -> None:
    """Every problem of a plan file on stderr with its place in the file, then one line and exit 2.
    The default plan (not `named`) on a database without its tables: that one line alone."""
    err = console(stderr=True)
    missing = (bool(problems) and all(str(p.message).startswith("there is no table") for p in problems)
               and _is_villager(path))
    if missing and not named:
        raise ConfigError("not a villager_shop database: its tables are missing (create them with `villager-shop"
                          " legacy init`, or name a plan file for this database with --plan); nothing was changed")
    for p in problems:
        err.print(f"{path}: {p}", markup=False, highlight=False)
    if missing:
        raise ConfigError(f"plan {path}: not a villager_shop database: its tables are missing (listed above; create"
                          " them with `villager-shop legacy init`); nothing was changed")
    raise ConfigError(f"plan {path}: {len(problems)} problem{'s' if len(problems) != 1 else ''} (listed above);"
                      " nothing was changed")


def _is_villager(path: str) -> bool:
    """Whether `path` is the villager plan shipped with the tool."""
    try:
        return Path(path).resolve() == bundled.path().resolve()
    except OSError:
        return False


def console(*, stderr: bool = False) -> Console:
    """A console on stdout (or stderr) that never breaks a line itself: on a terminal the terminal
    wraps long lines (a copied URL stays whole); elsewhere see PIPED_WIDTH. An explicit COLUMNS wins."""
    out = Console(stderr=stderr, highlight=False, soft_wrap=True)
    if not out.is_terminal and not os.environ.get("COLUMNS"):
        out.width = PIPED_WIDTH
    return out


def rule(out: Console, title: str) -> None:
    """A section heading across the terminal (at most RULE_WIDTH wide in piped output)."""
    out.print(Rule(title), width=out.width if out.is_terminal else min(out.width, RULE_WIDTH))


# --- help --------------------------------------------------------------------------------------------

HELP_OPTION_NAMES = ["-h", "--help"]


def tidy_help(command: Any) -> None:
    """Shape the help of `command` and of every command under it as a reader expects: a flag shows
    no `<bool>` type (it takes no value), and the help texts flow to the terminal's width instead of
    keeping the line breaks of the docstrings they come from (paragraphs, and blocks marked `\\b` as
    in click, stay as written). Applied once to the whole tree, so that a command group owned
    elsewhere gets the same."""
    commands = [command]
    while commands:
        cmd = commands.pop()
        commands.extend(getattr(cmd, "commands", {}).values())
        if cmd.help:
            cmd.help = reflow(cmd.help)
        params = list(cmd.params)
        help_option = _help_option(cmd)
        if help_option is not None:
            params.append(help_option)
        for param in params:
            if getattr(param, "is_flag", False) and not getattr(param, "count", False):
                param.metavar = ""
            if getattr(param, "help", None):
                param.help = reflow(param.help)


def _help_option(cmd: Any) -> Any:
    """The command's help option (`-h/--help`, or what its own context settings name), which click
    otherwise creates only when help is first asked for."""
    import typer

    names = cmd.context_settings.get("help_option_names", HELP_OPTION_NAMES)
    return cmd.get_help_option(typer.Context(cmd, info_name=cmd.name, help_option_names=names))


def reflow(text: str) -> str:
    """`text` with the single line breaks inside each paragraph turned into spaces."""
    import inspect

    paragraphs = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(p if p.startswith("\b") else " ".join(p.split("\n")) for p in paragraphs)


# --- the generator ----------------------------------------------------------------------------------

class _RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        elapsed = (task.finished_time if task.finished else task.elapsed) or 0.0
        if elapsed <= 0 or not task.completed:
            return Text("")
        return Text(f"{task.completed / elapsed:>10,.0f} rows/s", style="progress.data.speed")


def load_with_progress(url: str, *, scale: float, seed: int, force: bool = False) -> gen.GenerateReport:
    """Run the generator with a Rich progress bar per table on stderr."""
    from villager_shop.legacy import generate as gen

    tasks: dict[str, TaskID] = {}
    bar = Progress(TextColumn("{task.description:<12}"), BarColumn(), MofNCompleteColumn(), _RateColumn(),
                   TimeElapsedColumn(), console=console(stderr=True), transient=False)

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


def generator_report(report: gen.GenerateReport, out: Console) -> None:
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
    out.print(rows)
    messy = Table("column", "kind", "rows", title="messy rows (measured with SQL on the loaded data)")
    for group, kinds in report.messy.items():
        for kind, n in kinds.items():
            messy.add_row(group, kind, f"{n:,}")
    out.print(messy)


# --- the migration ----------------------------------------------------------------------------------

def migration_progress(out: Console, *, disable: bool = False) -> Progress:
    """The bars a MigrationReporter draws on: one per backfilled table, with rows/s and time left."""
    from rich.progress import TimeRemainingColumn

    return Progress(TextColumn("{task.description:<22}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), console=out, disable=disable,
                    transient=False)


class MigrationReporter:
    """Progress bars with rows/s for the backfill, a line per finished step."""

    def __init__(self, progress: Progress) -> None:
        self.bar = progress
        self.tasks: dict[str, TaskID] = {}

    def step_started(self, name: str, title: str) -> None:
        if name.startswith("backfill_"):
            self.bar.start()  # with the first bar: a run refused up front prints its one error line only
            self.tasks[name] = self.bar.add_task(name, total=None, rate="")

    def step_finished(self, name: str, detail: dict[str, Any]) -> None:
        if name in self.tasks:
            self.bar.update(self.tasks[name], total=detail.get("rows", 0) or 1, completed=detail.get("rows", 0) or 1,
                            rate=f"{detail.get('rows_per_s', 0):,} rows/s")
            return
        extra = ""
        if detail.get("validated") is False:
            extra = f" (NOT VALID: {detail.get('violating_rows')} quarantined rows violate it)"
        self.bar.console.print(f"[green]✓[/] {name} [dim]{detail.get('seconds', 0):.2f}s{extra}[/]")

    def progress(self, name: str, done: int, total: int | None, rate: float) -> None:
        if name in self.tasks:
            self.bar.update(self.tasks[name], completed=done, total=total, rate=f"{rate:,.0f} rows/s")

    def note(self, message: str) -> None:
        self.bar.console.print(f"[yellow]•[/] {message}")


# --- the rehearsal ----------------------------------------------------------------------------------

def rehearsal_verdict(r: RehearsalReport, out: Console) -> None:
    """The rehearsal's steps, writer, projection and lint, then GO or NO-GO with every reason."""
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
