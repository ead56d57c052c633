"""`villager-shop demo`: the whole story on a throwaway `villager_demo` database, start to end:
legacy data → verified backup → rehearsal → online migration under a live writer → verify → status →
the service."""

from __future__ import annotations

import os
import time

import typer

from villager_shop.cli import render
from villager_shop.core.config import get_settings
from villager_shop.core.db import connect, create_database, drop_database
from villager_shop.core.errors import VerificationFailed
from villager_shop.core.urls import mask_url, with_dbname
from villager_shop.embedded import redis_url, session_database_url
from villager_shop.legacy import schema
from villager_shop.migration import runner
from villager_shop.migration.status import status as migration_status
from villager_shop.migration.verify import verify
from villager_shop.safety.backup import create_backup
from villager_shop.safety.rehearse import RehearsalOptions
from villager_shop.safety.rehearse import rehearse as run_rehearsal
from villager_shop.workload.writer import LiveWriter, check_expected

DEMO_DB = "villager_demo"

EXAMPLES = """Examples:
  villager-shop demo                               the whole story, then the API on port 8000 (Ctrl-C stops it)
  villager-shop demo --scale 0.1 --no-serve        smaller and quicker, without the service"""
console = render.console()


def demo(
    scale: float = typer.Option(1.0, help="legacy data scale (1 = 10k users, 50k products, 100k orders)"),
    seed: int = typer.Option(42, help="random seed of the generator"),
    writers: int = typer.Option(3, min=0, max=16, help="old-application writer threads during the migration"),
    serve_after: bool = typer.Option(True, "--serve/--no-serve", help="end by serving the API on the demo database"),
    host: str = typer.Option("127.0.0.1", help="where the service listens at the end"),
    port: int = typer.Option(8000, help="port of the service at the end"),
) -> None:
    """Legacy data → verified backup → rehearsal on staging → online migration under a live writer →
    verify → status → the shop service on the migrated database."""
    s = get_settings()
    admin = session_database_url(s, "demo")
    cache = redis_url(s)
    console.print(f"postgres: {mask_url(admin)}\nredis:    {mask_url(cache)}")
    drop_database(admin, DEMO_DB)
    create_database(admin, DEMO_DB)
    url = with_dbname(admin, DEMO_DB)
    schema.init(url)

    render.rule(console, "1. the legacy database")
    console.print(f"legacy schema created in {mask_url(url)}; generating data (scale {scale:g}, seed {seed})")
    render.generator_report(render.load_with_progress(url, scale=scale, seed=seed), console)

    render.rule(console, "2. a verified backup before anything changes")
    entry = create_backup(url, s.backup_dir)
    console.print(f"backup {entry.id}: {entry.size:,} bytes, sha256 {entry.sha256[:16]}…, LSN {entry.lsn}")

    render.rule(console, "3. a rehearsal on a staging copy of that backup")
    rehearsal = run_rehearsal(url, s, RehearsalOptions(backup_id=entry.id, writer_threads=min(writers, 2)),
                              say=lambda m: console.print(f"[cyan]▸[/] {m}"))
    render.rehearsal_verdict(rehearsal, console)
    if not rehearsal.go:
        console.print("[yellow]the rehearsal said NO-GO; the demo goes on so you can see the rest — an operator "
                      "would stop here and read the report[/]")

    render.rule(console, "4. the online migration, while the old and the new application write")
    writer = LiveWriter(url, legacy_threads=writers, new_threads=1 if writers else 0).start()
    progress = render.migration_progress(console)
    t0 = time.perf_counter()
    try:
        with progress:
            ctx = runner.make_context(url, s, render.MigrationReporter(progress))
            try:
                runner.run(ctx)
            finally:
                ctx.conn.close()
        seconds = time.perf_counter() - t0
        time.sleep(0.5)
    finally:
        stats = writer.stop().summary()
    console.print(f"migrated in {seconds:.1f} s; the live writer made {stats['writer_ops']:,} writes with "
                  f"{stats['writer_errors']} errors (p50 {stats['writer_p50_ms']} ms, p99 {stats['writer_p99_ms']} ms, "
                  f"max {stats['writer_max_ms']} ms)")
    missing = check_expected(url, writer)
    console.print(f"every write present in both representations: {'yes' if not missing else missing[:3]}")

    render.rule(console, "5. verify")
    with connect(url, autocommit=True) as conn:
        report = verify(conn)
        st = migration_status(conn)
    for name, c in report.counts.items():
        if "legacy_rows" in c:
            console.print(f"  {name:<12} {c['legacy_rows']:>9,} legacy rows = {c['migrated']:>9,} migrated"
                          f" + {c['quarantined']:>6,} quarantined")
    console.print("verify: [green]OK[/]" if report.ok else "verify: [red]FAILED[/]")

    render.rule(console, "6. status")
    console.print(f"phase {st['phase']}, steps {st['steps_done']}/{st['steps_total']}")
    for b in st["backfill"]:
        console.print(f"  backfill {b['table']:<12} {b['rows_done']:>9,} rows at {b['rows_per_s']:>7,} rows/s,"
                      f" longest batch {b['max_batch_ms']:.0f} ms")
    console.print("next: `villager-shop migrate complete --yes` once no old instance remains, or "
                  "`villager-shop migrate rollback --yes` to go back losslessly")
    if not report.ok or stats["writer_errors"] or missing:
        raise VerificationFailed("demo: the migration did not verify (see above)")
    if not serve_after:
        return
    render.rule(console, "7. the shop service on the migrated database")
    console.print(f"API      http://{host}:{port}/api/products   (OpenAPI: http://{host}:{port}/docs)\n"
                  f"health   http://{host}:{port}/api/health\n"
                  f"metrics  http://{host}:{port}/metrics\n"
                  f"logins:  villager-shop users set-password EMAIL --password-stdin (with DATABASE_URL of the demo)\n"
                  "Ctrl-C stops the service.")
    os.environ["DATABASE_URL"] = url
    get_settings.cache_clear()
    from villager_shop.cli.serve import serve

    serve(host=host, port=port, workers=1, db_connections=20, access_log=False, log_level="warning")
