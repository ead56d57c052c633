"""A plan written the way an outside user would, for a schema none of the shipped plans knows: a
warehouse with bigint identity keys (GENERATED ALWAYS) and a text key, messy free text (blanks,
case, NFKC variants, zero-width and no-break spaces), a lookup fed by columns of two tables (one of
them also copied and swapped in by a link), a split moving a numeric, a nullable text and an
integer with a default and a CHECK, two quarantine rules on one table, a guard, foreign keys to a
bigint and to a text key, partial indexes, columns named `name`, `type`, `status`, and the
operations in an odd file order. Old and new applications write through the run (killed once
and resumed); verify holds and an independent check in Python agrees; rollback gives the legacy
tables back exactly; complete leaves consistent data.

Then the plausible mistakes: each is refused by `migrate plan` (exit 2, one line per problem,
placed in the file, no traceback, nothing changed) or handled."""

from __future__ import annotations

import random
import re
import unicodedata
from pathlib import Path
from typing import Any

import psycopg

from tests.helpers import rows, run_cli, run_killed_once, scalar
from tests.migration.planfile.test_unseen_schema import CONSTRAINTS, SHAPE, Writers

SCHEMA = """
CREATE TABLE warehouses (code text PRIMARY KEY, name text NOT NULL, region text, status text NOT NULL DEFAULT 'open');
CREATE TABLE items (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name text NOT NULL, type text, vendor text, region text,
  unit_cost numeric(12,3), bin_note text, reorder_level integer NOT NULL DEFAULT 5 CHECK (reorder_level >= 0),
  status text);
CREATE TABLE stock_moves (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, item_id bigint REFERENCES items (id) ON DELETE CASCADE,
  warehouse_code text REFERENCES warehouses (code) ON UPDATE CASCADE, qty integer NOT NULL, type text, vendor text,
  moved_at timestamptz NOT NULL DEFAULT '2024-01-01');
CREATE TABLE bins (id bigserial PRIMARY KEY, warehouse_code text NOT NULL, item_id bigint, label text);
CREATE INDEX bins_label_idx ON bins (label);
INSERT INTO warehouses SELECT 'WH-' || i, 'Warehouse ' || i,
  (ARRAY['Nord', ' nord', 'NORD ', 'Ｎｏｒｄ', 'Süd', 'su' || chr(776) || 'd', '', NULL, '   ',
         'Ost' || chr(160) || 'Mitte'])[1 + i % 10],
  (ARRAY['open', 'closed', 'open '])[1 + i % 3]
  FROM generate_series(1, 60) i;
INSERT INTO items (name, type, vendor, region, unit_cost, bin_note, reorder_level, status)
SELECT 'Item ' || i, (ARRAY['tool', 'part', NULL, ''])[1 + i % 4],
  (ARRAY['ACME', 'acme ', ' Acme', 'ＡＣＭＥ', 'Globex', 'glo' || chr(8203) || 'bex', '', NULL, '  ', 'Ｉｎｉｔｅｃｈ',
         'ﬁnest goods', 'Finest' || chr(133) || 'Goods'])[1 + i % 12],
  (ARRAY['Nord', 'nord', 'Süd', 'Ost Mitte', NULL, 'West'])[1 + i % 6],
  CASE WHEN i % 37 = 0 THEN -1.5 WHEN i % 9 = 0 THEN NULL ELSE (i % 500) + 0.125 END,
  CASE WHEN i % 3 = 0 THEN NULL WHEN i % 3 = 1 THEN '' ELSE ' shelf ' || i % 20 || ' ' END,
  i % 40, (ARRAY['active', 'discontinued', NULL])[1 + i % 3]
  FROM generate_series(1, 1500) i;
INSERT INTO stock_moves (item_id, warehouse_code, qty, type, vendor)
SELECT CASE WHEN i % 13 = 0 THEN NULL ELSE 1 + i % 1500 END, 'WH-' || (1 + i % 60),
  CASE WHEN i % 29 = 0 THEN 0 ELSE 1 + i % 9 END, (ARRAY['in', 'out', 'adjust', NULL])[1 + i % 4],
  (ARRAY['acme', 'GLOBEX', ' globex ', NULL, '', 'New' || chr(160) || 'Vendor'])[1 + i % 6]
  FROM generate_series(1, 4000) i;
INSERT INTO bins (warehouse_code, item_id, label)
SELECT 'WH-' || (1 + i % 60), CASE WHEN i % 5 = 0 THEN NULL ELSE 1 + i % 1500 END, 'bin ' || i
  FROM generate_series(1, 800) i;
"""

