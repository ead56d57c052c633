"""The architecture rules, checked on the source: product code never imports the benchmarks, the
packages import one another without a cycle, and they stand in no more layers than they do today.

Every import counts, wherever it is written: at module level, inside a function (a lazy import still
ties the two packages together), and under `if TYPE_CHECKING:`. A package is the first level under
villager_shop (`villager_shop.migration.steps.base` belongs to `migration`); a module at the top
(cache.py, __main__.py) is a package of its own."""

from __future__ import annotations

import ast
import itertools
from collections.abc import Iterator
from functools import cache
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
TOP = "villager_shop"

# The packages stand in 7 layers (__main__ → cli → bench → api → migration → legacy → core); a change
# that adds one fails here;
# lower it whenever a change removes one.
MAX_LAYERS = 7

# Imports of the benchmarks from outside them, each with the reason it stays. A stale entry fails too,
# so the list only shrinks.
BENCH_IMPORTS_ALLOWED = {
    "villager_shop.cli.bench": "the `villager-shop bench` command group runs the benchmarks: an entry point, "
                               "the only way in from the command line",
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted((SRC / TOP).rglob("*.py"))}


def _imports(module: str, path: Path) -> Iterator[str]:
    """The villager_shop modules `module` imports: `from a.b import c` names a.b.c when c is a module."""
    known = _modules()
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
                source = ".".join([*base, node.module] if node.module else base)
            else:
                source = node.module or ""
            for alias in node.names:
                yield f"{source}.{alias.name}" if f"{source}.{alias.name}" in known else source


@cache
def module_graph() -> dict[str, frozenset[str]]:
    return {m: frozenset(t for t in _imports(m, p) if t == TOP or t.startswith(f"{TOP}."))
            for m, p in _modules().items()}


def package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def package_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {package_of(m): set() for m in module_graph()}
    for module, targets in module_graph().items():
        graph[package_of(module)] |= {package_of(t) for t in targets} - {package_of(module)}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as a path that ends where it starts, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def longest_path(graph: dict[str, set[str]]) -> list[str]:
    """The longest chain of imports in an acyclic graph: its length is the number of layers."""

    @cache
    def from_(node: str) -> tuple[str, ...]:
        below = [from_(n) for n in sorted(graph.get(node, ()))]
        return (node, *max(below, key=len, default=()))

    return list(max((from_(n) for n in sorted(graph)), key=len, default=()))


def test_the_source_is_parsed_whole() -> None:
    graph = package_graph()
    assert {"core", "legacy", "workload", "samples", "migration", "api", "bench", "cli", "__main__"} <= set(graph)
    assert "villager_shop.core.db" in module_graph()["villager_shop.migration.walker"]


def test_product_code_never_imports_the_benchmarks() -> None:
    found = {m: sorted(t for t in targets if package_of(t) == "bench")
             for m, targets in module_graph().items() if package_of(m) != "bench"}
    found = {m: t for m, t in found.items() if t}
    assert set(found) - set(BENCH_IMPORTS_ALLOWED) == set(), found
    assert set(BENCH_IMPORTS_ALLOWED) - set(found) == set(), "stale entries in BENCH_IMPORTS_ALLOWED"


def test_packages_import_one_another_without_a_cycle() -> None:
    graph = package_graph()
    cycle = find_cycle(graph)
    if cycle:
        where = {f"{a} -> {b}": sorted(f"{m} imports {t}" for m, ts in module_graph().items() for t in ts
                                       if package_of(m) == a and package_of(t) == b)
                 for a, b in itertools.pairwise(cycle)}
        raise AssertionError(f"package import cycle {' -> '.join(cycle)}: {where}")


def test_the_packages_stand_in_no_more_layers_than_measured() -> None:
    graph = package_graph()
    assert find_cycle(graph) is None
    chain = longest_path(graph)
    print(f"{len(chain)} layers: {' -> '.join(chain)}")
    assert len(chain) <= MAX_LAYERS, chain


# Imports of one command module by another, each with the reason it stays. Renderers shared by several
# commands live in cli.render; a command never imports another command's.
CLI_IMPORTS_ALLOWED = {
    ("villager_shop.cli.main", "*"): "the entry point registers every command group",
    ("villager_shop.cli.interrupt", "villager_shop.cli.main"): "reads the command tree to name the interrupted command",
    ("villager_shop.cli.demo", "villager_shop.cli.serve"): "the demo ends by running `serve`",
    ("villager_shop.cli.demo", "villager_shop.cli.interrupt"): "the demo says what Ctrl-C interrupted",
    ("villager_shop.cli.migrate", "villager_shop.cli.plan_choice"): "the --plan option, shared with rehearse",
    ("villager_shop.cli.rehearse", "villager_shop.cli.plan_choice"): "the --plan option, shared with migrate",
}


def test_a_command_module_imports_no_other_command_module_but_shared_renderers() -> None:
    found = {(m, t) for m, targets in module_graph().items() if m.startswith("villager_shop.cli.")
             for t in targets if t.startswith("villager_shop.cli.") and t != m and t != "villager_shop.cli.render"}
    unexplained = {(m, t) for m, t in found if (m, t) not in CLI_IMPORTS_ALLOWED and (m, "*") not in CLI_IMPORTS_ALLOWED}
    assert unexplained == set(), sorted(unexplained)


def test_the_migration_engine_needs_nothing_above_it() -> None:
    """Inside migration/, the modules import one another without a cycle, and what a step is given
    (context.py) and the backfill engine (walker.py) reach no step, plan or runner."""
    graph = {m: {t for t in ts if package_of(t) == "migration"} for m, ts in module_graph().items()
             if package_of(m) == "migration"}
    assert find_cycle(graph) is None
    above = tuple(f"{TOP}.migration.{m}" for m in ("steps", "plan", "runner", "verify", "rollback", "complete"))
    for low in (f"{TOP}.migration.context", f"{TOP}.migration.walker"):
        reached, todo = set(), [low]
        while todo:
            for nxt in graph[todo.pop()] - reached:
                reached.add(nxt)
                todo.append(nxt)
        assert not [m for m in reached if m.startswith(above)], (low, sorted(reached))


def test_the_samples_stand_on_core_alone() -> None:
    """The sample schemas are what a user of the plan files brings: they know nothing of the engine
    they are migrated by, nor of the shop, and only the command line reaches them."""
    graph = package_graph()
    assert graph["samples"] <= {"core"}, graph["samples"]
    assert {p for p, targets in graph.items() if "samples" in targets} <= {"cli"}


def test_the_helpers_see_cycles_and_layers() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None
    assert longest_path({"a": {"b", "c"}, "b": {"c"}, "c": set(), "d": {"c"}}) == ["a", "b", "c"]
