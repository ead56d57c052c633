"""A plan file's operations, put in the engine's order: whatever the order of the file, every new
table and function comes before the columns and triggers that use them, every backfill after all
triggers exist, indexes before the foreign keys they serve, and validation and the plan's own
indexes last. Operations keep their file order within each phase (a link_child_reference's
backfill follows its split_child's)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from villager_shop.migration.planfile.catalog import Catalog
from villager_shop.migration.planfile.monitoring import PlanMonitoring
from villager_shop.migration.planfile.operations import (
    add_check,
    add_foreign_key,
    create_index,
    derive_column,
    extract_lookup,
    link_child_reference,
    quarantine_rule,
    raw_sql,
    split_child,
)
from villager_shop.migration.planfile.operations.base import ConstraintInfo, Env, Parts, PlanBackfill
from villager_shop.migration.planfile.spec import (
    AddCheck,
    AddForeignKey,
    CreateIndex,
    DeriveColumn,
    ExtractLookup,
    LinkChildReference,
    PlanSpec,
    QuarantineRule,
    RawSql,
    SplitChild,
)
from villager_shop.migration.planfile.steps import QUARANTINE, PlanFunctions, PlanState, PlanTriggers, Trigger
from villager_shop.migration.steps.analyze import Analyze
from villager_shop.migration.steps.base import Step
from villager_shop.migration.steps.indexes import CreateIndex as CreateIndexStep
from villager_shop.migration.steps.rebuild import RebuildTable
from villager_shop.migration.steps.schema_objects import StateSchema


@dataclass
class FilePlan:
    """Everything the commands need of a plan file: its steps and what verify, rollback and
    complete look at."""

    spec: PlanSpec
    catalog: Catalog
    steps: list[Step]
    tables: tuple[str, ...]  # the existing tables it works on
    new_tables: tuple[str, ...]
    legacy_columns: tuple[tuple[str, str], ...]
    constraints: list[ConstraintInfo] = field(default_factory=list)
    index_names: list[str] = field(default_factory=list)
    integrity: list[str] = field(default_factory=list)
    integrity_completed: list[str] = field(default_factory=list)
    quarantined_tables: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.spec.name


def _parts(spec: PlanSpec, catalog: Catalog) -> list[Parts]:
    links = tuple(op for op in spec.operations if isinstance(op, LinkChildReference))
    indexes = tuple(op for op in spec.operations if isinstance(op, CreateIndex))
    out, quarantined = [], set()
    for i, op in enumerate(spec.operations):
        env = Env(catalog, spec.operations[:i], links, indexes)
        if isinstance(op, ExtractLookup):
            out.append(extract_lookup.expand(op, env))
        elif isinstance(op, SplitChild):
            out.append(split_child.expand(op, env))
        elif isinstance(op, LinkChildReference):
            out.append(link_child_reference.expand(op, env))
        elif isinstance(op, DeriveColumn):
            out.append(derive_column.expand(op, env))
        elif isinstance(op, QuarantineRule):
            out.append(quarantine_rule.expand(op, env, op.table not in quarantined))
            quarantined.add(op.table)
        elif isinstance(op, AddCheck):
            out.append(add_check.expand(op, env))
        elif isinstance(op, AddForeignKey):
            out.append(add_foreign_key.expand(op, env))
        elif isinstance(op, CreateIndex):
            out.append(create_index.expand(op, env))
        elif isinstance(op, RawSql):
            out.append(raw_sql.expand(op, env))
    return out


def row_triggers_before(spec: PlanSpec, catalog: Catalog) -> list[tuple[int, Trigger]]:
    """The plan's BEFORE row triggers on existing tables, each with its operation's number (from 1):
    they compute the new columns from the row as the triggers before them in name order leave it."""
    existing = set(spec.tables())
    return [(i, t) for i, part in enumerate(_parts(spec, catalog), 1) for t in part.triggers
            if t.level == "ROW" and t.events.startswith("BEFORE") and "DELETE" not in t.events and t.table in existing]


def merged_walks(backfills: list[Step]) -> list[Step]:
    """One walk of a table for the operations that can share it (extract, derive, split and the
    quarantine rules of `products` are one walk, not four): a walk that reads nothing another fills
    joins the table's first; one that does stays where it is."""
    out: list[Step] = []
    first: dict[str, PlanBackfill] = {}
    for step in backfills:
        if isinstance(step, PlanBackfill):
            target = first.get(step.table)
            if target is not None and not step.reads_new and target.key == step.key:
                target.merge(step)
                continue
            first.setdefault(step.table, step)
        out.append(step)
    names = [s.name for s in out]
    for step in first.values():
        if len(step.ops) > 1 and f"backfill_{step.table}" not in names:
            step.name = f"backfill_{step.table}"
    return out