# Odd order: indexes, rules and keys first, the split after its quarantine, the lookups last, an
# index on the split's child at the very end.
PLAN = """
#:schema ./plan.schema.json
version = 1
name = "warehouse"

[[operation]]
type = "create_index"
table = "stock_moves"
name = "idx_moves_out_by_wh"
columns = ["warehouse_code", "moved_at DESC NULLS LAST"]
where = "type = 'out' AND qty <> 0"

[[operation]]
type = "quarantine_rule"
table = "items"
reason = "negative_cost"
when = "unit_cost < 0"

[[operation]]
type = "quarantine_rule"
table = "stock_moves"
reason = "zero_qty"
when = "qty = 0"

[[operation]]
type = "add_check"
table = "stock_moves"
name = "chk_moves_qty_nonzero"
check = "qty <> 0"

[[operation]]
type = "quarantine_rule"
table = "items"
reason = "untyped"
when = "status = 'discontinued' AND nullif(btrim(type), '') IS NULL"

[[operation]]
type = "add_foreign_key"
table = "bins"
name = "fk_bins_item"
columns = ["item_id"]
references = "items"
on_delete = "set null"

[[operation]]
type = "split_child"
parent = "items"
child = "item_stock"
columns = { unit_cost = "cost", bin_note = "bin_note", reorder_level = "reorder_level" }
fk = "item_id"

[[operation]]
type = "link_child_reference"
table = "stock_moves"
reference = "item_id"
child = "item_stock"
fk = "item_stock_id"

[[operation]]
type = "extract_lookup"
lookup = "vendors"
column = "name"
key = "casefold"
slug = "slug"
sources = [
  { table = "items", column = "vendor", fk = "vendor_id" },
  { table = "stock_moves", column = "vendor", fk = "vendor_id" },
]

[[operation]]
type = "extract_lookup"
lookup = "regions"
key = "casefold"
sources = [{ table = "warehouses", column = "region" }, { table = "items", column = "region" }]

[[operation]]
type = "add_foreign_key"
table = "bins"
name = "fk_bins_warehouse"
columns = ["warehouse_code"]
references = "warehouses"
on_delete = "CASCADE"

[[operation]]
type = "create_index"
table = "item_stock"
name = "idx_item_stock_low"
columns = ["reorder_level"]
where = "bin_note IS NOT NULL AND is_default"
"""

LEGACY_COLUMNS = {
    "warehouses": "code, name, region, status",
    "items": "id, name, type, vendor, region, unit_cost, bin_note, reorder_level, status",
    "stock_moves": "id, item_id, warehouse_code, qty, type, vendor, moved_at",
    "bins": "id, warehouse_code, item_id, label",
}
LEGACY = "SELECT md5(string_agg(x, ',' ORDER BY x)) FROM (" + " UNION ALL ".join(
    f"SELECT '{t}' || row({c})::text x FROM {t}" for t, c in LEGACY_COLUMNS.items()) + ") s"
INDEXES = """
SELECT indexrelid::regclass::text, pg_get_indexdef(indexrelid) FROM pg_index
 WHERE indrelid IN (SELECT oid FROM pg_class WHERE relnamespace = 'public'::regnamespace) ORDER BY 1
"""
TRIGGERS = "SELECT tgrelid::regclass::text, tgname FROM pg_trigger WHERE NOT tgisinternal ORDER BY 1, 2"


