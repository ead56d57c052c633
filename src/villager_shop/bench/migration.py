"""`bench migration`: the guide's Phase 1+2 and our online migration on the same freshly generated
data, each with the live writer running. The guide's run is the reference measured in the same
session, so the ratio means something on a shared, noisy machine. The guide never fills
`order_items.variant_id`; `order_items_floor` times that one UPDATE alone, done the cheapest way
(single statement, no triggers, no writers), so the ratio can also be read against guide + floor.

Ours is also taken apart: each step's time (`steps_s`, from the run's recorded state), the migrator
process's peak memory, and the longest stall once the first index exists (before it, the legacy
schema's own foreign-key scans dominate)."""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql

from villager_shop.bench.migrator_proc import run_migrator
from villager_shop.bench.replica_lag import LagProbe
from villager_shop.core.db import connect, create_database, database_exists, drop_database
from villager_shop.core.urls import with_dbname
from villager_shop.legacy.generate import generate
from villager_shop.legacy.schema import LEGACY_TABLES, schema_sql
from villager_shop.migration.planfile import bundled
from villager_shop.migration.planfile.spec import load
from villager_shop.workload.writer import LiveWriter

STRATEGIES = ("guide", "online")
WRITER_RATE = 200.0
# The plan's first step: until this index exists, every legacy product delete scans order_items.
FIRST_INDEX_STEP = "index_idx_order_items_product_id"
COMPLETE = "villager bench legacy data: complete"


def _writer_window(writer: LiveWriter, start: float, end: float,
                   usual_ms: dict[str, float] | None = None) -> dict[str, Any]:
    """The writer's latencies in [start, end]. With `usual_ms` (each operation's median on the legacy
    schema before the migration), also the longest stall: how much longer than usual a write took.
    A product delete scans order_items for its foreign-key check until the migration's index on
    order_items.product_id exists: hundreds of milliseconds at scale 5 with or without a migration,
    which is the legacy schema's cost, not a stall."""
    window = [(ms, op) for t, ms, op in writer.stats.samples if start <= t <= end]
    lat = sorted(ms for ms, _op in window) or [0.0]

    def pct(p: float) -> float:
        return round(lat[min(len(lat) - 1, int(p * len(lat)))], 2)

    out: dict[str, Any] = {"writer_ops": len(window), "writer_errors": writer.stats.errors,
                           "writer_p50_ms": pct(0.5), "writer_p99_ms": pct(0.99), "writer_max_ms": round(lat[-1], 2)}
    if usual_ms is not None:
        out["writer_max_stall_ms"] = round(max((ms - usual_ms.get(op, 0.0) for ms, op in window), default=0.0), 2)
    if writer.stats.errors:  # what went wrong, not just how often
        out["writer_error_samples"] = writer.stats.error_samples[:5]
    return out


def _usual_ms(writer: LiveWriter, start: float, end: float) -> dict[str, float]:
    """Each operation's median latency in [start, end]."""
    by_op: dict[str, list[float]] = {}
    for t, ms, op in writer.stats.samples:
        if start <= t <= end:
            by_op.setdefault(op, []).append(ms)
    return {op: statistics.median(v) for op, v in by_op.items()}


def _backfill_rate(url: str, strategy: str, summary: dict[str, Any]) -> tuple[int, float]:
    if strategy == "guide":
        return int(summary["backfill_rows"]), float(summary["backfill_rows_per_s"])
    with psycopg.connect(url) as conn:
        # Parts of one table run in parallel: its time is that of its slowest part.
        row = conn.execute("SELECT sum(rows), sum(secs) FROM (SELECT sum(rows_done) AS rows, max(elapsed_s) AS secs"
                           " FROM villager_migration.backfill GROUP BY table_name) t").fetchone()
    rows, secs = (int(row[0] or 0), float(row[1] or 0)) if row else (0, 0.0)
    return rows, rows / secs if secs else 0.0


