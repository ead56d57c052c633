"""split_child: columns of a parent move to a child table (1:N); each parent has one default
child that carries them (books.price, books.copies -> editions with is_default).

While both representations live: a write of the parent's columns reaches its default child (it is
created with the parent), a write of the default child reaches the parent, and the default child
cannot be deleted while its parent exists (it holds the parent's values; the parent's delete takes
its children along). Further, non-default children belong to the new schema alone. The parent's
legacy columns keep their constraints until `complete`: a new application that inserts a parent
still writes them (or they have defaults)."""

from __future__ import annotations

from collections.abc import Iterable

from villager_shop.migration.planfile.catalog import TableInfo
from villager_shop.migration.planfile.operations.base import (
    Env,
    Parts,
    V,
    WalkPart,
    backfill,
    columns_read,
    ident,
    quoted,
    rename,
    row_tuple,
)
from villager_shop.migration.planfile.spec import ChildColumn, LinkChildReference, SplitChild
from villager_shop.migration.planfile.spec import CreateIndex as CreateIndexSpec
from villager_shop.migration.planfile.steps import PlanTable, Trigger, triggers_sql
from villager_shop.migration.steps.columns import squawk_ignored
from villager_shop.migration.steps.rebuild import LOG_TRIGGER

BUMP = f"PERFORM nextval('{V}.legacy_writes');"