def casefold_key(raw: str | None) -> str | None:
    """The `casefold` key, written apart from the engine: zero-width characters out, NFKC, runs of
    whitespace (NBSP and NEL too) to one space, trimmed, lower case; blank is no value."""
    if raw is None:
        return None
    s = unicodedata.normalize("NFKC", re.sub("[\u200b-\u200d\u2060\ufeff]", "", raw))
    s = re.sub(r"[\s\u0085\u00a0]+", " ", s).strip()
    return s.lower() or None


def independent_disagreements(url: str) -> list[str]:
    """What the migrated data must be, checked in Python, not with the engine's SQL."""
    bad: list[str] = []
    with psycopg.connect(url) as c:
        for table, key, column, fk, lookup in (("warehouses", "code", "region", "regions_id", "regions"),
                                               ("items", "id", "region", "regions_id", "regions"),
                                               ("items", "id", "vendor", "vendor_id", "vendors"),
                                               ("stock_moves", "id", "vendor", "vendor_id", "vendors")):
            for k, raw, name_key in c.execute(
                    f"SELECT t.{key}, t.{column}, l.name_key FROM {table} t LEFT JOIN {lookup} l ON l.id = t.{fk}"):
                if casefold_key(raw) != name_key:
                    bad.append(f"{table} {k}: {column} {raw!r} -> {name_key!r}")
        for k, parent, child in c.execute(
                "SELECT i.id, (i.unit_cost, i.bin_note, i.reorder_level::bigint)::text,"
                " (s.cost, s.bin_note, s.reorder_level)::text"
                " FROM items i LEFT JOIN item_stock s ON s.item_id = i.id AND s.is_default"):
            if parent != child:
                bad.append(f"items {k}: {parent} / default item_stock {child}")
        for k, ref, via in c.execute("SELECT m.id, m.item_id, s.item_id FROM stock_moves m"
                                     " LEFT JOIN item_stock s ON s.id = m.item_stock_id"):
            if ref != via:
                bad.append(f"stock_moves {k}: item_id {ref}, through item_stock_id {via}")
    return bad


MESSY = ["ACME", " acme", "ＡＣＭＥ", "Umbrella\u00a0Corp", "umbrella  corp ", "", "  ", None, "glo\u200bbex", "Wayne"]