def _steps(url: str) -> list[tuple[str, float, float]]:
    """Each finished step of our run as (name, start, end) in wall-clock seconds, in plan order."""
    with psycopg.connect(url) as conn:
        if conn.execute("SELECT to_regclass('villager_migration.steps')").fetchone() == (None,):
            return []
        return [(r[0], float(r[1]), float(r[2])) for r in conn.execute(
            "SELECT name, extract(epoch FROM started_at), extract(epoch FROM finished_at)"
            " FROM villager_migration.steps WHERE started_at IS NOT NULL AND finished_at IS NOT NULL"
            " ORDER BY position")]


def _rebuild_stages(url: str) -> dict[str, float]:
    """The stages of a table rebuild (copy, index, catch-up, swap, validate), as the step recorded them."""
    with psycopg.connect(url) as conn:
        if conn.execute("SELECT to_regclass('villager_migration.steps')").fetchone() == (None,):
            return {}
        row = conn.execute("SELECT detail FROM villager_migration.steps WHERE detail->>'method' = 'rebuild'"
                           " ORDER BY position LIMIT 1").fetchone()
    detail = dict(row[0]) if row else {}
    return {k: float(v) for k, v in detail.items() if k.endswith("_s") and isinstance(v, int | float)}


def _slowest(writer: LiveWriter, steps: list[tuple[str, float, float]], start: float, end: float,
             n: int = 5) -> list[dict[str, Any]]:
    """The slowest writes during the run, with the migration step that was running then."""
    slow = sorted(((t, ms, op) for t, ms, op in writer.stats.samples if start <= t <= end), key=lambda w: -w[1])[:n]
    return [{"op": op, "ms": round(ms, 1),
             "during": [name for name, a, b in steps if a - 0.05 <= t <= b + 0.05]} for t, ms, op in slow]


def _worst_stalls(writer: LiveWriter, steps: list[tuple[str, float, float]], usual_ms: dict[str, float],
                  start: float, end: float, n: int = 5) -> list[dict[str, Any]]:
    """The writes that took longest beyond their operation's usual time in [start, end], with the
    step running then: what to look at when the stall goal is missed."""
    worst = sorted(((t, ms - usual_ms.get(op, 0.0), ms, op) for t, ms, op in writer.stats.samples
                    if start <= t <= end), key=lambda w: -w[1])[:n]
    return [{"op": op, "stall_ms": round(stall, 1), "ms": round(ms, 1),
             "during": [name for name, a, b in steps if a - 0.05 <= t <= b + 0.05],
             # where in the step (a rebuild's stages add up, in order, in its rebuild_stages_s)
             "into_step_s": [round(t - a, 2) for _, a, b in steps if a - 0.05 <= t <= b + 0.05]}
            for t, stall, ms, op in worst]


def _checkpoint(admin_url: str) -> None:
    """Start each run with no checkpoint pending: copying the template wrote the whole database to
    the WAL (PostgreSQL 15+), and the checkpoint that volume triggers would otherwise land in the
    middle of the next run, adding its I/O stalls to whichever strategy it happens to meet."""
    try:
        with connect(admin_url, autocommit=True) as conn:
            conn.execute("CHECKPOINT")
    except psycopg.errors.InsufficientPrivilege:
        pass


