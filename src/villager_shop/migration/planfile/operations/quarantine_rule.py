"""quarantine_rule: rows for which a predicate holds are recorded, with a reason, in
villager_migration.plan_quarantine instead of being silently carried over (books with a price
that is not positive). The row itself stays as it is. A trigger keeps the record current on every
write (a fixed row leaves the quarantine; a deleted or truncated one too); verify accepts a check
that such rows violate only while each of them is quarantined."""

from __future__ import annotations

from villager_shop.migration.planfile.operations.base import (
    TOKEN,
    Env,
    Parts,
    V,
    WalkPart,
    added_columns,
    backfill,
    columns_read,
    rename,
)
from villager_shop.migration.planfile.spec import QuarantineRule
from villager_shop.migration.planfile.steps import QUARANTINE, Trigger


def reads_new(op: QuarantineRule, env: Env) -> bool:
    """Whether the rule reads what the plan adds (a link's column, filled by another backfill)."""
    return not env.catalog.table(op.table).columns or bool(columns_read(op.when, added_columns(env, op.table)))


def expand(op: QuarantineRule, env: Env, first_of_table: bool) -> Parts:
    table, reason = op.table, op.reason
    pk = env.catalog.table(table).key or "id"
    fn = f"quarantine_{table}_{reason}"[:63]
    parts = Parts()
    parts.functions.append((fn, f"""CREATE OR REPLACE FUNCTION {V}.{fn}() RETURNS trigger
LANGUAGE plpgsql AS $fn$
-- {table}: rows where {op.when} are quarantined as '{reason}'.
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.{pk} IS DISTINCT FROM OLD.{pk} THEN
        DELETE FROM {QUARANTINE} WHERE table_name = '{table}' AND reason = '{reason}' AND row_key = OLD.{pk}::text;
    END IF;
    IF EXISTS (SELECT 1 FROM (SELECT NEW.*) AS {table} WHERE ({op.when})) THEN
        INSERT INTO {QUARANTINE} (table_name, row_key, reason, detail)
        VALUES ('{table}', NEW.{pk}::text, '{reason}', to_jsonb(NEW))
        ON CONFLICT (table_name, row_key, reason) DO UPDATE SET detail = EXCLUDED.detail, quarantined_at = now();
    ELSIF TG_OP = 'UPDATE' THEN
        DELETE FROM {QUARANTINE} WHERE table_name = '{table}' AND reason = '{reason}' AND row_key = NEW.{pk}::text;
    END IF;
    RETURN NULL;
END
$fn$"""))
    parts.triggers.append(Trigger(f"villager_q_{table}_{reason}"[:63], table, "AFTER INSERT OR UPDATE", fn))
    if first_of_table:  # one pair per table, whatever its rules
        forget, forget_all = f"forget_{table}_deleted"[:63], "plan_forget_truncated"
        parts.functions.append((forget, f"""CREATE OR REPLACE FUNCTION {V}.{forget}() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    DELETE FROM {QUARANTINE} q USING old_rows o WHERE q.table_name = TG_TABLE_NAME AND q.row_key = o.{pk}::text;
    RETURN NULL;
END
$fn$"""))
        parts.functions.append((forget_all, f"""CREATE OR REPLACE FUNCTION {V}.{forget_all}() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    DELETE FROM {QUARANTINE} WHERE table_name = TG_TABLE_NAME;
    RETURN NULL;
END
$fn$"""))
        parts.triggers += [Trigger(f"villager_forget_{table}"[:63], table, "AFTER DELETE", forget, level="DELETE"),
                           Trigger(f"villager_forget_all_{table}"[:63], table, "AFTER TRUNCATE", forget_all,
                                   level="TRUNCATE")]
    walk = backfill(table, f"quarantine_{table}_{reason}"[:63], WalkPart(table, rule_ctes(op, pk)),
                    f"quarantine the {table} rows where {op.when} ({reason})", env.catalog,
                    only=_walked(op, pk, reads_new(op, env), _columns(op, env)), reads_new=reads_new(op, env), rule=op)
    parts.backfills.append(walk)
    parts.integrity.append(
        f"SELECT 'not_quarantined', '{table}', {table}.{pk}::text, 'matches {reason} but is not quarantined'\n"
        f"  FROM public.{table} WHERE ({op.when}) AND NOT EXISTS (SELECT 1 FROM {QUARANTINE} q\n"
        f"       WHERE q.table_name = '{table}' AND q.reason = '{reason}' AND q.row_key = {table}.{pk}::text)")
    stale = (f"SELECT 'stale_quarantine', '{table}', q.row_key, 'quarantined as {reason}, but the row is fine or gone'\n"
             f"  FROM {QUARANTINE} q WHERE q.table_name = '{table}' AND q.reason = '{reason}' AND NOT EXISTS (\n"
             f"       SELECT 1 FROM public.{table} WHERE {table}.{pk}::text = q.row_key AND ({op.when}))")
    parts.integrity.append(stale)
    return parts