class WarehouseWriters(Writers):
    """The old application writes the legacy columns (messy text, moved columns, references,
    keys renamed through ON UPDATE CASCADE, deletes); the new one writes the default child (parent
    locked first, as docs/plans.md asks), the references, and inserts parents and moves through
    the new columns alone."""

    def _old(self, seed: int) -> None:
        r, n, mine = random.Random(seed), [0], []

        def step(c: psycopg.Connection[Any]) -> None:
            n[0] += 1
            k = r.randrange(8)
            if k == 0:
                code = f"W{seed}-{n[0]}"
                c.execute("INSERT INTO warehouses (code, name, region) VALUES (%s, 'w', %s)", (code, r.choice(MESSY)))
                c.execute("INSERT INTO stock_moves (item_id, warehouse_code, qty, vendor) VALUES (%s, %s, 3, %s)",
                          (r.randint(1, 1500), code, r.choice(MESSY)))
                c.execute("UPDATE warehouses SET code = code || 'r' WHERE code = %s", (code,))  # cascades
            elif k == 1:
                c.execute("UPDATE warehouses SET region = %s WHERE code = %s", (r.choice(MESSY), f"WH-{r.randint(1, 60)}"))
            elif k == 2:
                row = c.execute(
                    "INSERT INTO items (name, type, vendor, region, unit_cost, bin_note, reorder_level, status)"
                    " VALUES ('new', %s, %s, %s, %s, %s, %s, 'active') RETURNING id",
                    (r.choice(["tool", None, ""]), r.choice(MESSY), r.choice(MESSY), r.choice([None, 3.5, -2]),
                     r.choice([None, "", " top "]), r.randint(0, 9))).fetchone()
                assert row is not None
                mine.append(row[0])
                c.execute("INSERT INTO stock_moves (item_id, warehouse_code, qty, type) VALUES (%s, 'WH-1', 2, 'in')",
                          (row[0],))
            elif k == 3:
                c.execute("UPDATE items SET unit_cost = %s, bin_note = %s, vendor = %s WHERE id = %s",
                          (r.choice([round(r.uniform(0, 99), 3), None, -4]), r.choice([None, "", "x"]),
                           r.choice(MESSY), r.randint(1, 1500)))
            elif k == 4:
                c.execute("UPDATE items SET reorder_level = reorder_level + 1, region = %s WHERE id = %s",
                          (r.choice(MESSY), r.randint(1, 1500)))
            elif k == 5:
                c.execute("UPDATE stock_moves SET item_id = %s, vendor = %s WHERE id = %s",
                          (r.choice([None, r.randint(1, 1500)]), r.choice(MESSY), r.randint(1, 4000)))
            elif k == 6:
                c.execute("DELETE FROM stock_moves WHERE id = %s", (r.randint(1, 4000),))
            elif mine:  # items only this writer made (no bin points at them): their moves go along
                c.execute("DELETE FROM items WHERE id = %s", (mine.pop(0),))

        self._loop(step)

    def _new(self) -> None:
        r = random.Random(11)

        def step(c: psycopg.Connection[Any]) -> None:
            ready = c.execute("SELECT to_regclass('public.item_stock') IS NOT NULL AND to_regclass('public.vendors')"
                              " IS NOT NULL AND (SELECT count(*) = 2 FROM information_schema.columns"
                              "  WHERE table_name IN ('items', 'stock_moves') AND column_name = 'vendor_id')"
                              " AND EXISTS (SELECT FROM information_schema.columns"
                              "  WHERE table_name = 'stock_moves' AND column_name = 'item_stock_id')").fetchone()
            if ready != (True,):
                return
            k, item = r.randrange(4), r.randint(1, 1500)
            if k == 0:
                with c.transaction():
                    c.execute("SELECT FROM items WHERE id = %s FOR NO KEY UPDATE", (item,))
                    c.execute("UPDATE item_stock SET cost = %s, reorder_level = %s WHERE item_id = %s AND is_default",
                              (round(r.uniform(1, 50), 3), r.randint(0, 30), item))
            elif k == 1:
                c.execute("INSERT INTO stock_moves (item_stock_id, warehouse_code, qty, type)"
                          " SELECT id, 'WH-2', 5, 'out' FROM item_stock WHERE item_id = %s AND is_default", (item,))
            elif k == 2:
                c.execute("UPDATE items SET vendor_id = (SELECT id FROM vendors ORDER BY random() LIMIT 1) WHERE id = %s",
                          (item,))
            else:  # a parent through the new columns alone: the legacy ones take their defaults
                c.execute("INSERT INTO items (name, type, vendor_id) SELECT 'by new app', 'part', id FROM vendors"
                          " ORDER BY random() LIMIT 1")

        self._loop(step)