def _one_run(admin_url: str, template: str, name: str, strategy: str, writer_threads: int, writer_rate: float | None,
             baseline_s: float, say: Callable[[str], None], pooler_url: str | None = None,
             lag: LagProbe | None = None, plan: str | None = None) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """One strategy on a fresh copy of the template, under the live writer; the copy is dropped.
    With `pooler_url` (any database through the pooler), the writer writes through the pooler;
    with `lag`, the standby's replay lag during the run is reported. `online_unthrottled` is ours
    with the replica-lag limit out of reach. `plan`: ours runs that plan file."""
    extra_env = {"VILLAGER_MAX_REPLICA_LAG_MS": "3600000"} if strategy == "online_unthrottled" else {}
    cli_strategy = "online" if strategy == "online_unthrottled" else strategy
    drop_database(admin_url, name)
    db = create_database(admin_url, name, template=template)
    pooled = with_dbname(pooler_url, name) if pooler_url else None
    try:
        _checkpoint(admin_url)
        say(f"{strategy}: migrating with {writer_threads} legacy writers (+1 new-app writer) …")
        writer = LiveWriter(pooled or db, legacy_threads=writer_threads, new_threads=1, pause_s=0.003, rate=writer_rate).start()
        try:
            # A few seconds of the same workload before the migration: some legacy writes are slow
            # on the legacy schema itself (a product delete scans order_items, which has no index
            # on product_id), and that is not the migration's doing.
            before = time.time()
            time.sleep(baseline_s)
            start = time.time()
            run = run_migrator(db, cli_strategy, pooled, extra_env, plan if cli_strategy == "online" else None)
            end = time.time()
            time.sleep(0.3)
        finally:
            writer.stop()
        rows, rate = _backfill_rate(db, cli_strategy, run.summary)
        floor = None
        if strategy == "guide":
            # What the guide leaves out, done the cheapest way there is (one statement, no triggers,
            # no batches, nobody writing): a floor for the part of our work the guide skips.
            with connect(db, autocommit=True) as conn:
                t1 = time.perf_counter()
                cur = conn.execute("UPDATE order_items oi SET variant_id = v.id FROM product_variants v"
                                   " WHERE v.product_id = oi.product_id AND v.is_default")
                floor = {"rows": cur.rowcount, "total_s": round(time.perf_counter() - t1, 3)}
        baseline = _writer_window(writer, before, start)
        usual = _usual_ms(writer, before, start)
        steps = _steps(db) if cli_strategy == "online" else []
        result = {"total_s": round(end - start, 3), "backfill_rows": rows,
                  "backfill_rows_per_s": round(rate), **_writer_window(writer, start, end, usual),
                  "writer_baseline_p99_ms": baseline["writer_p99_ms"],
                  "writer_baseline_max_ms": baseline["writer_max_ms"],
                  "migrator_peak_rss_mb": run.peak_rss_mb,
                  "slowest_writes": _slowest(writer, steps, start, end),
                  **(lag.window(start, end) if lag else {})}
        if steps:
            first_index = next((b for name, _a, b in steps if name == FIRST_INDEX_STEP), start)
            result["writer_max_stall_after_first_index_ms"] = _writer_window(
                writer, first_index, end, usual)["writer_max_stall_ms"]
            result["worst_stalls_after_first_index"] = _worst_stalls(writer, steps, usual, first_index, end)
            result["steps_s"] = {name: round(b - a, 3) for name, a, b in steps}
            result["slowest_steps"] = sorted(result["steps_s"], key=lambda k: -result["steps_s"][k])[:3]
            result["rebuild_stages_s"] = _rebuild_stages(db)
        say(f"{strategy}: {json.dumps(result)}")
        return result, floor
    finally:
        drop_database(admin_url, name)


def plan_name(path: str) -> str:
    return load(path).name


def template_name(prefix: str, scale: float, seed: int) -> str:
    return f"{prefix}_legacy_s{scale:g}_seed{seed}".replace(".", "_").replace("-", "_")