def rules_in_copies(walks: list[Step], catalog: Catalog) -> None:
    """A table that a link copies and swaps in, and that the plan walks for nothing but quarantine
    rules: the copy decides the rules for each row it copies (and again for each row it replays), so
    the rules' walk has nothing left to do once the copy is in place (the villager plan's order_items:
    1.3 s of 11 at scale 2). Where the table is backfilled in place instead, the walk runs."""
    copies = [s for s in walks if isinstance(s, RebuildTable)]
    for copy in copies:
        if sum(c.table == copy.table for c in copies) > 1:
            continue
        rule_walks = [w for w in walks if isinstance(w, PlanBackfill) and w.table == copy.table]
        if not rule_walks or any(not w.rules for w in rule_walks):
            continue
        pk = catalog.table(copy.table).key or "id"
        copy.side_ctes = tuple(c for w in rule_walks for r in w.rules for c in quarantine_rule.rule_ctes(r, pk))
        copy.side_gone = quarantine_rule.gone_sql(copy.table, pk)
        for w in rule_walks:
            w.covered_by = copy.key


def _leading(definition: str) -> list[str]:
    """The columns an index definition "(a, b DESC) INCLUDE (...)" leads with, as written."""
    if not definition.startswith("(") or ")" not in definition:
        return []
    return [c.strip() for c in definition[1:definition.index(")")].split(",")]


def served_by_plan_indexes(fk_indexes: list[CreateIndexStep], indexes: list[CreateIndexStep], copied: set[str]
                           ) -> tuple[list[CreateIndexStep], list[CreateIndexStep], set[str]]:
    """A foreign key's index is not built when an index the plan makes anyway (not partial) leads
    with the key's columns: that index serves the key and is built in its place (before the key
    is added), so that the table does not carry two (one a table's copy is built with, `copied`,
    stays). Returns the foreign-key indexes with such
    plan indexes in their places, the plan's other indexes, and the names left unbuilt."""
    taken: set[str] = set()
    unbuilt: set[str] = set()
    out: list[CreateIndexStep] = []
    for fx in fk_indexes:
        cols = _leading(fx.definition)
        serving = next((ix for ix in indexes if ix.table == fx.table and ix.name not in taken
                        and " WHERE " not in ix.definition
                        and [c.split()[0] for c in _leading(ix.definition)[:len(cols)]] == cols), None)
        if serving is None or fx.index in copied:
            out.append(fx)
        else:
            taken.add(serving.name)
            unbuilt.add(fx.index)
            out.append(serving)
    return out, [ix for ix in indexes if ix.name not in taken], unbuilt


def assemble(spec: PlanSpec, catalog: Catalog) -> FilePlan:
    parts = _parts(spec, catalog)

    def every(attr: str) -> list[Any]:
        return [x for p in parts for x in getattr(p, attr)]

    functions = list(dict(every("functions")).items())  # a function shared by operations, once
    clashes = sorted({n for n, body in every("functions") if dict(functions)[n] != body})
    if clashes:  # names cut at 63 characters: one function would stand for two
        raise ValueError(f"the plan makes two different functions of the same name: {', '.join(clashes)}")
    legacy = tuple(col for step in every("backfills") for col in step.contracts())
    quarantined = tuple(dict.fromkeys(op.table for op in spec.operations if isinstance(op, QuarantineRule)))
    unruled = quarantine_rule.unruled_sql([(op.table, op.reason) for op in spec.operations
                                           if isinstance(op, QuarantineRule)])
    integrity, integrity_completed = [*every("integrity"), unruled], [*every("integrity_completed"), unruled]
    keep = [f"UPDATE {QUARANTINE} q SET detail = to_jsonb(t) FROM public.{t} t WHERE q.table_name = '{t}'"
            f" AND q.row_key = t.{catalog.table(t).key or 'id'}::text"
            for t in quarantined if any(lt == t for lt, _ in legacy)]
    triggers = list({(t.name, t.table): t for t in every("triggers")}.values())
    tables = tuple(spec.tables())
    new_tables = tuple(spec.new_tables())
    early = {s.name: s for s in every("early_indexes")}  # one per (table, column), whichever link asks
    fk_indexes = [s for s in every("fk_indexes") if s.name not in early]  # an early one serves a foreign key too
    copied = {name for step in every("backfills") if isinstance(step, RebuildTable) for name, _ in step.indexes}
    fk_indexes, indexes, unbuilt = served_by_plan_indexes(fk_indexes, every("indexes"), copied)
    walks = merged_walks(every("backfills"))
    rules_in_copies(walks, catalog)
    steps: list[Step] = [
        StateSchema(), PlanState(), *early.values(), PlanFunctions("", list(spec.functions), functions),
        *every("tables"), *every("seeds"), *every("checks"), *every("columns"),
        PlanTriggers(triggers, keep), *every("late_checks"),
        *([PlanMonitoring(integrity, integrity_completed)] if spec.monitoring else []),
        *every("hooks"),
        *walks, *fk_indexes, *every("foreign_keys"), *every("validations"),
        *indexes, Analyze(tuple(dict.fromkeys((*tables, *new_tables)))),
    ]
    names = [s.name for s in steps]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"the plan makes steps of the same name: {', '.join(dupes)}")
    return FilePlan(spec, catalog, steps, tables, new_tables, legacy, every("constraints"), [n for n in dict.fromkeys(every("index_names")) if n not in unbuilt],
                    integrity, integrity_completed, quarantined)
