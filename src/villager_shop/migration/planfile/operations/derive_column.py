"""derive_column: a new column of a table computed from its legacy columns (products.base_price =
the price when it is positive), for the new application to read - and, given `writes`, to write:
its write reaches that legacy column as `back`, and the new column is then computed again, so that
the two never disagree. Rule of precedence on one write: a changed legacy column wins."""

from __future__ import annotations

from villager_shop.migration.planfile.operations.base import (
    Env,
    Parts,
    V,
    WalkPart,
    backfill,
    columns_read,
    quoted,
    rename,
    row_tuple,
)
from villager_shop.migration.planfile.spec import DeriveColumn
from villager_shop.migration.planfile.steps import Trigger, triggers_sql
from villager_shop.migration.steps.columns import AddColumn

BUMP = f"IF pg_trigger_depth() = 1 THEN PERFORM nextval('{V}.legacy_writes'); END IF;"


def expand(op: DeriveColumn, env: Env) -> Parts:
    table, col = op.table, op.column
    info = env.catalog.table(table)
    every = list(info.columns)
    # The columns `from` reads: a change of one is a legacy write the new column follows.
    read = [c for c in columns_read(op.source, every) if c != col] or every[:1]

    def value(prefix: str) -> str:
        return f"({rename(op.source, {c: f'{prefix}{c}' for c in every})})"

    back = f"({rename(op.back, {c: f'NEW.{c}' for c in [*every, col]})})" if op.back else f"NEW.{col}"
    fn = f"derive_{table}_{col}"[:63]
    # A change of what `from` reads is a legacy write (counted where `writes` is not among them).
    legacy_write = "" if op.writes else f"""
    IF TG_OP = 'UPDATE' AND {row_tuple(read, 'NEW.')} IS DISTINCT FROM {row_tuple(read, 'OLD.')} THEN
        {BUMP}
    END IF;"""
    parts = Parts()
    parts.functions.append((fn, f"""CREATE OR REPLACE FUNCTION {V}.{fn}() RETURNS trigger
LANGUAGE plpgsql AS $fn$
-- {table}.{col} = {op.source.replace(chr(10), ' ')}
BEGIN{legacy_write}
    NEW.{col} := {value('NEW.')};
    RETURN NEW;
END
$fn$"""))
    # The new application's write of the column reaches `writes` in a trigger of its own, named to
    # fire before every derived column's computation (villager_derive_ < villager_derived_): another
    # derived column of the table that reads `writes` is computed from the value written back.
    trig = Trigger(f"villager_derived_{table}_{col}"[:63], table, "BEFORE INSERT OR UPDATE", fn)
    triggers = [trig]
    if op.writes:
        write_fn = f"derive_{table}_{col}_writes"[:63]
        # An insert of the column leaves `writes` NULL, or to its default: the column is what it wrote.
        # A volatile default gives another value when evaluated here: an insert whose `writes` does not
        # give the column then had it from its default (the old application never writes the column).
        default = info.defaults.get(op.writes)
        unwritten = f"NEW.{op.writes} IS NULL" + (
            f" OR {value('NEW.')} IS DISTINCT FROM NEW.{col}" if op.writes in info.volatile else
            f" OR NEW.{op.writes} IS NOT DISTINCT FROM ({default})" if default else "")
        parts.functions.append((write_fn, f"""CREATE OR REPLACE FUNCTION {V}.{write_fn}() RETURNS trigger
LANGUAGE plpgsql AS $fn$
-- A write of {table}.{col} alone (by the new application) -> {table}.{op.writes}
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.{col} IS NOT NULL AND ({unwritten}) THEN
            NEW.{op.writes} := {back};  -- inserted by the new application
        END IF;
    ELSIF {row_tuple(read, 'NEW.')} IS DISTINCT FROM {row_tuple(read, 'OLD.')} THEN
        {BUMP}
    ELSIF NEW.{col} IS DISTINCT FROM OLD.{col} THEN
        NEW.{op.writes} := {back};  -- the new application's write
    END IF;
    RETURN NEW;
END
$fn$"""))
        triggers.insert(0, Trigger(f"villager_derive_{table}_{col}"[:63], table, "BEFORE INSERT OR UPDATE", write_fn))
    parts.triggers += triggers
    parts.columns.append(AddColumn(table, col, op.column_type, then=(triggers_sql(triggers),)))
    parts.backfills.append(backfill(
        table, f"derive_{table}_{col}"[:63],
        WalkPart(table, sets=((col, value("t.")),), applies=f"t.{col} IS DISTINCT FROM {value('t.')}"),
        f"backfill {table}.{col} = {op.source}", env.catalog, only=f"t.{col} IS DISTINCT FROM {value('t.')}"))
    pk = info.key or "id"
    parts.integrity.append(
        f"SELECT 'derived_mismatch', '{table}', t.{pk}::text,\n"
        f"       format('{col} %s, but {quoted(op.source)} gives %s', t.{col}, {value('t.')})\n"
        f"  FROM public.{table} t WHERE t.{col} IS DISTINCT FROM {value('t.')}")
    return parts