def test_a_warehouse_plan_under_both_applications(fresh_db: str, tmp_path: Path) -> None:
    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute(SCHEMA)
    plan = tmp_path / "warehouse.toml"
    plan.write_text(PLAN)
    before = [rows(fresh_db, q) for q in (SHAPE, CONSTRAINTS, INDEXES, TRIGGERS)]
    res = run_cli("migrate", "plan", "--plan", str(plan), database_url=fresh_db)
    assert res.returncode == 0, res.stderr

    def backfilling() -> bool:
        return bool(scalar(fresh_db, "SELECT to_regclass('villager_migration.backfill') IS NOT NULL")) and bool(
            scalar(fresh_db, "SELECT coalesce(sum(rows_done), 0) FROM villager_migration.backfill"))

    with WarehouseWriters(fresh_db) as writers:
        res = run_killed_once(fresh_db, ["migrate", "run", "--plan", str(plan)], backfilling,
                              VILLAGER_BATCH_SIZE="150", VILLAGER_BACKFILL_WORKERS="1")
        assert res.returncode == 0, res.stderr[-2000:]
    assert writers.errors == [] and writers.writes > 100, writers.errors[:5]

    res = run_cli("migrate", "verify", database_url=fresh_db)
    assert res.returncode == 0, res.stdout[-3000:]
    assert independent_disagreements(fresh_db) == []
    # The stored spellings: one row per key, named after the first spelling met; blanks have none.
    assert scalar(fresh_db, "SELECT count(*) FROM vendors WHERE name_key IN ('acme', 'globex', 'initech')") == 3
    assert scalar(fresh_db, "SELECT count(*) FROM vendors WHERE btrim(name) = '' OR name <> btrim(name)") == 0
    assert scalar(fresh_db, "SELECT value ->> 'method' FROM villager_migration.state WHERE key = 'rebuild:stock_moves'") \
        == "rebuild"
    # Both quarantine rules of items hold, each row under its own reason; the guard stays a guard.
    assert set(r[0] for r in rows(fresh_db, "SELECT DISTINCT reason FROM villager_migration.plan_quarantine"
                                            " WHERE table_name = 'items'")) == {"negative_cost", "untyped"}
    assert scalar(fresh_db, "SELECT tgname FROM pg_trigger WHERE tgname = 'chk_moves_qty_nonzero'") is not None

    # A rename of a lookup row reaches the text of every row that uses it; verify still holds.
    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute("UPDATE vendors SET name = 'ACME Corporation' WHERE name_key = 'acme'")
        assert c.execute("SELECT count(*) FROM items WHERE vendor = 'ACME Corporation'").fetchone() != (0,)
    assert run_cli("migrate", "verify", database_url=fresh_db).returncode == 0
    assert independent_disagreements(fresh_db) == []

    # Rollback: the legacy tables exactly as the applications left them.
    legacy = scalar(fresh_db, LEGACY)
    res = run_cli("migrate", "rollback", "--yes", database_url=fresh_db)
    assert res.returncode == 0, res.stderr
    assert scalar(fresh_db, LEGACY) == legacy
    assert [rows(fresh_db, q) for q in (SHAPE, CONSTRAINTS, INDEXES, TRIGGERS)] == before

    # Again, to the end: complete drops the moved and extracted columns; the data stays consistent.
    assert run_cli("migrate", "run", "--plan", str(plan), database_url=fresh_db).returncode == 0
    res = run_cli("migrate", "complete", "--yes", "--no-reader-check", database_url=fresh_db)
    assert res.returncode == 0, res.stderr
    assert run_cli("migrate", "verify", database_url=fresh_db).returncode == 0
    assert scalar(fresh_db, "SELECT count(*) FROM items i WHERE NOT EXISTS (SELECT FROM item_stock s"
                            " WHERE s.item_id = i.id AND s.is_default)") == 0
    assert scalar(fresh_db, "SELECT count(*) FROM stock_moves m JOIN item_stock s ON s.id = m.item_stock_id"
                            " WHERE s.item_id IS DISTINCT FROM m.item_id") == 0
    with psycopg.connect(fresh_db, autocommit=True) as c:
        try:
            c.execute("UPDATE item_stock SET reorder_level = -1 WHERE item_id = 1")
            raise AssertionError("the carried CHECK did not hold")
        except psycopg.errors.CheckViolation:
            pass
        # The new application alone: a new item, its default stock row, a move through it.
        item = c.execute("INSERT INTO items (name) VALUES ('after') RETURNING id").fetchone()
        assert item is not None
        c.execute("INSERT INTO item_stock (item_id, cost, reorder_level, is_default) VALUES (%s, 1, 2, true)", item)
        c.execute("INSERT INTO stock_moves (item_id, item_stock_id, warehouse_code, qty)"
                  " SELECT item_id, id, 'WH-1', 1 FROM item_stock WHERE item_id = %s", item)


# --- plausible mistakes: refused by `migrate plan` (exit 2), one line per problem, nothing changed ---

