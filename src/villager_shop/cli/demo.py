"""`villager-shop demo`: the whole story on a throwaway `villager_demo` database, start to end:
legacy data → verified backup → rehearsal → online migration under a live writer → verify → status →
the service.

A demo is run again and again: what it makes (the database, its backup, the rehearsal's report) is
removed at its end, on Ctrl-C too, unless --keep; otherwise each run would leave tens of megabytes
behind. The embedded servers it started keep running for the next command, and it says so.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer

from villager_shop.cli import interrupt, render
from villager_shop.core.config import Settings, get_settings
from villager_shop.core.db import connect, connection, create_database, drop_database
from villager_shop.core.errors import VerificationFailed
from villager_shop.core.urls import mask_url, with_dbname
from villager_shop.embedded import redis_url, session_database_url
from villager_shop.legacy import schema
from villager_shop.migration import runner
from villager_shop.migration.planfile import bundled, record
from villager_shop.migration.planfile.spec import load
from villager_shop.migration.planfile.verify import verify_database
from villager_shop.migration.status import status as migration_status
from villager_shop.safety import manifest
from villager_shop.safety.backup import create_backup
from villager_shop.safety.rehearsal.options import RehearsalOptions
from villager_shop.safety.rehearsal.run import rehearse as run_rehearsal
from villager_shop.workload.writer import LiveWriter, check_expected

DEMO_DB = "villager_demo"
# The demo accounts' password: printed on screen, for a throwaway database on this machine only.
DEMO_PASSWORD = "villager-demo"

EXAMPLES = """Examples:
  villager-shop demo                               the whole story, then the API on port 8000 (Ctrl-C stops it)
  villager-shop demo --scale 0.1 --no-serve        smaller and quicker, without the service
  villager-shop demo --keep                        keep the demo's database, backup and report afterwards"""

console = render.console()


def demo(
    scale: float = typer.Option(1.0, help="legacy data scale (1 = 10k users, 50k products, 100k orders)"),
    seed: int = typer.Option(42, help="random seed of the generator"),
    writers: int = typer.Option(3, min=0, max=16, help="old-application writer threads during the migration"),
    serve_after: bool = typer.Option(True, "--serve/--no-serve", help="end by serving the API on the demo database"),
    host: str = typer.Option("127.0.0.1", help="where the service listens at the end"),
    port: int = typer.Option(8000, help="port of the service at the end"),
    keep: bool = typer.Option(False, "--keep", help="keep the demo's database, backup and rehearsal report"),
) -> None:
    """Legacy data → verified backup → rehearsal on staging → online migration under a live writer →
    verify → status → the shop service on the migrated database.

    At its end, or on Ctrl-C, the demo removes the villager_demo database, its backup and the
    rehearsal's report, unless --keep."""
    s = get_settings()
    if serve_after:
        from villager_shop.cli.serve import check_listen

        check_listen(host, port)  # now, not after the whole demo
    admin = session_database_url(s, "demo")
    cache = redis_url(s)
    console.print(f"postgres: {mask_url(admin)}\nredis:    {mask_url(cache)}", markup=False)
    made = _Made(admin, s.backup_dir)
    stage = [" before it began; `villager-shop demo` starts over"]
    try:
        _story(s, made, stage, scale=scale, seed=seed, writers=writers)
        if serve_after:
            _serve(s, made, stage, host=host, port=port, keep=keep)
    except KeyboardInterrupt:
        interrupt.tell("; ".join([stage[0], *_the_end(s, made, keep)]))
        raise
    except BaseException:
        for line in _the_end(s, made, keep):
            console.print(line, markup=False)
        raise
    for line in _the_end(s, made, keep):
        console.print(line, markup=False)