def expand(op: SplitChild, env: Env) -> Parts:
    parent, child, fk, flag = op.parent, op.child, op.fk, op.default_flag
    info = env.catalog.table(parent)
    pk, pk_type = info.key or "id", info.key_type or "uuid"
    pcols = [c.parent for c in op.columns]
    ccols = [c.child for c in op.columns]
    init = [e for e in op.extra if e.initial]
    parts = Parts()
    col_defs = "".join(f"{squawk_ignored(d, indent='    ')}    {c.child} {d},\n"
                       for c in op.columns for d in [_column_type(c, info)])
    col_defs += "".join(
        f"{squawk_ignored(e.type, indent='    ')}    {e.name} {e.type}{f' DEFAULT {e.default}' if e.default else ''}"
        f"{' NOT NULL' if e.not_null else ''},\n"
        for e in op.extra)
    col_defs += "".join(f"    CONSTRAINT {ident(name)} {definition},\n" for name, definition in carried_checks(op, env))
    col_defs += "".join(f"    CONSTRAINT {f'{child}_{e.name}_key'[:63]} UNIQUE ({e.name}),\n"
                        for e in op.extra if e.unique)
    table_sql = (
        f"CREATE TABLE IF NOT EXISTS public.{child} (\n"
        f"    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),\n"
        f"    {fk} {pk_type} NOT NULL REFERENCES public.{parent} ({pk}) ON DELETE CASCADE ON UPDATE CASCADE,\n"
        f"{col_defs}"
        f"    {flag} boolean NOT NULL DEFAULT false,\n"
        f"{f'    {op.active_flag} boolean NOT NULL DEFAULT true,' + chr(10) if op.active_flag else ''}"
        f"    created_at timestamptz NOT NULL DEFAULT now(),\n"
        f"    updated_at timestamptz NOT NULL DEFAULT now()\n);\n"
        f"CREATE UNIQUE INDEX IF NOT EXISTS {child}_one_default_idx ON public.{child} ({fk}) INCLUDE (id) WHERE {flag};\n"
        f"{_fk_index(op, env)}")
    serial = [c for c in op.columns if c.plain and c.default is None and "nextval(" in info.defaults.get(c.parent, "")]
    table_sql += "".join(f";\n{_own_sequence(parent, c.parent, child, c.child)}" for c in serial)
    give_back = ";\n".join(_own_sequence(child, c.child, parent, c.parent) for c in serial)
    links: list[LinkChildReference] = [ln for ln in env.links if isinstance(ln, LinkChildReference)
                                       and ln.child == child]
    # Rows that reference the parent and waited for its default child get it, whoever made it (the
    # parent's trigger, or the new application's insert of a default child or move of the flag).
    link_waiting = "".join(
        f"\n        UPDATE public.{ln.table} SET {ln.fk} = NEW.id WHERE {ln.reference} = NEW.{fk}"
        f" AND {ln.fk} IS NULL;" for ln in links)
    # A parent that does not meet `when` may get its default child from the new application, which
    # need not write the parent: a row written meanwhile cannot see the child, and locks the parent
    # FOR SHARE before it looks (link_child_reference). The parent is locked against that first: the
    # row waits and then finds the child, or this waits for the row and then links it.
    if op.when and links:
        link_waiting = (f"\n        PERFORM 1 FROM public.{parent} p WHERE p.{pk} = NEW.{fk}"
                        f" AND NOT coalesce({qualifies(op, info, 'p.')}, false) FOR NO KEY UPDATE;{link_waiting}")
    # A deleted child lets go of the rows linked to it (they take the parent's default child, if
    # any): until the link's foreign key exists, nothing else would, and its validation would fail.
    link_gone = "".join(f"\n        {_let_go(ln, fk, env)}" for ln in links)
    # A child moved to another parent (the old one is still there) takes the rows linked to it
    # along: their reference is their child's parent. A parent's key renamed instead is followed by
    # a reference with a foreign key (ON UPDATE CASCADE); one without lets go of its rows.
    soft = [ln for ln in links if env.catalog.table(ln.table).references.get(ln.reference) != parent]
    follow = "".join(f"\n            UPDATE public.{ln.table} SET {ln.reference} = NEW.{fk}"
                     f" WHERE {ln.fk} = NEW.id AND {ln.reference} IS DISTINCT FROM NEW.{fk};" for ln in links)
    renamed = ("\n        ELSE" + "".join(f"\n            {_let_go(ln, fk, env)}" for ln in soft)) if soft else ""
    link_moved = (f"\n    IF TG_OP = 'UPDATE' AND NEW.{fk} IS DISTINCT FROM OLD.{fk} THEN"
                  f"\n        IF EXISTS (SELECT 1 FROM public.{parent} WHERE {pk} = OLD.{fk}) THEN{follow}{renamed}"
                  f"\n        END IF;\n    END IF;")
    watched = [*pcols, *(c for c in when_columns(op, info) if c not in pcols)]
    new_row, old_row = row_tuple(watched, "NEW."), row_tuple(watched, "OLD.")
    set_child = ", ".join(f"{c} = EXCLUDED.{c}" for c in ccols)
    active = op.active_flag
    if op.when:
        # A parent that does not qualify gets no default child; one it has keeps its values.
        not_qualified = (f"    IF NOT coalesce({qualifies(op, info, 'NEW.')}, false) THEN\n"
                         + (f"        UPDATE public.{child} SET {active} = false, updated_at = now()\n"
                            f"         WHERE {fk} = NEW.{pk} AND {flag} AND {active};\n" if active else "")
                         + "        RETURN NULL;\n    END IF;\n")
    else:
        not_qualified = ""
    # A default child made inactive because its parent did not qualify is active again once it does.
    back_on = (f"NOT coalesce({qualifies(op, info, 'OLD.')}, false)" if active else "")
    set_active = f", {active} = c.{active} OR (TG_OP = 'UPDATE' AND {back_on})" if active else ""
    reactivate = f"\n        OR (NOT c.{active} AND TG_OP = 'UPDATE' AND {back_on})" if active else ""
    parent_fn, child_fn, keep_fn = (f"{child}_from_{parent}"[:63], f"{child}_to_{parent}"[:63],
                                    f"{child}_keep_default"[:63])
    parts.functions.append((parent_fn, f"""CREATE OR REPLACE FUNCTION {V}.{parent_fn}() RETURNS trigger
LANGUAGE plpgsql AS $fn$
-- {parent} -> its default {child} row: created with the parent, kept equal to its columns.
BEGIN
    IF TG_OP = 'UPDATE' AND {new_row} IS NOT DISTINCT FROM {old_row}
       AND EXISTS (SELECT 1 FROM public.{child} WHERE {fk} = NEW.{pk} AND {flag}) THEN
        RETURN NULL;
    END IF;
    IF pg_trigger_depth() = 1 AND (TG_OP = 'UPDATE' OR {row_tuple(pcols, 'NEW.')} IS DISTINCT FROM ROW({', '.join('NULL' for _ in pcols)})) THEN
        {BUMP}
    END IF;
{not_qualified}    INSERT INTO public.{child} AS c ({fk}, {', '.join([*ccols, *(e.name for e in init)])}, {flag})
    VALUES (NEW.{pk}, {', '.join(values(op, info, 'NEW.'))}, true)
    ON CONFLICT ({fk}) WHERE {flag} DO UPDATE SET {set_child}{set_active}, updated_at = now()
     WHERE {row_tuple(ccols, 'c.')} IS DISTINCT FROM {row_tuple(ccols, 'EXCLUDED.')}{reactivate};
    RETURN NULL;
END
$fn$"""))
    # A transformed column is written only when the parent's value does not give the child's already:
    # a price change of the child must not rewrite a stock of -5 as 0.
    set_parent = ", ".join(
        f"{c.parent} = {to_parent(op, c, 'NEW.', info)}" if c.plain else
        f"{c.parent} = CASE WHEN {from_parent(c, '')} IS DISTINCT FROM NEW.{c.child}"
        f" THEN {to_parent(op, c, 'NEW.', info)} ELSE {c.parent} END" for c in op.columns)
    # A default child the new application makes (or makes active) for a parent that does not meet
    # `when` is inactive, as the parent's trigger makes it when the parent stops meeting it: the
    # parent's trigger does not run when the child's values are the parent's already. A parent that
    # meets it is locked first (FOR SHARE conflicts with its UPDATE): an update making it stop meeting
    # `when`, whose trigger deactivates only the default child it sees, waits for this one, or this
    # one for it and then reads it as it is.
    deactivate = (f"""
    IF NEW.{flag} AND NEW.{active} AND (TG_OP = 'INSERT' OR NOT OLD.{flag} OR NOT OLD.{active}) THEN
        PERFORM 1 FROM public.{parent} p WHERE p.{pk} = NEW.{fk} AND coalesce({qualifies(op, info, 'p.')}, false) FOR SHARE;
        UPDATE public.{child} c SET {active} = false, updated_at = now() FROM public.{parent} p
         WHERE c.id = NEW.id AND c.{active} AND p.{pk} = NEW.{fk} AND NOT coalesce({qualifies(op, info, 'p.')}, false);
    END IF;""" if active else "")
    parts.functions.append((child_fn, f"""CREATE OR REPLACE FUNCTION {V}.{child_fn}() RETURNS trigger
LANGUAGE plpgsql AS $fn$
-- The default {child} row -> its {parent}'s legacy columns, when its values change or it becomes the
-- default (a write of other columns leaves the parent alone: that of a parent that does not meet
-- the split's condition differs by design).
BEGIN
    IF NEW.{flag} AND (TG_OP = 'INSERT' OR NOT OLD.{flag}
                       OR {row_tuple(ccols, 'NEW.')} IS DISTINCT FROM {row_tuple(ccols, 'OLD.')}) THEN
        UPDATE public.{parent} SET {set_parent}
         WHERE {pk} = NEW.{fk} AND {_row(from_parent(c, '') for c in op.columns)} IS DISTINCT FROM {row_tuple(ccols, 'NEW.')};
    END IF;{deactivate}
    RETURN NULL;
END
$fn$"""))
    links_fn = f"{child}_links"[:63]
    if links:
        parts.functions.append((links_fn, f"""CREATE OR REPLACE FUNCTION {V}.{links_fn}() RETURNS trigger
LANGUAGE plpgsql AS $fn$
-- A new default {child} row links the rows that reference its parent and wait for one; a deleted
-- one lets go of its rows.
BEGIN
    IF TG_OP = 'DELETE' THEN{link_gone}
        RETURN NULL;
    END IF;{link_moved}
    IF NEW.{flag} AND (TG_OP = 'INSERT' OR NOT OLD.{flag} OR NEW.{fk} IS DISTINCT FROM OLD.{fk}) THEN{link_waiting}
    END IF;
    RETURN NULL;
END
$fn$"""))
    # A move locks the child FOR UPDATE before its new version exists (a move of `fk` alone locks it
    # FOR NO KEY UPDATE, which a row being linked to it, FOR KEY SHARE, does not wait for): a row
    # being linked meanwhile is waited for and then taken along, or waits and reads the new parent.
    lock_moved = (f" THEN\n            PERFORM 1 FROM public.{child} WHERE id = OLD.id FOR UPDATE;"
                  if links else " THEN\n            NULL;")
    parts.functions.append((keep_fn, f"""CREATE OR REPLACE FUNCTION {V}.{keep_fn}() RETURNS trigger
LANGUAGE plpgsql AS $fn$
-- While the legacy columns live, they are the default {child} row's: it cannot be deleted alone,
-- nor moved to another {parent} (its parent's key renamed is not a move: the old key is gone).
BEGIN
    IF TG_OP = 'UPDATE' THEN
        IF NEW.{fk} IS DISTINCT FROM OLD.{fk} AND NOT OLD.{flag}{lock_moved}
        ELSIF NEW.{fk} IS DISTINCT FROM OLD.{fk} AND EXISTS (SELECT 1 FROM public.{parent} WHERE {pk} = OLD.{fk}) THEN
            RAISE EXCEPTION 'the default {child} row of {parent} % cannot be moved to another {parent} while the'
                            ' legacy columns are in use (until migrate complete)', OLD.{fk}
                  USING ERRCODE = 'restrict_violation',
                        HINT = 'make another row the default first, or insert a new {child} row for the other {parent}';
        END IF;
        RETURN NEW;
    END IF;
    IF OLD.{flag} AND EXISTS (SELECT 1 FROM public.{parent} WHERE {pk} = OLD.{fk}) THEN
        RAISE EXCEPTION 'the default {child} row of {parent} % cannot be deleted while the legacy columns'
                        ' are in use (until migrate complete)', OLD.{fk}
              USING ERRCODE = 'restrict_violation',
                    HINT = 'change its values, make another row the default first, or delete the {parent} row';
    END IF;
    RETURN OLD;
END
$fn$"""))
    child_triggers = [Trigger(f"villager_{child}_to_{parent}"[:63], child, "AFTER INSERT OR UPDATE", child_fn),
                      Trigger(f"villager_{child}_keep_default"[:63], child, f"BEFORE DELETE OR UPDATE OF {fk}",
                              keep_fn)]
    parent_trigger = Trigger(f"villager_{child}_from_{parent}"[:63], parent, "AFTER INSERT OR UPDATE", parent_fn)
    parts.triggers += [*child_triggers, parent_trigger]
    if links:  # with the triggers, once the links' columns exist
        parts.triggers.append(Trigger(f"villager_{child}_links"[:63], child, "AFTER INSERT OR UPDATE OR DELETE",
                                      links_fn))
    columns = ["id", fk, *ccols, *(e.name for e in op.extra), flag, *([active] if active else []), "created_at",
               "updated_at"]
    # The child table comes with its own triggers; the parent's follows in the triggers step.
    parts.tables.append(PlanTable(child, table_sql, columns,
                                  f"SHARE ROW EXCLUSIVE on {parent} (foreign key; milliseconds)",
                                  then=triggers_sql(child_triggers), undo_first=give_back))
    parts.backfills.append(backfill(
        parent, f"backfill_{parent}_{child}", _part(op, info, pk, ccols, _busy(op, pk, pk_type)),
        f"backfill {child}: the default row of every {parent} row", env.catalog, replaces=tuple(pcols)))
    qualified = f"coalesce({qualifies(op, info, 'p.')}, false)" if op.when else "true"
    is_active = f"c.{active}" if active else "true"
    parts.integrity.append(
        f"SELECT 'child_mismatch', '{parent}', p.{pk}::text,\n"
        f"       CASE WHEN NOT {qualified} THEN 'does not meet {quoted(op.when or '')}, but its default {child} row"
        f" is active'\n"
        f"            WHEN c.id IS NULL THEN 'no default {child} row'\n"
        f"            ELSE format('{', '.join(f'{p} %s' for p in pcols)}; default {child} row:"
        f" {', '.join(f'{c} %s' for c in ccols)}', {', '.join(f'p.{p}' for p in pcols)},"
        f" {', '.join(f'c.{c}' for c in ccols)}) END\n"
        f"  FROM public.{parent} p LEFT JOIN public.{child} c ON c.{fk} = p.{pk} AND c.{flag}\n"
        f" WHERE CASE WHEN {qualified} THEN c.id IS NULL"
        f" OR {_row(from_parent(c, 'p.') for c in op.columns)} IS DISTINCT FROM {row_tuple(ccols, 'c.')}\n"
        f"            ELSE c.id IS NOT NULL AND {is_active if active else 'false'} END")
    if not op.when:  # else a parent without a default child may be one that never qualified
        parts.integrity_completed.append(
            f"SELECT 'missing_default_child', '{parent}', p.{pk}::text, 'no default {child} row'\n"
            f"  FROM public.{parent} p\n"
            f" WHERE NOT EXISTS (SELECT 1 FROM public.{child} c WHERE c.{fk} = p.{pk} AND c.{flag})")
    return parts