EDGE = """
CREATE TABLE items (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name text NOT NULL, type text, attrs json,
  price numeric(10,2), spot point, vendor text);
CREATE TABLE usages (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, item_id bigint, note text);
CREATE TABLE bins (id bigserial PRIMARY KEY, item_id bigint, label text);
CREATE TABLE visits (id bigserial PRIMARY KEY, item_id bigint, at timestamptz NOT NULL DEFAULT now());
CREATE INDEX idx_bins_item_id ON bins (item_id, label);
CREATE TABLE lines (order_no bigint, line_no int, note text, PRIMARY KEY (order_no, line_no));
CREATE TABLE audit_log (at timestamptz, actor text);
CREATE TABLE shipments (id bigint PRIMARY KEY, carrier text) PARTITION BY RANGE (id);
CREATE TABLE shipments_p1 PARTITION OF shipments FOR VALUES FROM (0) TO (1000);
CREATE TABLE readings (id bigint PRIMARY KEY, sensor text);
CREATE TABLE readings_archive (archived_at timestamptz) INHERITS (readings);
CREATE TABLE "Suppliers" (id bigint PRIMARY KEY, country text);
CREATE FUNCTION public.vendor_key(t text) RETURNS text LANGUAGE plpgsql AS $$ BEGIN RETURN lower(t); END $$;
INSERT INTO items (name, price, attrs) SELECT 'i' || i, i, '{}' FROM generate_series(1, 20) i;
INSERT INTO usages (item_id) SELECT 1 + i % 25 FROM generate_series(1, 50) i;
INSERT INTO shipments VALUES (1, 'DHL');
INSERT INTO readings_archive VALUES (2, ' t1', now());
"""
FINGERPRINT = [SHAPE, CONSTRAINTS, INDEXES, TRIGGERS,
               "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'villager%' ORDER BY 1",
               "SELECT md5(string_agg(row(i.*)::text, ',' ORDER BY id)) FROM items i"]


def problems_of(res: Any, path: Path) -> list[str]:
    """The problems `migrate plan` printed (one line each, the file's path first), after checking
    that it refused as it should: exit 2, a last line saying nothing changed, no traceback."""
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr and "internal error" not in res.stderr, res.stderr
    assert lines[-1].startswith(f"error: plan {path}: ") and lines[-1].endswith("nothing was changed"), lines[-1]
    assert all(line.startswith(f"{path}: ") for line in lines[:-1]), lines
    return [line.removeprefix(f"{path}: ") for line in lines[:-1]]


