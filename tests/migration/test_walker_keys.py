"""The backfill walker over any single-column primary key (bigserial, integer with another name,
text in a collation other than the database's, a quoted varchar column, date): every row is done
exactly once on both walks, an interrupted walk resumes where it stopped over the ranges it
started with, and rows another transaction holds are retried (their keys kept as text)."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests.helpers import settings_for
from villager_shop.migration.context import Context, SilentReporter
from villager_shop.migration.keys import Key, KeyRange, key_bounds, key_ranges, primary_key
from villager_shop.migration.runner import make_context
from villager_shop.migration.sqlfiles import section
from villager_shop.migration.walker import bind, run_backfill

# Text keys: mixed case, non-ASCII, and what an array literal must quote.
SPECIAL = ["apple", "Apple", "APPLE", "Zebra", "zebra", "éclair", "Éclair", "ß", "日本", "a b", "a,b", '"quoted"',
           "back\\slash", "{brace}", "NULL", "", " lead", "trail ", "ǅemo", "Ωmega"]
PREFIXES = ["", "Ä", "é", "Z", "a", "日", " ", "B", "ø"]


def _icu(conn: psycopg.Connection[Any]) -> str:
    """A collation that orders unlike the database's default (C.UTF-8 on the CI servers)."""
    row = conn.execute("SELECT 1 FROM pg_collation WHERE collname = 'und-x-icu'").fetchone()
    return ' COLLATE "und-x-icu"' if row else ""


# table -> (DDL, fill, the key primary_key() should read)
def _tables(icu: str) -> dict[str, tuple[str, str, Key]]:
    extra = "hits int NOT NULL DEFAULT 0, done boolean NOT NULL DEFAULT false"
    special = ", ".join("'" + v.replace("'", "''") + "'" for v in SPECIAL)
    return {
        "posts": (f"CREATE TABLE public.posts (id bigserial PRIMARY KEY, {extra})",
                  "INSERT INTO public.posts (hits) SELECT 0 FROM generate_series(1, 1500)",
                  Key("id", "bigint")),
        "items": (f"CREATE TABLE public.items (post_id integer PRIMARY KEY, {extra})",
                  "INSERT INTO public.items (post_id) SELECT g * 7 - 5000 FROM generate_series(1, 1200) g",
                  Key("post_id", "integer")),
        "books": (f"CREATE TABLE public.books (isbn text{icu} PRIMARY KEY, {extra})",
                  f"INSERT INTO public.books (isbn) SELECT unnest(ARRAY[{special}]) UNION"
                  f" SELECT (ARRAY{PREFIXES!r})[1 + g % {len(PREFIXES)}] || CASE WHEN g % 2 = 0"
                  "  THEN upper(md5(g::text)) ELSE md5(g::text) END FROM generate_series(1, 1400) g",
                  Key("isbn", "text")),
        "codes": (f'CREATE TABLE public.codes ("Code" varchar(40) PRIMARY KEY, {extra})',
                  'INSERT INTO public.codes ("Code") SELECT \'K-\' || lpad(g::text, 5, \'0\') || chr(192 + g % 50)'
                  " FROM generate_series(1, 1100) g",
                  Key("Code", "character varying(40)")),
        "days": (f"CREATE TABLE public.days (day date PRIMARY KEY, {extra})",
                 "INSERT INTO public.days (day) SELECT DATE '1990-01-01' + g FROM generate_series(1, 1000) g",
                 Key("day", "date")),
    }


@pytest.fixture
def keyed_db(fresh_db: str) -> Iterator[tuple[str, dict[str, tuple[str, str, Key]]]]:
    """A database with the migration's state schema and one small table per kind of key."""
    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute(section("state.sql", "state").encode())
        tables = _tables(_icu(c))
        for ddl, fill, _key in tables.values():
            c.execute(ddl.encode())
            c.execute(fill.encode())
        c.execute("ANALYZE")
    yield fresh_db, tables


