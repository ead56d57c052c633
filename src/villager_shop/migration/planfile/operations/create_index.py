"""create_index: built CONCURRENTLY (reads and writes go on); an interrupted build's INVALID index
is dropped and built again (steps/indexes.py)."""

from __future__ import annotations

from villager_shop.migration.planfile.operations.base import Env, Parts
from villager_shop.migration.planfile.spec import CreateIndex as CreateIndexSpec
from villager_shop.migration.steps.indexes import CreateIndex


def expand(op: CreateIndexSpec, env: Env) -> Parts:
    definition = f"({', '.join(op.columns)})"
    if op.include:
        definition += f" INCLUDE ({', '.join(op.include)})"
    if op.where:
        definition += f" WHERE {op.where}"
    parts = Parts()
    parts.indexes.append(CreateIndex(op.name, op.table, definition, unique=op.unique))
    parts.index_names.append(op.name)
    return parts
