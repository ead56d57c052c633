"""`villager-shop migrate`: plan | run | status | verify | rollback | complete."""

from __future__ import annotations

import datetime as dt
import json
import sys
from typing import Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from villager_shop.cli import plan_choice, render
from villager_shop.cli.render import MigrationReporter
from villager_shop.core.config import get_settings
from villager_shop.core.db import connect
from villager_shop.core.errors import ConfigError, RefusedError, VerificationFailed
from villager_shop.embedded import database_url, direct_database_url, session_database_url
from villager_shop.legacy.schema import LEGACY_TABLES
from villager_shop.migration import complete as complete_mod
from villager_shop.migration import control as control_mod
from villager_shop.migration import guide, runner
from villager_shop.migration import rollback as rollback_mod
from villager_shop.migration import verify as verify_mod
from villager_shop.migration import withdraw as withdraw_mod
from villager_shop.migration.context import Context
from villager_shop.migration.plan import build_plan, legacy_columns, plan_sql
from villager_shop.migration.planfile import bundled, record
from villager_shop.migration.planfile import catalog as planfile_catalog
from villager_shop.migration.planfile.assemble import FilePlan, assemble
from villager_shop.migration.planfile.schema import schema_text
from villager_shop.migration.planfile.verify import verify_database
from villager_shop.migration.preflight import refuse_row_security
from villager_shop.migration.status import status as status_fn

app = typer.Typer(help="Move the live database to the normalized schema, online and reversibly.",
                  no_args_is_help=True)
console = render.console()
err = render.console(stderr=True)

HOLD = {"expand": "waits <= lock_timeout, holds milliseconds", "sync": "waits <= lock_timeout, holds milliseconds",
        "backfill": "row locks of one batch (~50 ms), never a table lock",
        "validate": "no lock that blocks reads or writes", "index": "no lock that blocks reads or writes",
        "analyze": "no lock that blocks reads or writes"}


def _ctx(what: str, reporter: Any = None) -> Context:
    """The migration works on a session of its own (run lock, DDL, backfill): the direct URL."""
    s = get_settings()
    return runner.make_context(session_database_url(s, what), s, reporter)


PLAN_OPTION = typer.Option(None, "--plan", metavar="FILE", help="a plan file of generic operations (TOML; see"
                           " docs/plans.md); default: the plan the database is migrated with, else plans/villager.toml;"
                           " `built-in`: the Python-coded villager_shop plan (the benchmarks' reference)")


def _load_plan(conn: Any, path: str | None, *, named: bool = True) -> FilePlan | None:
    if path is None:
        return None
    spec = plan_choice.checked_spec(conn, path, named=named)
    return assemble(spec, planfile_catalog.read(conn, spec.tables()))


