"""add_foreign_key: the referencing columns are indexed first (CONCURRENTLY; otherwise every
delete of a referenced row scans the table), then the key is added NOT VALID (enforced for new
writes at once) and validated without blocking writes. Rows that reference nothing make the
validation fail, naming the key: fix or delete them, then run again. An index the table has
already, of the name the operation gives its own and on exactly these columns, serves instead
(rollback leaves it)."""

from __future__ import annotations

from villager_shop.migration.planfile.operations.base import ConstraintInfo, Env, Parts
from villager_shop.migration.planfile.spec import AddForeignKey
from villager_shop.migration.steps.constraints import AddConstraint, ValidateConstraint
from villager_shop.migration.steps.indexes import CreateIndex


def expand(op: AddForeignKey, env: Env) -> Parts:
    ref_columns = op.ref_columns or (env.catalog.table(op.references).key or "id",)
    on_delete = "" if op.on_delete == "NO ACTION" else f" ON DELETE {op.on_delete}"
    definition = (f"FOREIGN KEY ({', '.join(op.columns)}) REFERENCES public.{op.references}"
                  f" ({', '.join(ref_columns)}){on_delete}")
    parts = Parts()
    index = f"idx_{op.table}_{'_'.join(op.columns)}"[:63]
    if index not in env.catalog.table(op.table).indexes:  # else the database's own (check.py: on these columns)
        parts.fk_indexes.append(CreateIndex(index, op.table, f"({', '.join(op.columns)})", why="foreign key"))
        parts.index_names.append(index)
    parts.foreign_keys.append(AddConstraint(op.table, op.name, definition, referenced=op.references))
    parts.validations.append(ValidateConstraint(op.table, op.name, definition))
    parts.constraints.append(ConstraintInfo(op.table, op.name))
    return parts