def _story(s: Settings, made: _Made, stage: list[str], *, scale: float, seed: int, writers: int) -> None:
    """Steps 1 to 6, on a new villager_demo database (a previous demo's is replaced)."""
    drop_database(made.admin_url, DEMO_DB)
    url = create_database(made.admin_url, DEMO_DB)
    made.database = url
    schema.init(url)

    _section(stage, "1. the legacy database")
    console.print(f"legacy schema created in {mask_url(url)}; generating data (scale {scale:g}, seed {seed})",
                  markup=False)
    render.generator_report(render.load_with_progress(url, scale=scale, seed=seed), console)

    _section(stage, "2. a verified backup before anything changes")
    entry = create_backup(url, s.backup_dir)
    made.backup_ids.append(entry.id)
    console.print(f"backup {entry.id}: {entry.size:,} bytes, sha256 {entry.sha256[:16]}…, LSN {entry.lsn}",
                  markup=False)

    _section(stage, "3. a rehearsal on a staging copy of that backup")
    made.report_dir = s.data_dir / "reports" / f"demo-rehearsal-{datetime.now(UTC):%Y%m%d_%H%M%S}"
    rehearsal = run_rehearsal(url, s, RehearsalOptions(backup_id=entry.id, writer_threads=min(writers, 2),
                                                       report_dir=made.report_dir,
                                                       plan=load(bundled.default_path())),
                              say=lambda m: console.print(f"[cyan]▸[/] {m}"))
    render.rehearsal_verdict(rehearsal, console)
    if not rehearsal.go:
        console.print("[yellow]the rehearsal said NO-GO; the demo goes on so you can see the rest — an operator "
                      "would stop here and read the report[/]")

    _section(stage, "4. the online migration, while the old and the new application write")
    writer = LiveWriter(url, legacy_threads=writers, new_threads=1 if writers else 0).start()
    progress = render.migration_progress(console)
    t0 = time.perf_counter()
    try:
        with progress:
            ctx = runner.make_context(url, s, render.MigrationReporter(progress))
            try:
                runner.run(ctx, file_plan=record.for_run(ctx.conn, None))
            finally:
                ctx.conn.close()
        seconds = time.perf_counter() - t0
        time.sleep(0.5)
    finally:
        stats = writer.stop().summary()
    console.print(f"migrated in {seconds:.1f} s; the live writer made {stats['writer_ops']:,} writes with "
                  f"{stats['writer_errors']} errors (p50 {stats['writer_p50_ms']} ms, p99 {stats['writer_p99_ms']} ms, "
                  f"max {stats['writer_max_ms']} ms)", markup=False)
    missing = check_expected(url, writer)
    console.print(f"every write present in both representations: {'yes' if not missing else missing[:3]}",
                  markup=False)

    _section(stage, "5. verify")
    with connect(url, autocommit=True) as conn:
        report = verify_database(conn)
        st = migration_status(conn)
    for name, c in report.counts.items():
        if "legacy_rows" in c:
            console.print(f"  {name:<12} {c['legacy_rows']:>9,} legacy rows = {c['migrated']:>9,} migrated"
                          f" + {c['quarantined']:>6,} quarantined", markup=False)
    console.print("verify: [green]OK[/]" if report.ok else "verify: [red]FAILED[/]")

    _section(stage, "6. status")
    console.print(f"phase {st['phase']}, steps {st['steps_done']}/{st['steps_total']}", markup=False)
    for b in st["backfill"]:
        console.print(f"  backfill {b['table']:<12} {b['rows_done']:>9,} rows at {b['rows_per_s']:>7,} rows/s,"
                      f" longest batch {b['max_batch_ms']:.0f} ms", markup=False)
    console.print("on a real database, next: `villager-shop migrate complete --yes` once no old instance remains,"
                  " or `villager-shop migrate rollback --yes` to go back losslessly", markup=False)
    if not report.ok or stats["writer_errors"] or missing:
        raise VerificationFailed("demo: the migration did not verify (see above; --keep keeps the database"
                                 " to look into)")