def _fk_index(op: SplitChild, env: Env) -> str:
    """The index serving the child's foreign key (a parent's delete or re-key finds its children by
    it), made with the table: a plain index the plan makes on the child leading with that key serves
    it, and is then made here instead of a second one on the key alone."""
    child, fk = op.child, op.fk
    for ix in env.indexes:
        if (isinstance(ix, CreateIndexSpec) and ix.table == child and ix.columns and ix.columns[0].strip() == fk
                and not ix.where and not ix.unique):
            include = f" INCLUDE ({', '.join(ix.include)})" if ix.include else ""
            return f"CREATE INDEX IF NOT EXISTS {ix.name} ON public.{child} ({', '.join(ix.columns)}){include}"
    return f"CREATE INDEX IF NOT EXISTS {child}_{fk}_idx ON public.{child} ({fk})"


def _let_go(ln: LinkChildReference, fk: str, env: Env) -> str:
    """The rows of `ln` linked to the child row OLD through its parent OLD.`fk` let go. While the
    table is copied (steps/rebuild.py) a row whose link is not filled in place yet may have been
    copied with that child: its key goes to the change log, so that the copy takes it again."""
    t, ref, link = ln.table, ln.reference, ln.fk
    key = env.catalog.table(t).key or "id"
    as_text = "t.id::text" if key == "id" else f"to_jsonb(t) ->> '{key}'"  # as the log trigger writes it
    return (f"UPDATE public.{t} SET {link} = NULL WHERE {ref} = OLD.{fk} AND {link} = OLD.id;\n"
            f"        IF EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = 'public.{t}'::regclass"
            f" AND tgname = '{LOG_TRIGGER}') THEN\n"
            f"            INSERT INTO {V}.rebuild_log (table_name, row_id)\n"
            f"            SELECT '{t}', {as_text} FROM public.{t} t WHERE t.{ref} = OLD.{fk} AND t.{link} IS NULL;\n"
            f"        END IF;")


