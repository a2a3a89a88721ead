"""The package's imports run one way: no cycle, and none of the arrows the architecture forbids.

The graph is read from the source (every module parsed with `ast`, relative imports resolved, imports inside
functions included), so a forbidden import fails here even when no test happens to execute it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "hf_efficient_probing"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE

# room of a module: its first component below the package, with the single-file rooms named after what they hold
ROOM_OF_FILE = {"configuration_probing": "configs", "modeling_probing": "modeling", "modeling_families": "modeling"}
# room -> rooms it must never reach, directly or through other modules; no core room reaches the demo
FORBIDDEN = {
    room: banned | {"demo", "cli"}
    for room, banned in {
        "probes": {"backbones", "configs", "modeling", "cache", "training", "hub", "analysis", "official", "package"},
        "images": {"probes", "backbones", "configs", "modeling", "cache", "training", "hub", "analysis", "package"},
        "atomic": {"probes", "backbones", "configs", "modeling", "cache", "training", "hub", "analysis", "package"},
        "tables": {"probes", "backbones", "configs", "modeling", "cache", "training", "hub", "analysis", "package"},
        "backbones": {"configs", "modeling", "cache", "training", "hub", "analysis", "official"},
        "configs": {"modeling", "cache", "training", "hub", "analysis", "official"},
        "checkpoint": {"modeling", "cache", "training", "hub", "analysis", "official"},
        "modeling": {"cache", "training", "official"},
        "cache": {"configs", "modeling", "training", "hub", "analysis", "official", "package"},
        "training": {"official"},
        # the publishing layer: the models call it, it never imports them (so there is no cycle to hide)
        "hub": {"configs", "modeling", "cache", "training", "official"},
        "official": {"training"},
        "transformers_heads": {"training", "cache", "official"},
        "video": {"probes", "backbones", "configs", "modeling", "cache", "training", "hub", "analysis", "package"},
    }.items()
}
# room -> rooms it must not import itself (it may reach them through a room that may): training publishes nothing
# (the models' push_to_hub reaches the publishing layer, but a run never calls it; the CLI publishes)
NOT_DIRECTLY = {"training": {"hub"}}


def module_files(root: Path = ROOT) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package (packages by their ``__init__``)."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def import_edges(modules: dict[str, Path]) -> set[tuple[str, str, bool]]:
    """``(importer, imported, lazy)`` for every import of a package module by another; ``lazy``: inside a function.

    ``from X import name`` is an arrow to ``X.name`` when that is a module, else to ``X``; the parent packages that
    Python imports on the way are not arrows (a package's ``__init__`` importing its own modules is no cycle)."""
    edges = set()
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        tree = ast.parse(path.read_text(), filename=str(path))
        functions = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
        lazy_nodes = {id(inner) for function in functions for inner in ast.walk(function)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - node.level + 1]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module
                targets = [
                    f"{source}.{alias.name}" if f"{source}.{alias.name}" in modules else source for alias in node.names
                ]
            else:
                continue
            for target in targets:
                if target in modules and target != name:
                    edges.add((name, target, id(node) in lazy_nodes))
    return edges


def room(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "package"
    return ROOM_OF_FILE.get(parts[1], parts[1])


def graph_of(edges) -> dict[str, set[str]]:
    """The import graph, lazy imports (inside functions) included: a cycle hidden in a function is still a cycle."""
    graph: dict[str, set[str]] = {}
    for importer, imported, _ in edges:
        graph.setdefault(importer, set()).add(imported)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node):
        state[node] = 1
        path.append(node)
        for successor in sorted(graph.get(node, ())):
            if state.get(successor) == 1:
                return path[path.index(successor) :] + [successor]
            if successor not in state and (cycle := visit(successor)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def forbidden_paths(graph: dict[str, set[str]]) -> list[list[str]]:
    """For each module whose room has forbidden rooms, the first import chain that reaches one of them."""
    found = []
    for start in sorted(graph):
        banned = FORBIDDEN.get(room(start), set())
        if not banned:
            continue
        parents, queue = {start: None}, [start]
        while queue:
            node = queue.pop(0)
            if room(node) in banned:
                chain = [node]
                while parents[chain[-1]] is not None:
                    chain.append(parents[chain[-1]])
                found.append(chain[::-1])
                break
            for successor in sorted(graph.get(node, ())):
                if successor not in parents:
                    parents[successor] = node
                    queue.append(successor)
    return found


@pytest.fixture(scope="module")
def graph():
    modules = module_files()
    assert {"hf_efficient_probing.training.job", "hf_efficient_probing.cache.extraction"} <= set(modules)
    return graph_of(import_edges(modules))


def test_the_package_imports_have_no_cycle(graph):
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def direct_forbidden(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    return sorted(
        (importer, imported)
        for importer, targets in graph.items()
        for imported in targets
        if room(imported) in NOT_DIRECTLY.get(room(importer), set())
    )


def test_no_room_imports_a_room_it_must_leave_to_others(graph):
    assert direct_forbidden(graph) == []


def test_no_room_reaches_a_room_it_must_not_import(graph):
    assert forbidden_paths(graph) == [], "\n".join(" -> ".join(chain) for chain in forbidden_paths(graph))


def test_the_checks_see_relative_lazy_and_forbidden_imports(tmp_path):
    """A throwaway package with a lazy relative cycle and a cache -> training arrow: both are found."""
    package = tmp_path / PACKAGE
    for folder in ("cache", "training"):
        (package / folder).mkdir(parents=True)
        (package / folder / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "cache" / "store.py").write_text("def f():\n    from ..training.run import job\n")
    (package / "training" / "run.py").write_text("from ..cache import store\n\ndef job():\n    pass\n")
    graph = graph_of(import_edges(module_files(package)))
    assert find_cycle(graph) == [f"{PACKAGE}.cache.store", f"{PACKAGE}.training.run", f"{PACKAGE}.cache.store"]
    assert forbidden_paths(graph) == [[f"{PACKAGE}.cache.store", f"{PACKAGE}.training.run"]]


TRAINING = f"{PACKAGE}.training"
# what reporting renders comes to it as plain records: it reads no model, trainer or grid
REPORTING_MUST_NOT_REACH = {
    f"{TRAINING}.{name}" for name in ("grid", "engine", "trainer", "resume", "protocols", "job")
}


def reach(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, queue = set(), [start]
    while queue:
        for successor in graph.get(queue.pop(), ()):
            if successor not in seen:
                seen.add(successor)
                queue.append(successor)
    return seen


def test_reporting_reads_nothing_of_the_grid_engine(graph):
    assert reach(graph, f"{TRAINING}.reporting") & REPORTING_MUST_NOT_REACH == set()


def test_the_job_is_the_top_of_training_and_reaches_every_other_room_of_it(graph):
    rooms = {module for module in module_files() if module.startswith(f"{TRAINING}.")}
    importers = {importer for importer, targets in graph.items() if f"{TRAINING}.job" in targets}
    assert importers <= {TRAINING, f"{PACKAGE}.cli", f"{PACKAGE}.demo.job"}, importers
    assert rooms - {f"{TRAINING}.job", f"{TRAINING}.sweep"} <= reach(graph, f"{TRAINING}.job")