def _serve(s: Settings, made: _Made, stage: list[str], *, host: str, port: int, keep: bool) -> None:
    """Step 7: the service on the migrated database, with demo accounts to log in with, until Ctrl-C."""
    from villager_shop.api.main import prepare_database
    from villager_shop.cli.serve import serve

    url = made.database
    assert url is not None
    _section(stage, "7. the shop service on the migrated database")
    prepare_database(url)
    accounts = demo_accounts(url)
    base = f"http://{_browsable(host)}:{port}"
    for label, path, what in (("API", "/api/products", "the catalog (also /api/categories, /api/orders)"),
                              ("docs", "/docs", "every endpoint, to try in the browser"),
                              ("dashboard", "/dashboard", "live monitoring (open to local clients)"),
                              ("ready", "/health/ready", "readiness: PostgreSQL and Redis"),
                              ("metrics", "/metrics", "Prometheus")):
        console.print(f"  {label:<11} {base}{path:<16} {what}", markup=False)
    console.print(f"demo accounts, password {DEMO_PASSWORD}:", markup=False)
    width = max((len(email) for _, email, _ in accounts), default=0)
    for role, email, may in accounts:
        console.print(f"  {role:<11} {email:<{width}}  {may}", markup=False)
    customer = next((email for role, email, _ in accounts if role == "customer"), None)
    if customer is not None:
        console.print("log in and call an endpoint:", markup=False)
        console.print(f"  {login_command(base, customer)}", markup=False)
    console.print("Ctrl-C stops the service" + ("; the demo's database, backup and report stay (--keep)" if keep else
                                                "; the demo then removes its database, backup and report"
                                                " (--keep keeps them)"), markup=False)
    servers = servers_note(s)
    if servers:
        console.print(servers, markup=False)
    stage[0] = ": the service was shut down"
    os.environ["DATABASE_URL"] = url
    get_settings.cache_clear()
    serve(host=host, port=port, workers=1, db_connections=20, access_log=False, log_level="warning")
    # uvicorn returns once Ctrl-C has shut the service down gracefully, and keeps the KeyboardInterrupt
    # to itself: the demo ends as interrupted, like any command stopped by Ctrl-C.
    raise KeyboardInterrupt


def _section(stage: list[str], title: str) -> None:
    """A heading; and what a Ctrl-C from here on says it interrupted."""
    stage[0] = f" during {title}; `villager-shop demo` starts over"
    render.rule(console, title)


def _browsable(host: str) -> str:
    """An address a browser on this machine can open for a service listening on `host`."""
    return "127.0.0.1" if host in ("", "0.0.0.0", "::") else (f"[{host}]" if ":" in host else host)


def login_command(base: str, email: str) -> str:
    """One shell line: get a token for `email` (the demo password) and list that user's orders."""
    return (f"TOKEN=$(curl -s -d username={email} -d password={DEMO_PASSWORD} {base}/api/auth/token"
            " | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"access_token\"])')"
            f" && curl -s -H \"Authorization: Bearer $TOKEN\" '{base}/api/orders?limit=3'")


# Users with an email a person would type (first.last42@domain, as the generator makes them; not the
# live writer's): a customer who has ordered, the keeper of the shop with the most products, and an
# admin (another customer made one when there is none).
_ACCOUNTS_SQL = """
WITH clean AS (SELECT id, email, role FROM public.users WHERE email ~ '^[a-z]+\\.[a-z]+[0-9]*@[a-z]+(\\.[a-z]+)+$')
SELECT (SELECT c.email FROM clean c WHERE c.role = 'customer'
           AND EXISTS (SELECT 1 FROM public.orders o WHERE o.customer_id = c.id) ORDER BY c.email LIMIT 1),
       (SELECT c.email FROM clean c JOIN public.shops s ON s.owner_id = c.id WHERE c.role = 'shopkeeper'
         ORDER BY (SELECT count(*) FROM public.products p WHERE p.shop_id = s.id) DESC, c.email LIMIT 1),
       (SELECT c.email FROM clean c WHERE c.role = 'admin' ORDER BY c.email LIMIT 1),
       (SELECT c.email FROM clean c WHERE c.role = 'customer'
           AND NOT EXISTS (SELECT 1 FROM public.orders o WHERE o.customer_id = c.id) ORDER BY c.email LIMIT 1)
"""


