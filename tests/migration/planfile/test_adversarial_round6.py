"""Source columns of the shapes an outside schema has (NOT NULL with a default, varchar(n)), written
by the new application through the references alone, run through verify and rollback."""

from __future__ import annotations

import contextlib
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg

from tests.helpers import rows, run_cli, scalar
from tests.migration.planfile.test_adversarial_round3 import _exists, killed_when
from tests.migration.planfile.test_unseen_schema import Writers
from tests.plans import migrate_by_plan

ITEMS = """
CREATE TABLE items (id serial PRIMARY KEY, tag varchar(8) NOT NULL DEFAULT 'none', qty int);
INSERT INTO items (tag, qty) SELECT (ARRAY['red', 'Blue ', 'none'])[1 + i % 3], i FROM generate_series(1, 30) i;
"""

ITEMS_PLAN = """
version = 1
name = "tags"

[[operation]]
type = "extract_lookup"
lookup = "tags"
key = "casefold"
sources = [{ table = "items", column = "tag", fk = "tag_id" }]
"""


def test_a_cleared_reference_blanks_a_not_null_text(fresh_db: str, tmp_path: Path) -> None:
    """The new application clears the reference of a row whose legacy text is NOT NULL: the text
    becomes blank (no lookup row, as the reference says) instead of the write failing on NULL."""
    migrate_by_plan(fresh_db, tmp_path, ITEMS, ITEMS_PLAN)
    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute("UPDATE items SET tag_id = NULL WHERE id IN (1, 2)")
        c.execute("UPDATE items SET tag_id = (SELECT id FROM tags WHERE name_key = 'red') WHERE id = 2")
    assert rows(fresh_db, "SELECT id, tag, tag_id IS NULL FROM items WHERE id IN (1, 2) ORDER BY id") == [
        (1, "", True), (2, "red", False)]
    res = run_cli("migrate", "verify", database_url=fresh_db)
    assert res.returncode == 0, res.stdout[-2000:]
    res = run_cli("migrate", "rollback", "--yes", database_url=fresh_db)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert scalar(fresh_db, "SELECT tag FROM items WHERE id = 1") == ""


PERCENT = """
CREATE TABLE shops (id bigserial PRIMARY KEY, rank int NOT NULL, code text, price numeric(8, 2));
INSERT INTO shops (rank, code, price) SELECT i, (ARRAY['A-1', 'B-2', 'A-3'])[1 + i % 3], i FROM generate_series(1, 40) i;
"""

PERCENT_PLAN = """
version = 1
name = "percent"

[[operation]]
type = "split_child"
parent = "shops"
child = "offers"
columns = ["price"]
fk = "shop_id"
when = "rank % 5 <> 0 AND code NOT LIKE 'B%'"

[[operation]]
type = "quarantine_rule"
table = "shops"
reason = "no_offer"
when = "rank % 5 = 0 OR code LIKE 'B%'"
"""


def test_a_condition_with_a_percent_sign_is_walked_as_sql(fresh_db: str, tmp_path: Path) -> None:
    """A plan's condition may use `%` (modulo, a LIKE pattern): the backfill runs it as SQL, not as a
    query parameter placeholder."""
    migrate_by_plan(fresh_db, tmp_path, PERCENT, PERCENT_PLAN)
    res = run_cli("migrate", "verify", database_url=fresh_db)
    assert res.returncode == 0, res.stdout[-2000:]
    assert scalar(fresh_db, "SELECT count(*) FROM offers") == scalar(
        fresh_db, "SELECT count(*) FROM shops WHERE rank % 5 <> 0 AND code NOT LIKE 'B%'") == 21
    assert scalar(fresh_db, "SELECT count(*) FROM villager_migration.plan_quarantine") == 19



def _linted(url: str, tmp_path: Path, schema: str, plan_text: str) -> Path:
    """The plan's `migrate plan --sql`, which squawk lints clean."""
    with psycopg.connect(url, autocommit=True) as c:
        c.execute(schema.encode())
    plan = tmp_path / "plan.toml"
    plan.write_text(plan_text)
    _lint(url, tmp_path, plan)
    return plan