def _ctx(url: str, walk: str, reporter: Any = None) -> Context:
    ctx = make_context(url, settings_for(url), reporter)
    ctx.backfill_workers, ctx.backfill_order, ctx.batch_size = 2, walk, 50
    return ctx


def _action(table: str, key: Key, walk: str) -> str:
    """Counts every visit of a row. The key walk must meet each row once, so its action has no
    guard; the physical walk may meet a row its own update moved, so its action is a no-op on a
    done row, as the walker asks."""
    guard = " AND NOT t.done" if walk == "physical" else ""
    return f"UPDATE public.{table} t SET hits = t.hits + 1, done = true WHERE /*BATCH t*/{guard}"


def _hits(url: str, table: str) -> dict[int, int]:
    with psycopg.connect(url) as c:
        return dict(c.execute(f"SELECT hits, count(*) FROM public.{table} GROUP BY 1").fetchall())  # type: ignore[arg-type]


WALKS = ["key", "physical"]


@pytest.fixture(params=WALKS)
def walk(request: pytest.FixtureRequest, server_version: int) -> str:
    if request.param == "physical" and server_version < 140000:
        pytest.skip("the physical walk needs PostgreSQL 14+ (TID range scans)")
    return str(request.param)


def test_primary_key_reads_the_catalog(keyed_db: tuple[str, dict[str, tuple[str, str, Key]]]) -> None:
    url, tables = keyed_db
    with psycopg.connect(url, autocommit=True) as c:
        for table, (_ddl, _fill, key) in tables.items():
            assert primary_key(c, table) == key
        c.execute("CREATE TABLE public.pairs (a int, b int, PRIMARY KEY (a, b))")
        c.execute("CREATE TABLE public.heap (a int)")
        c.execute("CREATE TABLE public.covered (a int, b int, PRIMARY KEY (a) INCLUDE (b))")
        assert primary_key(c, "pairs") is None and primary_key(c, "heap") is None
        assert primary_key(c, "covered") == Key("a", "integer")
        assert primary_key(c, "public.posts") == Key("id", "bigint")


def test_a_key_takes_only_a_type_name_and_quotes_its_column() -> None:
    for sqltype in ("uuid", "bigint", "character varying(40)", "numeric(10, 2)", "timestamp(3) with time zone",
                    "public.isbn13", '"My Type"', "double precision"):
        Key("x", sqltype)
    for bad in ("uuid) OR (true", "uuid or true", "uuid; DROP TABLE t", "uuid[]--", "int4 AND false"):
        with pytest.raises(ValueError):
            Key("x", bad)
    assert Key('we"ird').ident == '"we""ird"' and Key().ident == "id"
    # The villager tables' SQL is what it was.
    assert bind("UPDATE public.p p SET x = 1 WHERE /*BATCH p*/", "key") == (
        "UPDATE public.p p SET x = 1 WHERE p.id BETWEEN %(lo)s::uuid AND %(hi)s::uuid"
        " AND p.id = ANY(%(ids)s::uuid[])")
    assert bind("WHERE /*BATCH b*/", "key", Key("Code", "character varying(40)")) == (
        'WHERE b."Code" BETWEEN %(lo)s::character varying(40) AND %(hi)s::character varying(40)'
        ' AND b."Code" = ANY(%(ids)s::character varying(40)[])')


@pytest.mark.parametrize("table", ["posts", "items", "books", "codes", "days"])
def test_key_ranges_cover_every_key_once(keyed_db: tuple[str, dict[str, tuple[str, str, Key]]], table: str) -> None:
    url, tables = keyed_db
    key = tables[table][2]
    with psycopg.connect(url, autocommit=True) as c:
        total = c.execute(f"SELECT count(*) FROM public.{table}").fetchone()[0]  # type: ignore[index]
        for parts in (1, 2, 3, 7):
            ranges = key_ranges(c, table, key, parts)
            assert 1 <= len(ranges) <= parts
            assert ranges[0].lo is None and ranges[-1].hi is None
            assert all(a.hi == b.lo for a, b in itertools.pairwise(ranges))
            counts = [c.execute(f"SELECT count(*) FROM public.{table} WHERE "
                                + key_bounds(key, None if r.lo is None else ">", r.hi is not None),
                                {"lo": r.lo, "hi": r.hi}).fetchone()[0] for r in ranges]  # type: ignore[index]
            assert sum(counts) == total, (parts, ranges, counts)
            if parts > 1:  # split, and not all in one part
                assert len(ranges) > 1 and max(counts) < total, (parts, counts)
        c.execute(f"TRUNCATE public.{table}")
        assert key_ranges(c, table, key, 4) == [KeyRange(None, None)]


