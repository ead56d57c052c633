"""link_child_reference: a table that references a split parent (loans.isbn -> books) gets the
id of the parent's default child (loans.edition_id), kept in step both ways: a legacy write of the
reference sets the default child; a new write of the child id sets the reference to that child's
parent (the new application may point at any child, not only the default). The reference itself
stays (it is not a legacy column the plan replaces)."""

from __future__ import annotations

from villager_shop.migration.keys import Key
from villager_shop.migration.planfile.operations.base import (
    Actions,
    ConstraintInfo,
    Env,
    Parts,
    V,
    backfill,
    ident,
    refuse_missing,
)
from villager_shop.migration.planfile.operations.split_child import qualifies
from villager_shop.migration.planfile.spec import LinkChildReference, SplitChild
from villager_shop.migration.planfile.steps import Trigger, triggers_sql
from villager_shop.migration.steps.backfill import batch
from villager_shop.migration.steps.columns import AddColumn
from villager_shop.migration.steps.constraints import AddConstraint, ValidateConstraint
from villager_shop.migration.steps.indexes import CreateIndex
from villager_shop.migration.steps.rebuild import RebuildTable

BUMP = f"IF pg_trigger_depth() = 1 THEN PERFORM nextval('{V}.legacy_writes'); END IF;"


def split_of(op: LinkChildReference, env: Env) -> SplitChild:
    for earlier in env.earlier:
        if isinstance(earlier, SplitChild) and earlier.child == op.child:
            return earlier
    raise ValueError(f"no split_child creates {op.child} before this operation")