def carried_checks(op: SplitChild, env: Env) -> list[tuple[str, str]]:
    """The parent's validated CHECK constraints over moved columns only, for the child (renamed): the
    rule outlives `complete`, which drops the parent's with its columns. A check that also reads a
    column staying with the parent cannot move; `complete` names it as an object it would break."""
    renamed = {c.parent: c.child for c in op.columns if c.plain}  # a transformed value may not meet it
    out = []
    for name, definition, columns in env.catalog.table(op.parent).checks:
        if columns and set(columns) <= renamed.keys():
            base = name[len(op.parent) + 1:] if name.startswith(f"{op.parent}_") else name
            out.append((f"{op.child}_{base}"[:63], rename(definition, renamed)))
    return out


def _own_sequence(table: str, column: str, to_table: str, to_column: str) -> str:
    """The sequence of a serial column passes to the column that draws from it after `complete`
    (the child's copy): a sequence goes with the column that owns it, and `complete` drops the
    parent's. Rollback gives it back before the child moves to the archive, which would take it along."""
    return (f"DO $own$ DECLARE s text; BEGIN\n"
            f"    IF to_regclass('public.{table}') IS NOT NULL THEN\n"
            f"        s := pg_get_serial_sequence('public.{table}', '{column}');\n"
            f"        IF s IS NOT NULL THEN\n"
            f"            EXECUTE 'ALTER SEQUENCE ' || s || ' OWNED BY public.{to_table}.{to_column}';\n"
            f"        END IF;\n"
            f"    END IF;\nEND $own$")


