"""The package's modules import each other without a circle.

A circle (a imports b imports ... a) means no module of it can be read, tested or changed
without the others (issue 29: the ten files of ``model/`` formed one). The graph is read from
the source, every import statement anywhere in a module (also those under ``TYPE_CHECKING`` and
inside functions), each edge to the module it names; a package's ``__init__`` re-exports are
edges too. Edges from a package's ``__init__`` to its own submodules are left out (that is
how a package presents its parts; the submodules must not import the ``__init__`` back).
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

SRC = Path(__file__).resolve().parents[1] / "src"


def _modules() -> dict[str, Path]:
    found = {}
    for path in (SRC / "sparsevae").rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def import_graph() -> nx.DiGraph:
    """Module -> the package modules it imports (by name)."""
    modules = _modules()
    graph = nx.DiGraph()
    graph.add_nodes_from(modules)
    for name, path in modules.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package[: len(package) - node.level + 1]
                    stem = ".".join(base + ([node.module] if node.module else []))
                else:
                    stem = node.module or ""
                targets = [f"{stem}.{alias.name}" for alias in node.names] + [stem]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            for target in targets:
                if target in modules and target != name:
                    graph.add_edge(name, target)
                    break  # `from pkg import sub` names sub, not pkg as well
    return graph


def _own_parts(graph: nx.DiGraph) -> nx.DiGraph:
    pruned = graph.copy()
    for source, target in graph.edges:
        if _is_init(source) and target.startswith(source + "."):
            pruned.remove_edge(source, target)
    return pruned


def _is_init(name: str) -> bool:
    return (_modules()[name]).name == "__init__.py"


def test_the_graph_is_read():
    graph = import_graph()
    assert graph.has_edge("sparsevae.model._model", "sparsevae.module")
    assert graph.number_of_edges() > 50


def test_no_import_circle_in_the_package():
    cycles = list(nx.simple_cycles(_own_parts(import_graph())))
    assert not cycles, "import circles:\n" + "\n".join(" -> ".join(c + c[:1]) for c in cycles[:10])