def expand(op: LinkChildReference, env: Env) -> Parts:
    split = split_of(op, env)
    table, ref, child, fk = op.table, op.reference, op.child, op.fk
    cfk, flag = split.fk, split.default_flag
    ppk = env.catalog.table(split.parent).key or "id"
    default = f"(SELECT c.id FROM public.{child} c WHERE c.{cfk} = NEW.{ref} AND c.{flag})"
    soft = env.catalog.table(table).references.get(ref) != split.parent
    # The locks the link's foreign key takes, before it exists (the plan adds it after the backfill,
    # and `migrate rollback --step` may withdraw it): the parent first (a reference without a foreign
    # key to it would not wait for its delete or re-key otherwise, and one with a key would lock it
    # after the child, the opposite order of a cascading delete), then the child the row is linked
    # to. A child deleted meanwhile then waits for this row's transaction, and lets go of it after.
    hold = f"PERFORM 1 FROM public.{split.parent} p WHERE p.{ppk} = NEW.{ref} FOR KEY SHARE;\n            "
    # The default child, locked; one deleted while this waited for it (another row became the
    # default) is looked up again.
    def lock_default(pad: str) -> str:
        return (f"LOOP\n{pad}    SELECT c.id INTO NEW.{fk} FROM public.{child} c"
                f" WHERE c.{cfk} = NEW.{ref} AND c.{flag} FOR KEY SHARE;"
                f"\n{pad}    EXIT WHEN FOUND OR NOT EXISTS {default};\n{pad}END LOOP;")
    # A parent that does not meet `when` may be meeting it in a transaction not yet committed,
    # whose default child this row cannot see: the row waits for that transaction (FOR SHARE
    # conflicts with its UPDATE) and reads again; a parent's UPDATE that comes later waits for this
    # row's transaction instead, and its new default child then links this row. (Read again
    # whatever the lock found: a parent that qualified meanwhile is no longer one it matches.)
    take = lock_default(" " * 12)
    if split.when:
        pinfo = env.catalog.table(split.parent)
        take += (f"\n            IF NEW.{fk} IS NULL AND NEW.{ref} IS NOT NULL THEN"
                 f"\n                PERFORM 1 FROM public.{split.parent} p WHERE p.{ppk} = NEW.{ref}"
                 f" AND NOT coalesce({qualifies(split, pinfo, 'p.')}, false) FOR SHARE;"
                 f"\n                {lock_default(' ' * 16)}"
                 f"\n            END IF;")
    # A write of the link: the reference becomes the child's parent, as it is once both are locked;
    # a child that is not there is refused as the foreign key would refuse it.
    parent_of = (f"SELECT c.{cfk} INTO NEW.{ref} FROM public.{child} c WHERE c.id = NEW.{fk};"
                 f"\n            {hold}SELECT c.{cfk} INTO NEW.{ref} FROM public.{child} c WHERE c.id = NEW.{fk}"
                 f" FOR KEY SHARE;"
                 + refuse_missing(table, op.constraint, fk, child))
    fn = f"{table}_{fk}_sync"[:63]
    parts = Parts()
    parts.functions.append((fn, f"""CREATE OR REPLACE FUNCTION {V}.{fn}() RETURNS trigger
LANGUAGE plpgsql AS $fn$
-- {table}.{ref} <-> {table}.{fk}
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.{fk} IS NOT NULL THEN
            {parent_of}
        ELSE
            {hold}{take}
            {BUMP}
        END IF;
    ELSIF NEW.{ref} IS DISTINCT FROM OLD.{ref} THEN
        IF NEW.{fk} IS NOT DISTINCT FROM OLD.{fk} AND OLD.{fk} IS NOT NULL AND NEW.{ref} IS NOT NULL
           AND (EXISTS (SELECT 1 FROM public.{child} c WHERE c.id = OLD.{fk} AND c.{cfk} = NEW.{ref})
                OR (NOT EXISTS (SELECT 1 FROM public.{split.parent} p WHERE p.{ppk} = OLD.{ref})
                    AND EXISTS (SELECT 1 FROM public.{child} c WHERE c.id = OLD.{fk} AND c.{cfk} = OLD.{ref}))) THEN
            -- the reference names its {child} row's parent: the row was moved with it, or the parent's key was
            -- renamed (ON UPDATE CASCADE) and the {child} row follows before or after this one
            NULL;
        ELSE
            {hold}{take}
        END IF;
        {BUMP}
    ELSIF NEW.{fk} IS DISTINCT FROM OLD.{fk} AND NEW.{fk} IS NOT NULL THEN
        {parent_of}
    ELSIF NEW.{fk} IS NULL AND NEW.{ref} IS NOT NULL THEN
        {hold}{take}
    END IF;
    RETURN NEW;
END
$fn$"""))
    trig = Trigger(f"villager_{table}_{fk}"[:63], table, "BEFORE INSERT OR UPDATE", fn)
    parts.triggers.append(trig)
    parts.columns.append(AddColumn(table, fk, "uuid", then=(triggers_sql([trig]),),
                                   then_locks=f"reads {child}"))
    in_place = backfill(
        table, f"backfill_{table}_{fk}",
        # The child locked as the link's foreign key would (its triggers do not run in the walk's
        # transactions): one deleted meanwhile is waited for, and not linked.
        Actions((f"UPDATE public.{table} t SET {fk} = (SELECT c.id FROM public.{child} c"
                 f" WHERE c.{cfk} = t.{ref} AND c.{flag} FOR KEY SHARE)\n"
                 f" WHERE {batch('t')} AND t.{fk} IS NULL AND t.{ref} IS NOT NULL",), updates=True),
        f"backfill {table}.{fk}: the default {child} row of {table}.{ref}", env.catalog,
        only=f"t.{fk} IS NULL AND t.{ref} IS NOT NULL", reads_new=True)
    index = f"idx_{table}_{fk}"[:63]
    info = env.catalog.table(table)
    # Every row of the table changes: copied with the link filled and swapped in where the table
    # allows it (steps/rebuild.py), about three times faster than updating each row in place.
    parts.backfills.append(RebuildTable(
        # As SQL writes them (`migrate plan --sql` shows them), the link last (a catalog read after the
        # run added it has it already).
        table, "t", [*(ident(c) for c in info.columns if c != fk), fk],
        {fk: f"coalesce(t.{fk}, (SELECT c.id FROM public.{child} c WHERE c.{cfk} = t.{ref} AND c.{flag}))"},
        "", None, [(index, f"({fk})")], in_place,
        f"backfill {table}.{fk}: copy {table} with the default {child} row of {table}.{ref}, swap the copy in",
        key=Key(info.key or "id", info.key_type or "uuid"), referenced=tuple({split.parent} - {table}),
        # A uuid parent's default child mostly has the parent's id (split_child's backfill): the
        # copy takes the reference as the link and one join finds the rows where that is wrong.
        guess=({fk: f"coalesce(t.{fk}, t.{ref})"},
               f"SELECT r.{info.key or 'id'}::text, r.ctid FROM {V}.{table} r\n"
               f" WHERE r.{fk} = r.{ref} AND NOT EXISTS (SELECT 1 FROM public.{child} c\n"
               f"  WHERE c.id = r.{fk} AND c.{cfk} = r.{ref} AND c.{flag})")
        if env.catalog.table(split.parent).key_type == "uuid" and info.columns.get(ref) == "uuid" else None))
    parts.fk_indexes.append(CreateIndex(index, table, f"({fk})", why="foreign key"))
    parts.index_names.append(index)
    if ref not in info.leading:
        # The parent's trigger links the rows that wait for its new default child by the reference,
        # and a parent delete looks them up: without an index, each would scan the table.
        by_ref = f"idx_{table}_{ref}"[:63]
        parts.early_indexes.append(CreateIndex(by_ref, table, f"({ref})", phase="expand",
                                               why="used by the sync triggers to find the rows of a parent"))
        parts.index_names.append(by_ref)
    fk_name = op.constraint
    # A reference without a foreign key to the parent lets the old application delete a parent its
    # rows name (the link then lets go too) and name one that does not exist (the link stays NULL).
    definition = f"FOREIGN KEY ({fk}) REFERENCES public.{child} (id){' ON DELETE SET NULL' if soft else ''}"
    parts.foreign_keys.append(AddConstraint(table, fk_name, definition, referenced=child))
    parts.validations.append(ValidateConstraint(table, fk_name, definition))
    parts.constraints.append(ConstraintInfo(table, fk_name))
    pk = env.catalog.table(table).key or "id"
    def mismatch(join: str) -> str:
        return (f"SELECT 'reference_mismatch', '{table}', t.{pk}::text,\n"
                f"       format('{ref} %s, {fk} %s (a {child} row of %s)', t.{ref}, t.{fk}, c.{cfk})\n"
                f"  FROM public.{table} t {join} public.{child} c ON c.id = t.{fk}\n"
                f" WHERE t.{ref} IS DISTINCT FROM c.{cfk}")

    parts.integrity.append(
        mismatch("LEFT JOIN")
        # A row whose parent has no default child (it does not meet the split's `when`, or there is
        # no such parent: a reference without a foreign key) waits for one.
        + (f"\n   AND NOT (t.{fk} IS NULL AND NOT EXISTS (SELECT 1 FROM public.{child} d"
           f" WHERE d.{cfk} = t.{ref} AND d.{flag}))" if split.when or soft else ""))
    # The reference outlives `complete` (and the triggers): a row linked to a child of another parent
    # is wrong then too. A NULL link may be a parent's that never had a default child.
    parts.integrity_completed.append(mismatch("JOIN"))
    return parts
