"""The guide's Prisma schemas describe the database of their phase exactly: every model's table,
columns (type, nullability, default), keys, indexes and relations against pg_catalog, both ways;
and Prisma's own tooling accepts them."""

from __future__ import annotations

import re
from pathlib import Path

import psycopg
import pytest

from tests.prisma import node
from tests.prisma.schema_check import differences, live, parse
from villager_shop.migration.plan import legacy_columns
from villager_shop.migration.planfile import record

# The schema of each phase, and the phases whose database it must describe exactly.
PHASES = [("schema.prisma", "legacy"), ("schema.prisma", "rolled_back"), ("schema-migrating.prisma", "migrated"),
          ("schema-normalized.prisma", "completed")]


def schema_text(name: str) -> str:
    return (node.PRISMA / name).read_text()


@pytest.mark.parametrize(("schema", "phase"), PHASES)
def test_each_schema_describes_the_database_of_its_phase(schema: str, phase: str, phase_dbs: dict[str, str]) -> None:
    with psycopg.connect(phase_dbs[phase], autocommit=True) as conn:
        tables = live(conn)
        assert len(tables) == (5 if schema == "schema.prisma" else 8)
        assert differences(schema_text(schema), tables) == []
        # Prisma Migrate's history table, once the application keeps one, is Prisma's: not a model.
        conn.execute("CREATE TABLE _prisma_migrations (id varchar(36) PRIMARY KEY)")
        try:
            assert differences(schema_text(schema), live(conn)) == []
        finally:
            conn.execute("DROP TABLE _prisma_migrations")


def test_the_comparison_finds_a_column_the_schema_lacks_and_every_other_kind_of_drift(phase_dbs: dict[str, str]) -> None:
    """A column added to the migration and not to the schema fails; so does each way a field, key,
    index or relation can differ."""
    with psycopg.connect(phase_dbs["migrated"]) as conn:
        tables = live(conn)
    text = schema_text("schema-migrating.prisma")
    tables["products"].columns["weight_grams"] = ("integer", True, None, False)
    found = differences(text, tables)
    assert found == ["products.weight_grams: column in the database, no field in model Product"], found
    del tables["products"].columns["weight_grams"]

    mutations = {
        "basePrice      Decimal? ": ("basePrice      Decimal ", "products.base_price (Product.basePrice): NULL in"),
        "@map(\"is_available\")": ("@map(\"available\")", "products.is_available: column in the database"),
        "stock     BigInt   @default(0)": ("stock     Int      @default(0)", "type bigint in the database, integer"),
        "@db.Decimal(2, 1)": ("@db.Decimal(3, 1)", "type numeric(2,1) in the database"),
        "role        String   @default(\"customer\")": ("role        String   @default(\"client\")",
                                                        "users.role (User.role): default 'customer'::text"),
        "onDelete: Cascade, onUpdate: Cascade)": ("onDelete: NoAction, onUpdate: Cascade)",
                                                  "product_variants: foreign key"),
        ", map: \"fk_products_category\")": (")", "relation ('products_category_id_fkey'"),
        "  @@index([variantId], map: \"idx_order_items_variant_id\")\n": ("", "index idx_order_items_variant_id"),
        "sku       String   @unique": ("sku       String", "unique key product_variants_sku_key"),
        "idx_products_category_rating,": ("", "idx_products_category_rating (a CHECK constraint or a partial"),
        "  @@map(\"addresses\")\n": ("", "table addresses: in the database, no model"),
    }
    for old, (new, expected) in mutations.items():
        assert text.count(old) >= 1, old
        found = differences(text.replace(old, new), tables)
        assert any(expected in d for d in found), (old, found)


def test_the_normalized_client_fits_the_migrated_database_but_for_the_legacy_columns_it_never_reads(
        phase_dbs: dict[str, str]) -> None:
    """So the new application runs on it from the end of `migrate run` on, and `complete` need not wait for it."""
    with psycopg.connect(phase_dbs["migrated"]) as conn:
        found = differences(schema_text("schema-normalized.prisma"), live(conn))
        columns = record.legacy_columns_of(conn)
    model = {"users": "User", "shops": "Shop", "products": "Product"}
    assert len(columns) == 5
    assert sorted(found) == sorted(f"{t}.{c}: column in the database, no field in model {model[t]}"
                                   for t, c in columns)


def test_the_normalized_schema_names_no_column_complete_drops() -> None:
    models = parse(schema_text("schema-normalized.prisma"))
    columns = {(m.table, f.column) for m in models.values() for f in m.fields if f.type not in models}
    assert set(legacy_columns()).isdisjoint(columns), set(legacy_columns()) & columns
    migrating = parse(schema_text("schema-migrating.prisma"))
    with_legacy = {(m.table, f.column) for m in migrating.values() for f in m.fields if f.type not in migrating}
    assert set(legacy_columns()) <= with_legacy  # the migrating schema has them all, side by side
    assert columns == with_legacy - set(legacy_columns())


def test_the_guides_phase_3_relations_are_in_both_new_schemas() -> None:
    """product -> category, product -> variants, shop -> address, user -> address, order item -> variant."""
    for name in ("schema-migrating.prisma", "schema-normalized.prisma"):
        models = parse(schema_text(name))
        relations = {(m.name, f.name): f.type for m in models.values() for f in m.fields if f.type in models}
        for (model, fld), target in {("Product", "category"): "ProductCategory", ("Product", "variants"): "ProductVariant",
                                     ("Shop", "address"): "Address", ("User", "address"): "Address",
                                     ("OrderItem", "variant"): "ProductVariant"}.items():
            assert relations.get((model, fld)) == target, (name, model, fld)


def test_prisma_validates_the_three_schemas_and_refuses_a_broken_one(prisma_project: Path, tmp_path: Path) -> None:
    for schema in node.SCHEMAS.values():
        res = node.prisma("validate", "--schema", schema)
        assert res.returncode == 0 and "is valid" in res.stdout + res.stderr, res.stdout + res.stderr
    broken = tmp_path / "broken.prisma"
    broken.write_text(re.sub(r"references: \[id\]", "references: [nope]", schema_text("schema-normalized.prisma"), count=1))
    res = node.prisma("validate", "--schema", str(broken))
    assert res.returncode != 0 and "nope" in res.stdout + res.stderr, res.stdout + res.stderr
    for name in node.SCHEMAS:  # the session's generate made each client
        assert (prisma_project / "generated" / name / "client.ts").exists()


def test_the_prisma_commands_the_switch_guide_gives_exist_with_their_flags(prisma_project: Path) -> None:
    """docs/application-switch.md's `prisma migrate ...` lines use Prisma 7's flags (6's were renamed)."""
    doc = (node.ROOT / "docs" / "application-switch.md").read_text()
    commands: dict[str, set[str]] = {}
    for line in re.findall(r"npx prisma migrate (\w+)([^\n]*(?:\\\n[^\n]*)*)", doc):
        commands.setdefault(line[0], set()).update(re.findall(r"(--[a-z-]+)", line[1]))
    assert {"diff", "resolve"} <= set(commands), commands
    for command, flags in commands.items():
        res = node.prisma("migrate", command, "--help")
        for flag in flags:
            assert re.search(rf"(^|\s){re.escape(flag)}(\s|$)", res.stdout + res.stderr, re.M), (command, flag)