def unruled_sql(rules: list[tuple[str, str]]) -> str:
    """The entries no rule of the plan makes (of a table or for a reason none of its rules names,
    left by hand or by an earlier plan): stale, as a rule's own entries are once their row is fine."""
    known = ", ".join(f"('{table}', '{reason}')" for table, reason in dict.fromkeys(rules))
    return ("SELECT 'stale_quarantine', q.table_name, q.row_key,\n"
            "       'quarantined as ' || q.reason || ', but no rule of the plan sets ' || q.table_name || ' rows aside for it'\n"
            f"  FROM {QUARANTINE} q" + (f" WHERE (q.table_name, q.reason) NOT IN ({known})" if known else ""))


def rule_ctes(op: QuarantineRule, pk: str) -> tuple[str, str]:
    """The rule decided for the rows of a batch `src` (a walk's, or a table copy's): an entry for
    each row it holds for, none for the others."""
    table, reason = op.table, op.reason
    q_add, q_clear = f"q_add_{reason}"[:63], f"q_clear_{reason}"[:63]
    return (f"{q_add} AS (\n"
            f"  INSERT INTO {QUARANTINE} (table_name, row_key, reason, detail)\n"
            f"  SELECT '{table}', {table}.{pk}::text, '{reason}', to_jsonb({table}) FROM src AS {table} WHERE ({op.when})\n"
            f"  ON CONFLICT (table_name, row_key, reason) DO NOTHING)",
            # A join with the batch's keys, not `row_key = ANY(ARRAY(...))`: the planner takes that one as
            # a filter on every entry of the rule (the key is the index's second column, the reason its
            # third), comparing each with every key of the batch (5 ms a batch with 300 entries).
            f"{q_clear} AS (\n"
            f"  DELETE FROM {QUARANTINE} q USING unnest(ARRAY(SELECT {table}.{pk}::text FROM src AS {table}"
            f" WHERE NOT coalesce(({op.when}), false))) AS k(row_key)\n"
            f"   WHERE q.table_name = '{table}' AND q.reason = '{reason}' AND q.row_key = k.row_key)")


def gone_sql(table: str, pk: str) -> str:
    """The entries of rows of keys $1 (text[]) that a replayed batch `src` no longer has: a copy may
    decide for a row the application deletes meanwhile, after its delete took the entries out."""
    return (f"DELETE FROM {QUARANTINE} q WHERE q.table_name = '{table}' AND q.row_key = ANY($1::text[])"
            f" AND NOT EXISTS (SELECT 1 FROM src WHERE src.{pk}::text = q.row_key)")


def _columns(op: QuarantineRule, env: Env) -> set[str]:
    return {*env.catalog.table(op.table).columns, *added_columns(env, op.table)}


# Words a rule's condition may use besides its table's columns and function calls for it to be read
# on the walked row directly (anything else - a subquery, a cast, a CASE, a qualified or quoted name -
# keeps the row wrapped as a relation of the table's name).
_PLAIN_WORDS = frozenset({"and", "or", "not", "is", "null", "distinct", "from", "true", "false", "in", "between",
                          "like", "ilike"})


def _on_walked_row(when: str, columns: set[str]) -> str | None:
    """`when` with its columns read from the walked row `t`, when it is that plain; else None."""
    tokens = TOKEN.findall(when)
    for i, tok in enumerate(tokens):
        if tok in (".", ":", "$", '"') or tok.startswith('"'):
            return None
        if tok[0].isalpha() or tok[0] == "_":
            following = next((t for t in tokens[i + 1:] if not t.isspace()), "")
            if following != "(" and tok not in columns and tok.lower() not in _PLAIN_WORDS:
                return None
    return rename(when, {c: f"t.{c}" for c in columns})


def _walked(op: QuarantineRule, pk: str, reads_new: bool, columns: set[str]) -> str:
    """The rows the walk locks: those the rule holds for (the trigger keeps the rest out of the
    quarantine from the moment it exists, and a rollback empties it; a scan writing nothing to the
    others runs ten times faster). A rule over a column another backfill fills also takes the rows
    it holds an entry for: that backfill writes past the triggers, so a row it fills (an order item
    linked by the copy) no longer matches, and only the walk takes its entry out."""
    table = op.table
    # The walker evaluates it on every row of each batch: a subquery per row (the row as a relation of
    # the table's name, for a condition that names it) cost 0.14 s of CPU per pass over 200,000 orders.
    plain = _on_walked_row(op.when, columns)
    holds = (f"coalesce(({plain}), false)" if plain is not None
             else f"coalesce((SELECT ({op.when}) FROM (SELECT t.*) AS {table}), false)")
    if not reads_new:
        return holds
    return (f"{holds} OR EXISTS (SELECT 1 FROM {QUARANTINE} q WHERE q.table_name = '{table}'"
            f" AND q.row_key = t.{pk}::text AND q.reason = '{op.reason}')")