@pytest.mark.parametrize("table", ["posts", "items", "books", "codes", "days"])
def test_every_row_is_walked_exactly_once(keyed_db: tuple[str, dict[str, tuple[str, str, Key]]], table: str,
                                          walk: str) -> None:
    url, tables = keyed_db
    key = tables[table][2]
    ctx = _ctx(url, walk)
    try:
        res = run_backfill(ctx, f"backfill_{table}", table, [_action(table, key, walk)], key=key)
    finally:
        ctx.conn.close()
    total = sum(_hits(url, table).values())
    assert _hits(url, table) == {1: total}
    assert res.rows == total and res.retried_rows == 0
    with psycopg.connect(url) as c:
        parts = c.execute("SELECT count(*), bool_and(finished_at IS NOT NULL), sum(rows_done), sum(rows_total)"
                          " FROM villager_migration.backfill WHERE step LIKE %s", (f"backfill_{table}#%",)).fetchone()
        assert parts == (2, True, total, total)


class _Stop(Exception):
    pass


class _StopAfter(SilentReporter):
    """Fails every progress report once `rows` rows are done: each part stops after its batch."""

    def __init__(self, rows: int) -> None:
        self.rows = rows

    def progress(self, name: str, done: int, total: int | None, rate: float) -> None:
        if done >= self.rows:
            raise _Stop("stop here")


@pytest.mark.parametrize("table", ["posts", "books"])
def test_an_interrupted_walk_resumes_over_the_ranges_it_started_with(
        keyed_db: tuple[str, dict[str, tuple[str, str, Key]]], table: str, walk: str) -> None:
    url, tables = keyed_db
    key = tables[table][2]
    total = sum(_hits(url, table).values())
    ctx = _ctx(url, walk, _StopAfter(300))
    try:
        with pytest.raises(_Stop):
            run_backfill(ctx, f"backfill_{table}", table, [_action(table, key, walk)], key=key)
    finally:
        ctx.conn.close()
    hits = _hits(url, table)
    assert set(hits) == {0, 1} and 300 <= hits[1] < total, hits
    query = ("SELECT step, walk, key_lo, key_hi, page_from, page_to, last_key FROM villager_migration.backfill"
             " WHERE step LIKE %s ORDER BY step")
    with psycopg.connect(url, autocommit=True) as c:
        before = c.execute(query, (f"backfill_{table}#%",)).fetchall()
        assert len(before) == 2 and {r[1] for r in before} == {walk}
        if walk == "key":
            assert all(r[6] is not None for r in before), before  # each part has a cursor
        # Many new keys at one end would split the table elsewhere now: the resumed run must not.
        # (New rows are the sync triggers' business; marked, they are left out of the count.)
        if table == "posts":
            c.execute("INSERT INTO public.posts (id, hits, done) SELECT g, -1000, true"
                      " FROM generate_series(100000, 103000) g")
        else:
            c.execute("INSERT INTO public.books (isbn, hits, done) SELECT '0' || g, -1000, true"
                      " FROM generate_series(1, 3000) g")
    ctx = _ctx(url, walk)
    try:
        run_backfill(ctx, f"backfill_{table}", table, [_action(table, key, walk)], key=key)
    finally:
        ctx.conn.close()
    with psycopg.connect(url) as c:
        after = c.execute(query, (f"backfill_{table}#%",)).fetchall()
        assert [r[:6] for r in after] == [r[:6] for r in before]
        done = c.execute(f"SELECT count(*) FILTER (WHERE hits = 1), count(*) FILTER (WHERE hits >= 0 AND hits <> 1)"
                         f" FROM public.{table}").fetchone()
    assert done == (total, 0), done  # the rows that were there, each once