def _lint(url: str, tmp_path: Path, plan: Path) -> None:
    res = run_cli("migrate", "plan", "--plan", str(plan), "--sql", database_url=url)
    assert res.returncode == 0, res.stderr[-3000:]
    script = tmp_path / "plan.sql"
    script.write_text(res.stdout)
    squawk = shutil.which("squawk") or str(Path(sys.executable).parent / "squawk")
    lint = subprocess.run([squawk, "--reporter", "gcc", str(script)], capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout[-3000:] + lint.stderr


QUOTED = """
CREATE TABLE shops (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, price numeric(8, 2));
INSERT INTO shops (price) SELECT i FROM generate_series(1, 20) i;
CREATE TABLE visits (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, shop_id bigint REFERENCES shops,
  "user" text, "Kind" text);
INSERT INTO visits (shop_id, "user", "Kind") SELECT 1 + i % 20, 'u' || i, 'k' FROM generate_series(1, 60) i;
"""

QUOTED_PLAN = """
version = 1
name = "quoted"

[[operation]]
type = "split_child"
parent = "shops"
child = "offers"
columns = ["price"]
fk = "shop_id"

[[operation]]
type = "link_child_reference"
table = "visits"
reference = "shop_id"
child = "offers"
fk = "offer_id"
"""


def test_the_sql_of_copying_a_table_with_quoted_column_names_is_valid(fresh_db: str, tmp_path: Path) -> None:
    """`migrate plan --sql` of a link whose table has columns named "user" and "Kind" writes them
    quoted in the copy's statements (unquoted, `user` is not even a column name), and lints clean,
    also once the run has added the link's column (the copy names it once)."""
    plan = _linted(fresh_db, tmp_path, QUOTED, QUOTED_PLAN)
    res = run_cli("migrate", "run", "--plan", str(plan), database_url=fresh_db)
    assert res.returncode == 0, res.stderr[-3000:]
    _lint(fresh_db, tmp_path, plan)
    assert rows(fresh_db, 'SELECT count(*), count(DISTINCT "user") FROM visits WHERE offer_id IS NOT NULL') == [(60, 60)]


LEGACY_TYPES = """
CREATE TABLE shops (id bigserial PRIMARY KEY, name varchar(10) NOT NULL DEFAULT 'x', grade char(2), opened timestamp,
  sizes integer[], rank smallint, "order" int NOT NULL DEFAULT 1);
INSERT INTO shops (name, grade, opened, sizes, rank) SELECT 'n' || i, 'A', '2026-01-01', ARRAY[i], i FROM generate_series(1, 20) i;
"""

LEGACY_TYPES_PLAN = """
version = 1
name = "legacy_types"

[[operation]]
type = "split_child"
parent = "shops"
child = "offers"
columns = ["name", "grade", "opened", "sizes", "rank"]
fk = "shop_id"
extra_columns = [{ name = "code", type = "varchar(20)", initial = "'S' || id", unique = true }]

[[operation]]
type = "derive_column"
table = "shops"
column = "position"
column_type = "integer"
from = '"order"'
"""


def test_the_sql_of_a_plan_over_legacy_types_lints_clean(fresh_db: str, tmp_path: Path) -> None:
    """`migrate plan --sql` of a plan whose new columns keep the legacy types (varchar(n), char(n),
    timestamp, integer, smallint) or take the file's own lints clean: squawk's advice on those types
    is silenced where the plan keeps them on purpose. The plan runs."""
    plan = _linted(fresh_db, tmp_path, LEGACY_TYPES, LEGACY_TYPES_PLAN)
    res = run_cli("migrate", "run", "--plan", str(plan), database_url=fresh_db)
    assert res.returncode == 0, res.stderr[-3000:]
    res = run_cli("migrate", "verify", database_url=fresh_db)
    assert res.returncode == 0, res.stdout[-2000:]


STREETS = """
CREATE TABLE homes (id serial PRIMARY KEY, street varchar(8));
INSERT INTO homes (street) SELECT (ARRAY['St Ann', 'Elm', 'st ann'])[1 + i % 3] FROM generate_series(1, 30) i;
"""

STREETS_PLAN = """
version = 1
name = "streets"
functions = [\"\"\"CREATE OR REPLACE FUNCTION public.spelled_out(t text) RETURNS text LANGUAGE sql IMMUTABLE
AS $$ SELECT nullif(regexp_replace(btrim(t), '^[Ss]t ', 'Street '), '') $$\"\"\"]

[[operation]]
type = "extract_lookup"
lookup = "streets"
normalizer = "public.spelled_out"
key = "casefold"
sources = [{ table = "homes", column = "street", fk = "street_id" }]
"""


def test_a_lookup_value_longer_than_the_legacy_column_takes_a_spelling_that_fits(
        fresh_db: str, tmp_path: Path) -> None:
    """The normalizer spells 'St Ann' out as 'Street Ann', longer than the legacy varchar(8): a row the
    new application gives that reference (insert or update) takes a legacy spelling of the same lookup
    row, which fits, instead of the write failing."""
    migrate_by_plan(fresh_db, tmp_path, STREETS, STREETS_PLAN)
    ann = scalar(fresh_db, "SELECT id::text FROM streets WHERE name_key = 'street ann'")
    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute("INSERT INTO homes (id, street_id) VALUES (100, %s)", (ann,))
        c.execute("UPDATE homes SET street_id = %s WHERE id = 1", (ann,))
    assert rows(fresh_db, "SELECT id, lower(street), street_id::text FROM homes WHERE id IN (1, 100) ORDER BY id") == [
        (1, "st ann", ann), (100, "st ann", ann)]
    res = run_cli("migrate", "verify", database_url=fresh_db)
    assert res.returncode == 0, res.stdout[-2000:]


TOGGLED = """
CREATE TABLE items (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, tag varchar(12) NOT NULL DEFAULT '',
  color text, price numeric(8, 2) NOT NULL DEFAULT 0, qty integer);
INSERT INTO items (tag, color, price, qty)
SELECT (ARRAY['Alpha', ' alpha', 'Beta', ''])[1 + i % 4], (ARRAY['Red', ' red ', NULL, '', 'Blue'])[1 + i % 5],
       i % 50, i FROM generate_series(1, 3000) i;
"""

TOGGLED_PLAN = """
version = 1
name = "toggled"

[[operation]]
type = "extract_lookup"
lookup = "tags"
key = "casefold"
sources = [{ table = "items", column = "tag", fk = "tag_id" }]

[[operation]]
type = "extract_lookup"
lookup = "colors"
key = "casefold"
sources = [{ table = "items", column = "color", fk = "color_id" }]

[[operation]]
type = "split_child"
parent = "items"
child = "item_prices"
columns = ["price", "qty"]
fk = "item_id"
"""


class ToggleWriters(Writers):
    """The old application sets texts to NULL, blank and back; the new one clears and sets references,
    deletes lookup rows (refused while used) and adds and deletes children of its own."""

    def _old(self, seed: int) -> None:
        r = random.Random(seed)

        def step(c: psycopg.Connection[Any]) -> None:
            i, k = r.randint(1, 3000), r.randrange(5)
            if k == 0:
                c.execute("UPDATE items SET color = %s WHERE id = %s", (r.choice([None, "", " RED", "Green"]), i))
            elif k == 1:
                c.execute("UPDATE items SET tag = %s WHERE id = %s", (r.choice(["", "beta ", "Gamma"]), i))
            elif k == 2:
                c.execute("UPDATE items SET price = price + 1, color = NULL, tag = '' WHERE id = %s", (i,))
            elif k == 3:
                c.execute("INSERT INTO items (tag, color, price) VALUES (%s, %s, 1)", (r.choice(["", "Delta"]), None))
            else:
                c.execute("DELETE FROM items WHERE id = %s", (i,))

        self._loop(step)

    def _new(self) -> None:
        r = random.Random(7)

        def step(c: psycopg.Connection[Any]) -> None:
            if not _exists(self.url, "public.item_prices") or c.execute(
                    "SELECT count(*) < 3 FROM pg_attribute WHERE attrelid = 'public.items'::regclass"
                    " AND attname IN ('tag_id', 'color_id', 'price')").fetchone() != (False,):
                return
            i, k = r.randint(1, 3000), r.randrange(5)
            if k == 0:
                c.execute("UPDATE items SET tag_id = NULL, color_id = NULL WHERE id = %s", (i,))
            elif k == 1:
                c.execute("UPDATE items SET tag_id = (SELECT id FROM tags ORDER BY random() LIMIT 1),"
                          " color_id = (SELECT id FROM colors ORDER BY random() LIMIT 1) WHERE id = %s", (i,))
            elif k == 2:
                with contextlib.suppress(psycopg.errors.ForeignKeyViolation):  # refused while still referenced
                    c.execute("DELETE FROM colors WHERE id = (SELECT id FROM colors ORDER BY random() LIMIT 1)")
            elif k == 3:
                c.execute("WITH n AS (INSERT INTO item_prices (item_id, price, qty) SELECT id, 9, 1 FROM items"
                          " WHERE id = %s RETURNING id) DELETE FROM item_prices WHERE id IN (SELECT id FROM n)", (i,))
            else:
                c.execute("UPDATE item_prices SET price = price + 1 WHERE item_id = %s AND is_default", (i,))

        self._loop(step)


def test_texts_toggled_and_references_cleared_under_live_writers_killed_and_resumed(
        fresh_db: str, tmp_path: Path) -> None:
    """The old application sets texts to NULL, blank and back while the new one clears references
    (a NOT NULL text becomes blank), deletes lookup rows and children; the run is killed mid-backfill
    and resumed: no write fails, verify holds, and rollback leaves the legacy rows as they were."""
    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute(TOGGLED.encode())
    plan = tmp_path / "plan.toml"
    plan.write_text(TOGGLED_PLAN)
    env = {"VILLAGER_BATCH_SIZE": "50", "VILLAGER_BACKFILL_WORKERS": "1", "VILLAGER_BATCH_PAUSE_MS": "10"}
    legacy_q = "SELECT md5(string_agg(row(id, tag, color, price, qty)::text, ',' ORDER BY id)) FROM items"
    with ToggleWriters(fresh_db) as writers:
        time.sleep(0.1)
        killed_when(fresh_db, ["migrate", "run", "--plan", str(plan)],
                    lambda: _exists(fresh_db, "public.item_prices") and bool(
                        scalar(fresh_db, "SELECT count(*) > 400 FROM item_prices")), **env)
        time.sleep(0.3)
        res = run_cli("migrate", "run", database_url=fresh_db)
        assert res.returncode == 0, res.stderr[-3000:]
        time.sleep(0.5)
    assert writers.errors == [] and writers.writes > 100, writers.errors[:5]
    res = run_cli("migrate", "verify", database_url=fresh_db)
    assert res.returncode == 0, res.stdout[-3000:]
    legacy = scalar(fresh_db, legacy_q)
    res = run_cli("migrate", "rollback", "--yes", database_url=fresh_db)
    assert res.returncode == 0, res.stderr[-2000:]
    assert scalar(fresh_db, legacy_q) == legacy


TUNED = QUOTED + """
ALTER TABLE visits ALTER COLUMN "user" SET STATISTICS 500;
ALTER TABLE visits ALTER COLUMN shop_id SET (n_distinct = -0.5);
"""

TUNED_SETTINGS = ("SELECT attname, coalesce(attstattarget::int, -1), array(SELECT o FROM unnest(attoptions) o WHERE o LIKE 'n\\_distinct%')"
                  " FROM pg_attribute WHERE attrelid = 'public.visits'::regclass AND attname IN ('user', 'shop_id')"
                  " ORDER BY attname")


def test_a_copied_table_keeps_its_columns_planner_settings(fresh_db: str, tmp_path: Path) -> None:
    """The table a link copies and swaps in keeps each column's statistics target and n_distinct."""
    migrate_by_plan(fresh_db, tmp_path, TUNED, QUOTED_PLAN)
    assert scalar(fresh_db, "SELECT value ->> 'method' FROM villager_migration.state WHERE key = 'rebuild:visits'") \
        == "rebuild"
    assert rows(fresh_db, TUNED_SETTINGS) == [("shop_id", -1, ["n_distinct=-0.5"]), ("user", 500, [])]


def test_an_unlogged_table_is_linked_in_place_and_stays_unlogged(fresh_db: str, tmp_path: Path) -> None:
    """A link's table that is unlogged is backfilled in place: the copy swapped in would be logged."""
    migrate_by_plan(fresh_db, tmp_path, QUOTED.replace("CREATE TABLE visits", "CREATE UNLOGGED TABLE visits"), QUOTED_PLAN)
    assert scalar(fresh_db, "SELECT value ->> 'why' FROM villager_migration.state WHERE key = 'rebuild:visits'") \
        == "it is unlogged"
    assert scalar(fresh_db, "SELECT relpersistence FROM pg_class WHERE oid = 'public.visits'::regclass") == "u"
    assert scalar(fresh_db, "SELECT count(*) FROM visits WHERE offer_id IS NULL") == 0


UNLOGGED_PARENT = """
CREATE UNLOGGED TABLE shops (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, price numeric(8, 2));
CREATE TABLE visits (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, shop_id bigint);
"""

UNLOGGED_PARENT_PLAN = QUOTED_PLAN.replace('fk = "offer_id"\n', """fk = "offer_id"

[[operation]]
type = "add_foreign_key"
table = "visits"
name = "fk_visits_shop"
columns = ["shop_id"]
references = "shops"
""")


def test_an_unlogged_parent_is_refused_before_anything_changes(fresh_db: str, tmp_path: Path) -> None:
    """A split of an unlogged parent, or a logged table's foreign key to it, is refused by `migrate plan`
    in its place (the run would stop at the child's foreign key), and `migrate run` changes nothing."""
    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute(UNLOGGED_PARENT.encode())
    plan = tmp_path / "plan.toml"
    plan.write_text(UNLOGGED_PARENT_PLAN)
    for command in ("plan", "run"):
        res = run_cli("migrate", command, "--plan", str(plan), database_url=fresh_db)
        assert res.returncode == 2, res.stdout[-2000:] + res.stderr[-2000:]
        assert "operation 1 (split_child, line 5), parent: table shops is unlogged" in res.stderr, res.stderr
        assert "operation 3 (add_foreign_key, line 19), references: table shops is unlogged" in res.stderr, res.stderr
    assert scalar(fresh_db, "SELECT to_regclass('public.offers') IS NULL AND to_regnamespace('villager_migration')"
                            " IS NULL")


RULED = """
CREATE TABLE shops (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, price numeric(8, 2), city text,
  locked boolean NOT NULL DEFAULT false);
INSERT INTO shops (price, city, locked) SELECT i, 'c' || i % 3, i % 5 = 0 FROM generate_series(1, 20) i;
CREATE TABLE shop_log (shop_id bigint, at timestamptz DEFAULT now());
CREATE RULE shops_locked AS ON UPDATE TO shops WHERE OLD.locked AND NEW.locked DO INSTEAD NOTHING;
CREATE RULE shops_logged AS ON UPDATE TO shops DO ALSO INSERT INTO shop_log (shop_id) VALUES (NEW.id);
"""

RULED_PLAN = """
version = 1
name = "ruled"

[[operation]]
type = "split_child"
parent = "shops"
child = "offers"
columns = ["price"]
fk = "shop_id"

[[operation]]
type = "extract_lookup"
lookup = "cities"
sources = [{ table = "shops", column = "city", fk = "city_id" }]
"""


def test_an_instead_rule_on_a_table_the_plan_writes_is_refused(fresh_db: str, tmp_path: Path) -> None:
    """A conditional `DO INSTEAD NOTHING` rule on a split's parent would swallow the sync trigger's
    write of a child's value to a locked parent (the two forms would differ): `migrate plan` refuses it,
    once, where the table is first named, and accepts the `DO ALSO` rule alone."""
    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute(RULED.encode())
    plan = tmp_path / "plan.toml"
    plan.write_text(RULED_PLAN)
    res = run_cli("migrate", "plan", "--plan", str(plan), database_url=fresh_db)
    assert res.returncode == 2, res.stdout[-2000:] + res.stderr[-2000:]
    said = [line for line in res.stderr.splitlines() if "INSTEAD rules" in line]
    assert len(said) == 1 and "operation 1 (split_child, line 5), parent: table shops has INSTEAD rules of its own" \
        " (shops_locked)" in said[0], res.stderr
    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute("DROP RULE shops_locked ON shops")
    assert run_cli("migrate", "plan", "--plan", str(plan), database_url=fresh_db).returncode == 0