def _legacy_template(admin_url: str, name: str, scale: float, seed: int, reuse: bool,
                     say: Callable[[str], None]) -> dict[str, Any]:
    """The legacy data every run copies. With `reuse`, a template a previous run generated to the end
    (marked by its comment) is used as it is: generating scale 20 takes minutes."""
    if reuse and database_exists(admin_url, name):
        with connect(admin_url, autocommit=True) as conn:
            comment = conn.execute("SELECT shobj_description(oid, 'pg_database') FROM pg_database"
                                   " WHERE datname = %s", (name,)).fetchone()
        if comment and comment[0] == COMPLETE:
            say(f"reusing the legacy data in {name}")
            with connect(with_dbname(admin_url, name)) as conn:
                rows = {t: int(conn.execute(sql.SQL("SELECT count(*) FROM public.{}").format(sql.Identifier(t)))
                               .fetchone()[0]) for t in LEGACY_TABLES}  # type: ignore[index]
            return {"generate_s": None, "data_reused": True, "legacy_rows": rows}
    drop_database(admin_url, name)
    url = create_database(admin_url, name)
    with connect(url, autocommit=True) as conn:
        conn.execute(schema_sql().encode())
    say(f"generating scale {scale} legacy data …")
    t0 = time.perf_counter()
    report = generate(url, scale=scale, seed=seed)
    generate_s = round(time.perf_counter() - t0, 2)
    with connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(sql.Identifier(name), sql.Literal(COMPLETE)))
    return {"generate_s": generate_s, "data_reused": False, "legacy_rows": report.to_dict().get("rows", {})}