def demo_accounts(url: str) -> list[tuple[str, str, str]]:
    """Give a customer, a shopkeeper and an admin of the demo database the demo password; returns
    (role, email, what they may do) for each."""
    from villager_shop.api.services.accounts import set_password

    with connection(url, autocommit=True) as conn:
        row = conn.execute(_ACCOUNTS_SQL).fetchone()
        assert row is not None
        customer, keeper, admin, spare = row
        chosen = [("customer", customer, "orders: POST /api/orders, their own in GET /api/orders"),
                  ("shopkeeper", keeper, "edits their shop's products, confirms its orders"),
                  ("admin", admin or spare, "everything, and the dashboard from anywhere")]
        accounts = []
        for role, email, note in chosen:
            if email is None:
                continue
            set_password(conn, email, DEMO_PASSWORD, role)
            accounts.append((role, str(email), note))
    return accounts


def servers_note(s: Settings) -> str | None:
    """The line saying which embedded servers go on running after the demo, and how to stop them
    (None when both are external: they are not ours to stop)."""
    embedded = [name for name, url in (("PostgreSQL", s.database_url), ("Redis", s.redis_url)) if url is None]
    if not embedded:
        return None
    return (f"the embedded {' and '.join(embedded)} keep{'s' if len(embedded) == 1 else ''} running for the next"
            f" command; `villager-shop db stop` stops {'them' if len(embedded) > 1 else 'it'}")


@dataclass
class _Made:
    """What this demo made, to be removed at its end."""

    admin_url: str
    backup_dir: Path
    database: str | None = None  # its URL
    backup_ids: list[str] = field(default_factory=list)
    report_dir: Path | None = None

    def describe(self) -> list[str]:
        what = [f"database {DEMO_DB}"] if self.database else []
        what += [f"backup {i}" for i in self.backup_ids]
        if self.report_dir is not None and self.report_dir.exists():
            what.append(f"the rehearsal report {self.report_dir}")
        return what

    def remove(self) -> tuple[list[str], list[str]]:
        """Remove everything; returns (what was removed, what could not be and why). Each part is
        tried whatever happened to the others."""
        removed, failed = [], []
        parts: list[tuple[str, Any]] = []
        report_dir = self.report_dir
        if report_dir is not None and report_dir.exists():
            parts.append(("the rehearsal report", lambda: shutil.rmtree(report_dir)))
        if self.backup_ids:
            parts.append((f"backup {', '.join(self.backup_ids)}",
                          lambda: manifest.remove(self.backup_dir, set(self.backup_ids))))
        if self.database is not None:
            parts.append((f"database {DEMO_DB}", lambda: drop_database(self.admin_url, DEMO_DB)))
        for what, action in parts:
            try:
                action()
                removed.append(what)
            except Exception as exc:
                failed.append(f"{what} ({type(exc).__name__}: {exc})".replace("\n", " "))
        return removed, failed


def _the_end(s: Settings, made: _Made, keep: bool) -> list[str]:
    """Remove what the demo made (unless `keep`); the lines that say what became of it."""
    lines = []
    if keep:
        kept = made.describe()
        if kept:
            lines.append(f"kept (--keep): {', '.join(kept)}; a database URL: "
                         f"{mask_url(with_dbname(made.admin_url, DEMO_DB))}")
    else:
        removed, failed = made.remove()
        if removed:
            lines.append(f"removed what the demo made: {', '.join(removed)} (--keep keeps it)")
        if failed:
            lines.append(f"could not remove: {'; '.join(failed)}")
    note = servers_note(s)
    if note:
        lines.append(note)
    return lines