@app.command()
def plan(
    sql: bool = typer.Option(False, "--sql", help="print the exact SQL, as one script squawk can lint"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
    plan_file: str = PLAN_OPTION,
    schema: bool = typer.Option(False, "--schema", help="print the JSON Schema of plan files (for editors) and exit"),
) -> None:
    """The ordered steps, what each locks and for how long at most; --sql for the exact SQL. With
    --plan FILE, the file is first checked against the database (exit 2 listing every problem)."""
    if schema:
        typer.echo(schema_text(), nl=False)
        return
    s = get_settings()
    # The role that will migrate (the direct URL's), reading the catalog only.
    with connect(direct_database_url(s), autocommit=True, application_name="villager-shop migrate plan") as conn:
        path = plan_choice.path_to_check(conn, plan_file)
        fp = (_load_plan(conn, path, named=bool(plan_file)) if path else
              None if bundled.is_built_in(plan_file) else record.current(conn))
        steps = fp.steps if fp else build_plan()
        if sql:
            typer.echo(plan_sql(s.villager_lock_timeout_ms, steps))
            return
        refuse_row_security(conn, fp.tables if fp else LEGACY_TABLES)
        found = complete_mod.legacy_column_dependents(conn, fp.legacy_columns if fp else legacy_columns())
    rows: list[dict[str, Any]] = [{"position": i, "name": st.name, "phase": st.phase, "title": st.title, "locks": st.locks(),
             "max_hold": HOLD.get(st.phase, ""), "reversible": st.reversible} for i, st in enumerate(steps, 1)]
    if as_json:
        typer.echo(json.dumps({"plan": fp.name if fp else "villager_shop", "lock_timeout_ms": s.villager_lock_timeout_ms,
                               "steps": rows,
                               "legacy_column_dependents": [d.to_dict() for d in found]}, indent=2))
        return
    table = Table("#", "step", "what", "locks", "at most", title=f"migration plan {fp.name if fp else 'villager_shop'}")
    for r in rows:
        table.add_row(str(r["position"]), r["name"], r["title"], r["locks"], r["max_hold"])
    console.print(table)
    console.print(f"lock_timeout {s.villager_lock_timeout_ms} ms on every blocking DDL, retried with backoff; "
                  "`migrate rollback` undoes every step until `migrate complete`.")
    if found:
        t = Table("object", "uses", title="objects that use legacy columns: `migrate complete` refuses until they are"
                                          " dropped or changed")
        for d in found:
            t.add_row(d.object, ", ".join(d.columns))
        console.print(t)


@app.command()
def run(
    strategy: str = typer.Option("online", help="online (the safe way, resumable) or guide (the guide's Phase 1+2"
                                 " in one transaction, for comparison only)"),
    reinstate: list[str] = typer.Option([], "--reinstate", metavar="STEP",
                                        help="put back a step withdrawn with `migrate rollback --step` (repeatable)"),
    as_json: bool = typer.Option(False, "--json", help="print the summary as JSON"),
    plan_file: str = PLAN_OPTION,
) -> None:
    """Expand, install sync, backfill, validate, index, analyze. Re-runnable; resumes after a crash
    (a run of a plan file resumes with or without --plan: the database recorded it)."""
    if strategy not in ("online", "guide"):
        raise typer.BadParameter("strategy must be 'online' or 'guide'")
    if strategy == "guide" and plan_file and not bundled.is_built_in(plan_file):
        raise ConfigError("--strategy guide runs the guide's villager_shop script; it takes no --plan")
    progress = Progress(TextColumn("{task.description:<22}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), console=err,
                        disable=as_json or (not err.is_terminal and False))
    try:
        ctx = _ctx("migrate run", MigrationReporter(progress))
        try:
            if reinstate:  # under the run lock: never beside a run that would finish without them
                with runner.exclusive(ctx, "reinstate a withdrawn step"):
                    err.print(f"reinstated: {', '.join(withdraw_mod.reinstate(ctx.conn, reinstate))}")
            if strategy == "guide":
                summary = guide.run_guide(ctx)
            else:
                loaded = _load_plan(ctx.conn, plan_choice.path_to_check(ctx.conn, plan_file), named=bool(plan_file))
                summary = runner.run(ctx, file_plan=record.for_run(ctx.conn, loaded.spec if loaded else None,
                                                                   built_in=bundled.is_built_in(plan_file)))
        finally:
            ctx.conn.close()
    finally:
        if progress.live.is_started:  # stopping one never started prints an empty line
            progress.stop()
    if as_json:
        typer.echo(json.dumps(summary, indent=2, default=str))
    else:
        err.print("[bold green]migration run finished[/]: both representations are live and kept in sync; "
                  "next: `villager-shop migrate verify`, then `migrate complete` when no old instance remains")


@app.command()
def status(
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
    readers_window: float = typer.Option(1.0, "--readers-window", min=0.0, max=600.0,
                                         help="once migrated, watch this many seconds for statements reading the"
                                              " legacy columns (0: do not)"),
) -> None:
    """Phase, per-step progress, rows done/total, rate, ETA; once migrated, who still reads the legacy
    columns. Exit 1 when a step has failed."""
    s = get_settings()
    with connect(database_url(s), autocommit=True) as conn:
        st = status_fn(conn, readers_window_s=readers_window)
    failed = [x for x in st["steps"] if x["status"] == "failed"]
    if as_json:
        typer.echo(json.dumps(st, indent=2, default=str))
    else:
        running = "  [yellow](a run is in progress)[/]" if st["running"] else ""
        console.print(f"phase: [bold]{st['phase']}[/]  plan {st['plan']}  steps {st['steps_done']}/{st['steps_total']}"
                      f"{running}")
        if st.get("paused"):
            p = st["paused"]
            console.print(f"[yellow]paused[/] by {p.get('by')} at {_when(p.get('at'))}"
                          + (f": {p['reason']}" if p.get("reason") else ""))
        th = st.get("throttle") or {}
        if th.get("throttled"):
            console.print(f"[yellow]throttled[/] by {th.get('signal')}: {th.get('value')} over {th.get('limit')}"
                          f" {th.get('detail') or ''} (held {th.get('held_s')} s)")
        if th.get("total_throttled_s"):
            console.print(f"time throttled in all: {th['total_throttled_s']} s")
        for sb in th.get("standbys") or []:
            console.print(f"standby {sb['name']}: {sb['state']}, {sb['lag_ms']} ms / {sb['lag_bytes']:,} bytes behind")
        if st["backfill"]:
            t = Table("table", "rows", "%", "rows/s", "ETA", "batches", "max batch ms", "walk", title="backfill")
            tables = [b["table"] for b in st["backfill"]]
            for b in st["backfill"]:
                if tables.count(b["table"]) > 1:  # a plan walks this table more than once: say which walk
                    b = {**b, "table": b["step"]}
                eta = "done" if b["finished"] else (f"{b['eta_s']:.0f}s" if b["eta_s"] is not None else "?")
                t.add_row(b["table"], f"{b['rows_done']:,}/{b['rows_total']:,}", f"{b['percent']:.1f}",
                          f"{b['rows_per_s']:,}", eta, str(b["batches"]), f"{b['max_batch_ms']:.0f}", b["walk"] or "")
            console.print(t)
        pending = [x for x in st["steps"] if x["status"] != "done"]
        for x in pending[:12]:
            stage = f"  ({x['method']}: {x['stage']})" if x.get("stage") else ""
            by = x.get("withdrawn")
            note = (f"  by {by.get('by')} at {_when(by.get('at'))}" + (f": {by['reason']}" if by.get("reason") else "")
                    if by else "")
            console.print(f"  {x['status']:<8} {x['name']}{stage}{note}"
                          + (f"  [red]{x['error']}[/]" if x.get("error") else ""))
        if "readers" in st:
            _print_readers(st["readers"])
        if st["quarantine"]:
            q = ", ".join(f"{t}: " + ", ".join(f"{r} {n}" for r, n in rs.items()) for t, rs in st["quarantine"].items())
            console.print(f"quarantine: {q}")
    if failed:
        raise typer.Exit(1)


@app.command()
def verify(
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
    examples: int = typer.Option(verify_mod.EXAMPLES, "--examples", min=0,
                                 help="differing rows listed per failed check (0 = every one)"),
) -> None:
    """Row-by-row equivalence of legacy and normalized data. Exit 0 only when everything holds (else 5)."""
    s = get_settings()
    with connect(database_url(s), autocommit=True) as conn:
        report = verify_database(conn, examples)
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2, default=str))
    else:
        for c in report.checks:
            mark = "[green]ok[/]  " if c.ok else "[red]FAIL[/]"
            console.print(f"{mark} {c.name}: {c.detail or c.count}")
            for ex in c.examples:
                detail = str(ex.get("detail"))
                if len(detail) > 300:  # a legacy value can be any length; --json has it whole
                    detail = f"{detail[:300]}… ({len(detail):,} characters)"
                console.print(f"       {ex.get('row_id')}: {detail}", markup=False)
        if report.counts:
            t = Table("table", "legacy rows", "migrated", "quarantined", "violations", title="counts")
            for name, n in report.counts.items():
                if "legacy_rows" in n:
                    t.add_row(name, f"{n['legacy_rows']:,}", f"{n['migrated']:,}", f"{n['quarantined']:,}",
                              f"{n['violations']:,}")
            console.print(t)
    if not report.ok:
        if as_json:
            raise typer.Exit(VerificationFailed.exit_code)
        bad = len(report.failures())
        raise VerificationFailed(f"verify failed: {bad} check{'s' if bad != 1 else ''} did not hold (listed above)")