def bench_migration(admin_url: str, *, scale: float, seed: int = 42, writer_threads: int = 3,
                    writer_rate: float | None = WRITER_RATE, baseline_s: float = 3.0, rounds: int = 1,
                    pooler_url: str | None = None, standby_url: str | None = None, guide: bool = True,
                    reuse_data: bool = False, db_prefix: str = "vbench", plan: str | None = None,
                    say: Callable[[str], None] = lambda _m: None) -> dict[str, Any]:
    """`rounds` > 1 runs the guide and ours alternately that many times, each on a fresh copy: on a
    shared machine whose speed drifts over minutes, each round's ratio compares runs made side by
    side, and the median round is reported (every round's figures under `rounds`). `pooler_url`: the
    writers write through that pooler (in front of `admin_url`'s server). `standby_url`: a streaming
    standby of `admin_url`'s server; its replay lag is measured in every run, and ours runs twice:
    with the throttle (`online`) and with the replica-lag limit out of reach (`online_unthrottled`).
    `guide=False` runs ours alone (the median round is then by ours' time). `reuse_data` keeps the
    generated legacy data (database `<db_prefix>_legacy_s<scale>_seed<seed>`) for the next run.
    `plan`: ours runs that plan file (`migrate run --plan`; default plans/villager.toml, `built-in`
    the Python-coded plan)."""
    strategies: tuple[str, ...] = STRATEGIES if guide else ("online",)
    if standby_url:
        strategies = (*strategies, "online_unthrottled")
    lag = LagProbe(admin_url, standby_url).start() if standby_url else None
    tag = f"{db_prefix}_{os.getpid()}"
    template = template_name(db_prefix, scale, seed) if reuse_data else f"{tag}_legacy"
    out: dict[str, Any] = {"scale": scale, "seed": seed, "writer_threads": writer_threads,
                           "writer_rate_ops_per_s": writer_rate or "closed loop",
                           "writer_through": "pooler" if pooler_url else "direct", "guide_run": guide,
                           "plan": "built-in" if bundled.is_built_in(plan) else plan_name(plan or bundled.default_path())}
    try:
        out.update(_legacy_template(admin_url, template, scale, seed, reuse_data, say))
        runs: list[dict[str, Any]] = []
        for r in range(max(1, rounds)):
            one: dict[str, Any] = {}
            for strategy in strategies:
                one[strategy], floor = _one_run(admin_url, template, f"{tag}_{strategy}", strategy, writer_threads,
                                                writer_rate, baseline_s, say, pooler_url, lag, plan)
                if floor is not None:
                    one["order_items_floor"] = floor
            if guide:
                one["total_ratio_online_vs_guide"] = (round(one["online"]["total_s"] / one["guide"]["total_s"], 3)
                                                      if one["guide"]["total_s"] else None)
                say(f"round {r + 1}: ratio {one['total_ratio_online_vs_guide']}")
            runs.append(one)
        # The median round, by its ratio or by ours' time (an odd count gives a round that was measured).
        ranked = sorted(runs, key=lambda one: (one.get("total_ratio_online_vs_guide") or 0.0)
                        if guide else one["online"]["total_s"])
        mid = ranked[(len(ranked) - 1) // 2]
        out["online"] = o = mid["online"]
        if len(runs) > 1:
            out["rounds"] = [{**({"guide_total_s": one["guide"]["total_s"],
                                  "total_ratio_online_vs_guide": one["total_ratio_online_vs_guide"]} if guide else {}),
                              "online_total_s": one["online"]["total_s"],
                              "online_writer_max_ms": one["online"]["writer_max_ms"],
                              "online_writer_max_stall_ms": one["online"]["writer_max_stall_ms"],
                              "online_writer_max_stall_after_first_index_ms":
                                  one["online"]["writer_max_stall_after_first_index_ms"],
                              "online_migrator_peak_rss_mb": one["online"]["migrator_peak_rss_mb"],
                              "online_writer_errors": one["online"]["writer_errors"]} for one in runs]
        worst_stall = max(one["online"]["writer_max_stall_ms"] for one in runs)
        worst_after_index = max(one["online"]["writer_max_stall_after_first_index_ms"] for one in runs)
        worst_write = max(one["online"]["writer_max_ms"] for one in runs)
        errors = sum(one["online"]["writer_errors"] for one in runs)
        out["goals"] = {"max_write_stall_lt_100ms": worst_stall < 100,
                        "max_stall_after_first_index_lt_100ms": worst_after_index < 100,
                        "max_write_latency_lt_100ms": worst_write < 100,
                        "no_writer_errors": errors == 0}
        if guide:
            out["guide"] = g = mid["guide"]
            out["order_items_floor"] = mid["order_items_floor"]
            out["total_ratio_online_vs_guide"] = ratio = mid["total_ratio_online_vs_guide"]
            floor_s = g["total_s"] + out["order_items_floor"]["total_s"]
            out["total_ratio_online_vs_guide_plus_order_items_floor"] = (round(o["total_s"] / floor_s, 3)
                                                                         if floor_s else None)
            out["max_stall_ratio_online_vs_guide"] = (round(o["writer_max_ms"] / g["writer_max_ms"], 4)
                                                      if g["writer_max_ms"] else None)
            if len(runs) > 1:
                out["total_ratio_median"] = round(statistics.median(one["total_ratio_online_vs_guide"]
                                                                    for one in runs), 3)
            out["goals"]["total_le_1_5x_guide"] = bool(ratio is not None and ratio <= 1.5)
            # The moonshot: no slower than the guide's one transaction (median round).
            out["goals"]["total_le_guide"] = bool(ratio is not None and ratio <= 1.0)
        if standby_url:
            out["online_unthrottled"] = mid["online_unthrottled"]
            off = out["online_unthrottled"]
            runs_by_name = ((("guide", out["guide"]),) if guide else ()) + (("online_throttled", o),
                                                                            ("online_unthrottled", off))
            out["replica"] = {name: {k: one_run[k] for k in ("total_s", "replica_lag_max_ms", "replica_lag_p99_ms",
                                                             "replica_lag_max_mb")}
                              for name, one_run in runs_by_name}
            out["replica"]["throttled_vs_unthrottled_time"] = (round(o["total_s"] / off["total_s"], 3)
                                                               if off["total_s"] else None)
            worst_lag = max(one["online"]["replica_lag_max_ms"] for one in runs)
            out["goals"]["replica_max_lag_lt_1s_throttled"] = worst_lag < 1000
            out["goals"]["throttled_le_1_3x_unthrottled"] = bool(
                out["replica"]["throttled_vs_unthrottled_time"] is not None
                and out["replica"]["throttled_vs_unthrottled_time"] <= 1.3)
        return out
    finally:
        if lag:
            lag.stop()
        if not reuse_data:
            drop_database(admin_url, template)


def admin_url_for(url: str) -> str:
    return with_dbname(url, "postgres")