@pytest.mark.parametrize("table", ["books", "items"])
def test_rows_held_by_another_transaction_are_retried(keyed_db: tuple[str, dict[str, tuple[str, str, Key]]],
                                                      table: str, walk: str) -> None:
    url, tables = keyed_db
    key = tables[table][2]
    c = key.ident
    holder = psycopg.connect(url)
    held = [str(r[0]) for r in holder.execute(
        f"SELECT {c}::text FROM public.{table} ORDER BY {c} DESC LIMIT 3 FOR UPDATE").fetchall()]
    held += [str(r[0]) for r in holder.execute(
        f"SELECT {c}::text FROM public.{table} WHERE {c} IN (SELECT {c} FROM public.{table} ORDER BY {c} OFFSET 400"
        f" LIMIT 2) FOR UPDATE").fetchall()]
    ctx = _ctx(url, walk)
    out: list[Any] = []

    def backfill() -> None:
        try:
            out.append(run_backfill(ctx, f"backfill_{table}", table, [_action(table, key, walk)], key=key))
        except BaseException as exc:  # handed to the test thread
            out.append(exc)

    runner = threading.Thread(target=backfill)
    runner.start()
    try:
        deadline = time.monotonic() + 60
        with psycopg.connect(url, autocommit=True) as watch:
            while True:  # until the walk is done but for the held rows, which wait to be retried
                waiting = sorted(str(r[0]) for r in watch.execute(
                    "SELECT row_id FROM villager_migration.backfill_retry WHERE step LIKE %s",
                    (f"backfill_{table}#%",)))
                if (waiting == sorted(held) and _hits(url, table).get(0) == len(held)) or out \
                        or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            typ = watch.execute("SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attname = 'row_id'"
                                " AND attrelid = 'villager_migration.backfill_retry'::regclass").fetchone()
        assert waiting == sorted(held) and typ == ("text",), (waiting, held, out)
        assert _hits(url, table).get(0) == len(held)  # nothing else is left
    finally:
        holder.commit()
        holder.close()
        runner.join(120)
        ctx.conn.close()
    assert len(out) == 1 and not isinstance(out[0], BaseException), out
    assert out[0].retried_rows == len(held)
    total = sum(_hits(url, table).values())
    assert _hits(url, table) == {1: total}
    with psycopg.connect(url) as watch:
        assert watch.execute("SELECT count(*) FROM villager_migration.backfill_retry").fetchone() == (0,)


def test_state_of_an_older_version_is_upgraded_in_place(fresh_db: str) -> None:
    """backfill_retry.row_id was uuid: state.sql (run by every `migrate run`) makes it text, keeping
    its rows, and a part's cursor written as last_id is still read."""
    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute("CREATE SCHEMA villager_migration")
        c.execute("CREATE TABLE villager_migration.backfill_retry (step text NOT NULL, row_id uuid NOT NULL,"
                  " PRIMARY KEY (step, row_id))")
        c.execute("INSERT INTO villager_migration.backfill_retry VALUES ('s#0', '00000000-0000-4000-8000-000000000001')")
        for _ in range(2):
            c.execute(section("state.sql", "state").encode())
        assert c.execute("SELECT row_id, pg_typeof(row_id)::text FROM villager_migration.backfill_retry").fetchall() == [
            ("00000000-0000-4000-8000-000000000001", "text")]
        assert c.execute("SELECT count(*) FROM pg_attribute WHERE attrelid = 'villager_migration.backfill'::regclass"
                         " AND attname IN ('last_id', 'last_key', 'key_lo', 'key_hi')").fetchone() == (4,)