def _wider(sqltype: str) -> str:
    """The child's type of a parent column: 32- and 16-bit integers become bigint (the new schema
    should not inherit a limit; while the legacy column lives, it still bounds the default child)."""
    return "bigint" if sqltype in ("integer", "smallint") else sqltype


def _column_type(c: ChildColumn, info: TableInfo) -> str:
    """The child column's definition: the parent's type, default and NOT NULL unless the plan says
    otherwise (a transformed column takes only what the plan gives it)."""
    sqltype = c.type or _wider(info.columns.get(c.parent, "text"))
    default = c.default if c.default is not None else (info.defaults.get(c.parent) if c.plain else None)
    not_null = c.not_null if c.not_null is not None else (c.plain and c.parent in info.not_null)
    return f"{sqltype}{f' DEFAULT {default}' if default else ''}{' NOT NULL' if not_null else ''}"


def from_parent(c: ChildColumn, prefix: str) -> str:
    """The child's value of `c` over the parent row `prefix` ('NEW.', 'p.', '' for the table itself)."""
    return rename(c.source, {c.parent: f"{prefix}{c.parent}"}) if c.source else f"{prefix}{c.parent}"


def to_parent(op: SplitChild, c: ChildColumn, prefix: str, info: TableInfo) -> str:
    """The parent's value of `c` over the child row `prefix`: cast to the parent's type where the
    child's may differ (a `from` of text to integer), since a CASE of text and integer branches
    (the transformed column's write) does not even parse."""
    value = rename(c.back, {m.child: f"{prefix}{m.child}" for m in op.columns}) if c.back else f"{prefix}{c.child}"
    if c.plain and not c.type:
        return value
    return f"CAST(({value}) AS {info.columns.get(c.parent, 'text')})"


