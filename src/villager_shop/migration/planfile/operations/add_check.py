"""add_check: a CHECK added NOT VALID (no scan, a brief lock), validated later without blocking
writes. While legacy rows violate it, it is a guard trigger of the same name instead (a NOT VALID
CHECK would reject every later update of those rows: steps/constraints.py), and verify accepts
that only while every violating row is quarantined by a quarantine_rule of the plan."""

from __future__ import annotations

from villager_shop.migration.planfile.operations.base import (
    ConstraintInfo,
    Env,
    Parts,
    added_columns,
    columns_read,
    ident,
)
from villager_shop.migration.planfile.spec import AddCheck
from villager_shop.migration.planfile.steps import QUARANTINE
from villager_shop.migration.steps.constraints import AddConstraint, ValidateConstraint


def checked_columns(op: AddCheck, env: Env) -> tuple[str, ...]:
    if op.columns:
        return op.columns
    # The guard trigger writes the names as they are: plain ones only (a quoted one is not watched).
    return tuple(c for c in columns_read(op.check, [*env.catalog.table(op.table).columns,
                                                    *sorted(added_columns(env, op.table))]) if ident(c) == c)


def expand(op: AddCheck, env: Env) -> Parts:
    definition = f"CHECK ({op.check})"
    violations = f"SELECT count(*) FROM public.{op.table} WHERE NOT ({op.check})"
    columns = checked_columns(op, env)
    guard = (columns, op.check) if columns else None
    parts = Parts()
    # Over a column the plan adds to an existing table: once that column (and its triggers) exist.
    late = bool(added_columns(env, op.table) & set(columns))
    (parts.late_checks if late else parts.checks).append(
        AddConstraint(op.table, op.name, definition, guard=guard, violations_sql=violations))
    parts.validations.append(ValidateConstraint(op.table, op.name, definition, violations, guard=guard))
    pk = env.catalog.table(op.table).key or "id"
    # verify: a guard (or NOT VALID check) is acceptable while each violating row is quarantined.
    parts.constraints.append(ConstraintInfo(op.table, op.name, (
        f"SELECT count(*) FROM public.{op.table} WHERE NOT ({op.check}) AND NOT EXISTS (SELECT 1 FROM {QUARANTINE} q"
        f" WHERE q.table_name = '{op.table}' AND q.row_key = {op.table}.{pk}::text)")))
    return parts