def test_plausible_mistakes_are_refused_before_anything_changes(fresh_db: str, tmp_path: Path) -> None:
    from tests.migration.planfile.test_check import assert_problems, plan

    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute(EDGE)
    before = [rows(fresh_db, q) for q in FINGERPRINT]
    bad = tmp_path / "mistakes.toml"
    bad.write_text(plan(
        'type = "quarantine_rule"\ntable = "lines"\nreason = "blank"\nwhen = "note = \'\'"',
        'type = "create_index"\ntable = "audit_log"\nname = "idx_audit_actor"\ncolumns = ["actor"]',
        'type = "extract_lookup"\nlookup = "carriers"\nsources = [{ table = "shipments", column = "carrier" }]',
        'type = "extract_lookup"\nlookup = "carriers1"\nsources = [{ table = "shipments_p1", column = "carrier" }]',
        'type = "extract_lookup"\nlookup = "sensors"\nsources = [{ table = "readings", column = "sensor" }]',
        'type = "split_child"\nparent = "items"\nchild = "item_specs"\ncolumns = ["attrs", "price", "spot"]\nfk = "item_id"',
        'type = "link_child_reference"\ntable = "usages"\nreference = "item_id"\nchild = "item_specs"\nfk = "item_spec_id"',
        'type = "add_check"\ntable = "items"\nname = "chk_items_price"\ncheck = "price >= 0"',
        'type = "create_index"\ntable = "items"\nname = "idx_items_price"\ncolumns = ["type"]\nwhere = "price > 0"',
        'type = "quarantine_rule"\ntable = "items"\nreason = "bad"\nwhen = "price < 0"',
        'type = "quarantine_rule"\ntable = "items"\nreason = "bad"\nwhen = "btrim(name) = \'\'"',
        'type = "create_index"\ntable = "usages"\nname = "idx_usages_item_spec_id"\ncolumns = ["note"]',
        'type = "add_foreign_key"\ntable = "bins"\nname = "fk_bins_item"\ncolumns = ["item_id"]\nreferences = "items"',
        'type = "extract_lookup"\nlookup = "vendors"\nkey = "public.vendor_key"\nsources = [{ table = "items", column = "vendor" }]',
        name="mistakes"))
    res = run_cli("migrate", "plan", "--plan", str(bad), database_url=fresh_db)
    assert_problems(
        problems_of(res, bad),
        ("operation 1 (quarantine_rule, line 5), table", "table lines has a primary key of 2 columns"),
        ("operation 2 (create_index, line 11), table", "table audit_log has no primary key"),
        ("operation 3 (extract_lookup, line 17), sources[0].table", "public.shipments is a partitioned table"),
        ("operation 4 (extract_lookup, line 22), sources[0].table",
         "table shipments_p1 is a partition of shipments; the plan works on ordinary tables outside partitioning"),
        ("operation 5 (extract_lookup, line 27), sources[0].table",
         "table readings has inheritance children (readings_archive)"),
        ("operation 6 (split_child, line 32), columns[0]", "items.attrs is json, a type without an equality operator"),
        ("operation 6 (split_child, line 32), columns[2]", "items.spot is point, a type without an equality operator"),
        ("operation 8 (add_check, line 46), check", "uses items.price, which operation 6 (split_child, line 32),"
                                                    " columns[1] moves away: `complete` drops the column and this check"),
        ("operation 9 (create_index, line 52), columns", "uses items.price, which operation 6"),
        ("operation 11 (quarantine_rule, line 65), reason",
         "operation 10 (quarantine_rule, line 59) quarantines items rows as bad too"),
        ("operation 12 (create_index, line 71), name", "operation 7 creates an index named idx_usages_item_spec_id too"),
        ("operation 13 (add_foreign_key, line 77), columns",
         "the index this operation builds on bins (item_id): public.idx_bins_item_id already exists (an index)"),
        ("operation 14 (extract_lookup, line 84), key", "public.vendor_key is not declared IMMUTABLE"),
    )
    # `migrate run` checks the same way, and changes nothing either.
    res = run_cli("migrate", "run", "--plan", str(bad), database_url=fresh_db)
    assert len(problems_of(res, bad)) == 13

    # Names a plan cannot write unquoted: refused by shape alone, each on its own line.
    names = tmp_path / "names.toml"
    names.write_text(plan('type = "extract_lookup"\nlookup = "countries"\nsources = [{ table = "Suppliers", column = "country" }]',
                          'type = "split_child"\nparent = "items"\nchild = "order"\ncolumns = ["price"]', name="names"))
    res = run_cli("migrate", "plan", "--plan", str(names), database_url=fresh_db)
    assert_problems(problems_of(res, names),
                    ("operation 1 (extract_lookup, line 5), sources[0], table", "'Suppliers' is not a plain lower-case SQL name"),
                    ("operation 2 (split_child, line 10), child", "'order' is a reserved SQL word"))
    assert [rows(fresh_db, q) for q in FINGERPRINT] == before


# --- handled: what looked like a mistake but is not ---------------------------------------------

