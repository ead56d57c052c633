"""`villager-shop baseline`: capture, list and compare performance baselines."""

from __future__ import annotations

import json

import typer
from rich.markup import escape
from rich.table import Table

from villager_shop.cli import render
from villager_shop.core.config import get_settings
from villager_shop.core.units import format_bytes
from villager_shop.embedded import database_url
from villager_shop.safety import baseline as baselines

app = typer.Typer(help="Performance baselines (table/index statistics, sizes, pg_stat_statements) and their diff.",
                  no_args_is_help=True)

out = render.console()


def _signed(n: int) -> str:
    return f"+{n}" if n > 0 else str(n)


@app.command()
def capture(
    name: str = typer.Argument(..., help="name of the baseline, e.g. before-migration"),
    replace: bool = typer.Option(False, "--replace", help="overwrite an existing baseline of that name"),
) -> None:
    """Store the current statistics of the shop database under NAME (in schema villager_baseline)."""
    snap = baselines.capture(database_url(get_settings()), name, replace=replace)
    statements = (f"{len(snap.statements)} statements" if snap.statements is not None
                  else f"no statement timings ({snap.statements_note})")
    out.print(f"baseline {snap.name!r} captured at {snap.captured_at.isoformat()}: {len(snap.tables)} tables, "
              f"{len(snap.indexes)} indexes, {statements}", markup=False)


@app.command("list")
def list_(as_json: bool = typer.Option(False, "--json", help="machine-readable output")) -> None:
    """The stored baselines, oldest first."""
    snaps = baselines.list_snapshots(database_url(get_settings()))
    if as_json:
        typer.echo(json.dumps([{"name": s.name, "captured_at": s.captured_at.isoformat(), "tables": len(s.tables),
                                "indexes": len(s.indexes),
                                "statements": None if s.statements is None else len(s.statements)}
                               for s in snaps], indent=2))
        return
    if not snaps:
        out.print("no baselines yet (villager-shop baseline capture NAME)", markup=False)
        return
    table = Table("name", "captured at", "tables", "indexes", "statements")
    for s in snaps:
        table.add_row(escape(s.name), s.captured_at.isoformat(timespec="seconds"), str(len(s.tables)),
                      str(len(s.indexes)), "-" if s.statements is None else str(len(s.statements)))
    out.print(table)


@app.command("diff")
def diff_(
    before: str = typer.Argument(..., metavar="A", help="the earlier baseline"),
    after: str = typer.Argument(..., metavar="B", help="the later baseline"),
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
    top: int = typer.Option(10, help="statements to show per baseline"),
) -> None:
    """What changed between baselines A and B: scans, seq-scan -> index-scan tables, indexes, sizes, statements."""
    url = database_url(get_settings())
    d = baselines.diff(baselines.load(url, before), baselines.load(url, after), top=top)
    if as_json:
        typer.echo(json.dumps(d.to_dict(), indent=2, default=str))
        return
    t = Table("table", "Δ seq_scan", "Δ idx_scan", "Δ seq_tup_read", "Δ ins/upd/del", "size", "index size",
              title=f"tables: {escape(d.before)} -> {escape(d.after)}")
    for c in d.tables:
        name = escape(c.table) + (" (new)" if c.new else "") + (" (reset)" if c.reset else "")
        t.add_row(name, _signed(c.seq_scan), _signed(c.idx_scan), _signed(c.seq_tup_read),
                  f"{c.n_tup_ins}/{c.n_tup_upd}/{c.n_tup_del}",
                  f"{format_bytes(c.table_bytes_after)} ({format_bytes(c.table_bytes_after - c.table_bytes_before)})",
                  f"{format_bytes(c.index_bytes_after)} ({format_bytes(c.index_bytes_after - c.index_bytes_before)})")
    out.print(t)
    if d.seq_to_index:
        out.print("sequential scans turned into index scans: " + ", ".join(d.seq_to_index), markup=False)
    it = Table("index", "table", "status", "idx_scan", "size", title="indexes")
    for i in d.indexes:
        if i.status == "kept" and i.idx_scan == 0 and i.bytes_after == i.bytes_before:
            continue
        it.add_row(escape(i.index), escape(i.table), i.status, str(i.idx_scan),
                   f"{format_bytes(i.bytes_after)} ({format_bytes(i.bytes_after - i.bytes_before)})")
    out.print(it)
    for label, stmts in (("before", d.statements_before), ("after", d.statements_after)):
        if stmts is None:
            continue
        st = Table("mean ms", "calls", "total ms", "query", title=f"top statements by mean time, {label}")
        for s in stmts:
            st.add_row(f"{s['mean_exec_time']:.2f}", str(s["calls"]), f"{s['total_exec_time']:.0f}",
                       escape(" ".join(str(s["query"]).split())[:100]))
        out.print(st)
    for note in d.notes:
        out.print(f"note: {note}", markup=False)