def values(op: SplitChild, info: TableInfo, prefix: str) -> list[str]:
    """A new default child's moved and initial values, over the parent row `prefix`."""
    every = {col: f"{prefix}{col}" for col in info.columns}
    return [*(from_parent(c, prefix) for c in op.columns),
            *(rename(e.initial, every) for e in op.extra if e.initial)]


def qualifies(op: SplitChild, info: TableInfo, prefix: str) -> str:
    """`when` over the parent row `prefix`."""
    return f"({rename(op.when or 'true', {col: f'{prefix}{col}' for col in info.columns})})"


def when_columns(op: SplitChild, info: TableInfo) -> list[str]:
    """The parent's columns `when` reads: a change of one may change whether the parent qualifies."""
    return columns_read(op.when, info.columns) if op.when else []


def _row(items: Iterable[str]) -> str:
    return f"ROW({', '.join(items)})"


def _part(op: SplitChild, info: TableInfo, pk: str, ccols: list[str], busy: str) -> WalkPart:
    init = [e.name for e in op.extra if e.initial]
    active = op.active_flag
    qualified = f"coalesce({qualifies(op, info, 's.')}, false)"
    children, off = f"children_{op.child}"[:63], f"off_{op.child}"[:63]
    # A uuid parent's first default child takes the parent's id where it is free: a table linked
    # to the child (link_child_reference) is then copied with its reference as a guess, checked in
    # one join afterwards, instead of looking each row's default child up.
    same = ", id" if info.key_type == "uuid" else ""
    same_value = (f", CASE WHEN NOT EXISTS (SELECT 1 FROM public.{op.child} x WHERE x.id = s.{pk})"
                  f" THEN s.{pk} ELSE gen_random_uuid() END" if same else "")
    deactivate = ((f"{off} AS (\n  UPDATE public.{op.child} c SET {active} = false, updated_at = now() FROM src s\n"
                   f"   WHERE c.{op.fk} = s.{pk} AND c.{op.default_flag} AND c.{active} AND NOT {qualified})",)
                  if active else ())
    return WalkPart(op.parent, (
        f"{children} AS (\n"
        f"  INSERT INTO public.{op.child} AS c ({op.fk}, {', '.join([*ccols, *init])}, {op.default_flag}{same})\n"
        f"  SELECT s.{pk}, {', '.join(values(op, info, 's.'))}, true{same_value} FROM src s"
        f"{f' WHERE {qualified}' if op.when else ''}\n"
        f"  ON CONFLICT ({op.fk}) WHERE {op.default_flag} DO UPDATE\n"
        f"     SET {', '.join(f'{c} = EXCLUDED.{c}' for c in ccols)}, updated_at = now()\n"
        f"   WHERE {row_tuple(ccols, 'c.')} IS DISTINCT FROM {row_tuple(ccols, 'EXCLUDED.')})",
        *deactivate), busy_sqls=(busy,), by_key=True)


def _busy(op: SplitChild, pk: str, pk_type: str) -> str:
    """Parents whose default child another transaction holds: the new application's update of that
    child waits for our parent lock (its trigger writes the parent), so waiting for the child's
    lock would close a cycle. They are retried after the table."""
    return (f"WITH have AS MATERIALIZED (SELECT c.id, c.{op.fk} AS k FROM public.{op.child} c\n"
            f"               WHERE c.{op.fk} BETWEEN %(lo)s::{pk_type} AND %(hi)s::{pk_type}"
            f" AND c.{op.fk} = ANY(%(ids)s::{pk_type}[]) AND c.{op.default_flag}),\n"
            f"mine AS (SELECT c.id FROM public.{op.child} c WHERE c.id IN (SELECT id FROM have)\n"
            f"            FOR NO KEY UPDATE OF c SKIP LOCKED)\n"
            f"SELECT coalesce(array_agg(h.k), ARRAY[]::{pk_type}[]) FROM have h WHERE h.id NOT IN (SELECT id FROM mine)")