def _confirm(yes: bool, question: str) -> None:
    if yes:
        return
    if not sys.stdin.isatty():
        raise RefusedError(f"{question} Refused without confirmation: pass --yes")
    if not typer.confirm(question, default=False):
        raise RefusedError("not confirmed; nothing changed")


@app.command()
def rollback(
    yes: bool = typer.Option(False, "--yes", help="do not ask for confirmation"),
    step: str = typer.Option(None, "--step", metavar="STEP", help="take back only this step (an index or a new"
                             " constraint), leaving the rest in place; `migrate run --reinstate STEP` puts it back"),
    reason: str = typer.Option("", "--reason", help="with --step: why, shown by `status` and `verify`"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
) -> None:
    """Before `complete`: remove the new structures; legacy columns hold every write. Lossless, seconds."""
    if step:
        ctx = _ctx("migrate rollback --step")
        try:
            _confirm(yes, f"Take back step {step} alone (the rest of the migration stays)?")
            result = withdraw_mod.withdraw(ctx, step, reason)
        finally:
            ctx.conn.close()
        if as_json:
            typer.echo(json.dumps(result, indent=2, default=str))
        else:
            console.print(f"withdrawn: {', '.join(result['withdrawn'])} in {result['seconds']} s; `migrate run"
                          f" --reinstate {step}` puts it back")
        return
    ctx = _ctx("migrate rollback")
    try:
        if not yes:  # a rollback that cannot run says why before it asks for a confirmation
            rollback_mod.refuse_early(ctx)
        _confirm(yes, "Remove the normalized structures (kept in an archive schema) and go back to the legacy schema?")
        result = rollback_mod.rollback(ctx)
    finally:
        ctx.conn.close()
    if as_json:
        typer.echo(json.dumps(result, indent=2, default=str))
    elif result.get("already"):
        console.print("already rolled back")
    else:
        cut = result["cut"]
        console.print(f"rolled back in {cut['seconds']}s (tables locked {cut['locks_held_ms']} ms); "
                      f"new structures archived in schema {result['archive_schema']}: {result['archived_rows']}")


@app.command()
def complete(
    yes: bool = typer.Option(False, "--yes", help="confirm: drop the legacy columns (no rollback afterwards)"),
    quiet_seconds: float = typer.Option(5.0, help="how long no legacy write or read may be seen before dropping"),
    no_reader_check: bool = typer.Option(False, "--no-reader-check",
                                         help="go on without looking for readers of the legacy columns (needed where"
                                              " pg_stat_statements cannot be read)"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
) -> None:
    """The contract step: refuses unless verify passes now and no old application still writes or reads."""
    if not yes:
        raise RefusedError("complete drops the legacy columns and ends the way back; confirm with --yes")
    ctx = _ctx("migrate complete")
    try:
        result = complete_mod.complete(ctx, quiet_seconds=quiet_seconds, reader_check=not no_reader_check)
    finally:
        ctx.conn.close()
    if as_json:
        typer.echo(json.dumps(result, indent=2, default=str))
    elif result.get("already"):
        console.print("already completed")
    else:
        console.print(f"completed: dropped {', '.join(result['dropped_columns'])}; "
                      f"{result['quarantined_rows_kept']} quarantined rows keep their legacy values in "
                      f"{result['quarantine_table']}")


def _print_readers(r: dict[str, Any]) -> None:
    if not r["visible"]:
        console.print(f"[yellow]readers of the legacy columns cannot be seen[/]: {r['why']}")
        return
    if not r["statements"] and not r["hidden"]:
        console.print(f"readers of the legacy columns: none in the last {r['window_s']:.1f} s")
        return
    console.print(f"[yellow]readers of the legacy columns in the last {r['window_s']:.1f} s[/] (`complete` refuses"
                  " while they run):")
    for st in r["statements"]:
        who = ", ".join(f"{x['application_name'] or '?'} ({x['usename']}@{x['client_addr'] or 'local socket'},"
                        f" pid {x['pid']})" for x in st["sessions"]) or "no connected session seen"
        console.print(f"  {', '.join(st['reads'])}: {st['calls']} calls by {who}", markup=False)
        console.print(f"    {' '.join(st['query'].split())[:200]}", markup=False)
    for role, calls in r["hidden"].items():
        console.print(f"  {calls} calls of role {role} whose text this role may not read (pg_read_all_stats)",
                      markup=False)


def _when(epoch: Any) -> str:
    return dt.datetime.fromtimestamp(float(epoch), dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if epoch else "?"


def _control_conn() -> Any:
    return connect(database_url(get_settings()), autocommit=True, application_name="villager-shop migrate control")


@app.command()
def pause(reason: str = typer.Option("", "--reason", help="why, shown by `migrate status`")) -> None:
    """Hold a running migration's backfill within one batch (both representations stay in sync)."""
    with _control_conn() as conn:
        control = control_mod.pause(conn, reason)
    paused = control["paused"] or {}
    console.print(f"paused by {paused.get('by')}; `villager-shop migrate resume` lets it go on")


@app.command()
def resume() -> None:
    """Let a paused migration go on (within one batch)."""
    with _control_conn() as conn:
        control_mod.resume(conn)
    console.print("resumed")


@app.command()
def throttle(
    batch_ms: int = typer.Option(None, "--batch-ms", min=0, max=10_000, help="batch time target (0 = configured)"),
    max_replica_lag_ms: int = typer.Option(None, "--max-replica-lag-ms", min=0, max=3_600_000,
                                           help="hold while a standby is this far behind (0 = configured)"),
    pause_ms: int = typer.Option(None, "--pause-ms", min=0, max=60_000, help="sleep between batches (0 = none)"),
    reset: bool = typer.Option(False, "--reset", help="back to the configured values"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
) -> None:
    """Change a running migration's pace from any machine (picked up within one batch)."""
    with _control_conn() as conn:
        control = control_mod.throttle(conn, batch_ms=batch_ms, max_replica_lag_ms=max_replica_lag_ms,
                                       pause_ms=pause_ms, reset=reset)
    if as_json:
        typer.echo(json.dumps(control, indent=2))
    else:
        shown = {k: v for k, v in control.items() if k != "paused" and v is not None}
        console.print("throttle: " + (", ".join(f"{k} {v}" for k, v in shown.items()) or "configured values"))