HANDLED = """
CREATE TABLE items (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name text NOT NULL, type text, status text,
  price numeric(10,2), "order" int, "Mixed Case" text);
CREATE TABLE usages (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, item_id bigint, "user" text, note text);
CREATE TABLE bins (id bigserial PRIMARY KEY, item_id bigint, label text);
CREATE TABLE visits (id bigserial PRIMARY KEY, item_id bigint, at timestamptz NOT NULL DEFAULT now());
CREATE INDEX idx_bins_item_id ON bins (item_id);
INSERT INTO items (name, type, status, price, "order", "Mixed Case")
  SELECT 'i' || i, (ARRAY['Tool', ' tool', 'TOOL', NULL])[1 + i % 4], 'ok', i, i, 'X' FROM generate_series(1, 200) i;
INSERT INTO usages (item_id, "user") SELECT 1 + i % 200, 'u' FROM generate_series(1, 600) i;
INSERT INTO bins (item_id, label) SELECT 1 + i % 200, 'b' FROM generate_series(1, 100) i;
INSERT INTO visits (item_id) SELECT CASE WHEN i % 10 = 0 THEN 1000 + i ELSE 1 + i % 200 END FROM generate_series(1, 300) i;
"""

HANDLED_PLAN = """
version = 1
name = "handled"

[[operation]]
type = "extract_lookup"
lookup = "kinds"
column = "type"
key = "casefold"
sources = [{ table = "items", column = "type", fk = "kind_id" }]

[[operation]]
type = "split_child"
parent = "items"
child = "prices"
columns = { price = "value", status = "status" }

[[operation]]
type = "link_child_reference"
table = "usages"
reference = "item_id"
child = "prices"
fk = "price_id"

[[operation]]
type = "link_child_reference"
table = "visits"
reference = "item_id"
child = "prices"
fk = "price_id"

[[operation]]
type = "add_foreign_key"
table = "usages"
name = "fk_usages_item"
columns = ["item_id"]
references = "items"
on_delete = "CASCADE"

[[operation]]
type = "add_foreign_key"
table = "bins"
name = "fk_bins_item"
columns = ["item_id"]
references = "items"
on_delete = "SET NULL"
"""


def test_a_soft_reference_keyed_by_the_plan_and_an_index_already_there(fresh_db: str, tmp_path: Path) -> None:
    """A link whose reference has no foreign key yet is accepted, whether the plan adds one or not
    (the old application can still delete a parent, and name one that does not exist: the link lets
    go, or stays NULL); an index the table already has, named as the foreign
    key's own, serves it and is still there after rollback; columns named name, type, status,
    "order", "Mixed Case" and "user" go along."""
    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute(HANDLED)
    before = [rows(fresh_db, q) for q in (SHAPE, CONSTRAINTS, INDEXES, TRIGGERS)]
    path = tmp_path / "handled.toml"
    path.write_text(HANDLED_PLAN)
    res = run_cli("migrate", "run", "--plan", str(path), database_url=fresh_db)
    assert res.returncode == 0, res.stderr[-2000:]
    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute("DELETE FROM items WHERE id = 7")  # the old application: its usages go, its bins let go
        c.execute("UPDATE items SET type = ' TOOL ', price = 1.5, \"order\" = 0 WHERE id = 8")
        c.execute("INSERT INTO usages (item_id, \"user\") VALUES (9, 'v')")
        c.execute("INSERT INTO visits (item_id) VALUES (9), (54321)")
    # 30 name no item, 2 named item 7, 1 names none
    assert scalar(fresh_db, "SELECT count(*) FROM visits WHERE price_id IS NULL") == 30 + 2 + 1
    assert scalar(fresh_db, "SELECT count(*) FROM visits v JOIN prices p ON p.id = v.price_id"
                            " WHERE p.items_id = v.item_id AND p.is_default") == 300 - 30 - 2 + 1
    assert run_cli("migrate", "verify", database_url=fresh_db).returncode == 0
    assert scalar(fresh_db, "SELECT count(*) FROM kinds") == 1
    legacy = scalar(fresh_db, "SELECT md5(string_agg(row(id, name, type, status, price, \"order\", \"Mixed Case\")::text,"
                              " ',' ORDER BY id)) FROM items")
    assert run_cli("migrate", "rollback", "--yes", database_url=fresh_db).returncode == 0
    assert [rows(fresh_db, q) for q in (SHAPE, CONSTRAINTS, INDEXES, TRIGGERS)] == before
    assert scalar(fresh_db, "SELECT md5(string_agg(row(i.*)::text, ',' ORDER BY id)) FROM items i") == legacy
