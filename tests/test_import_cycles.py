"""No circle among the imports of ``dagster_defs/`` and ``server/``: module-level and
function-level imports, ``import_module`` with a literal name (``tests/imports.py``). Imports
under ``if TYPE_CHECKING:`` never run and are left out. A failure prints the circle."""

from __future__ import annotations

from collections.abc import Mapping, Set
from pathlib import Path

from tests.imports import ROOT, module_imports, module_name

PACKAGES = ("dagster_defs", "server")

# Known edges that close a circle, being removed by the runner refactor (issue 20): each is
# (importer, imported). The list only shrinks: an edge that is gone must be taken out of it.
KNOWN_EDGES: set[tuple[str, str]] = set()  # none left; an entry must name a real edge


def import_graph(root: Path = ROOT, packages: tuple[str, ...] = PACKAGES) -> dict[str, set[str]]:
    """Module -> the modules of ``packages`` it imports (at run time)."""
    paths = {
        module_name(p, root): p for pkg in packages for p in sorted((root / pkg).rglob("*.py"))
    }
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        edges = graph.setdefault(name, set())
        for imported in module_imports(path, root):
            if imported.type_only:
                continue
            target = imported.target  # ``from a import b``: module a.b, else a name in a
            while target and target not in paths:
                target = target.rpartition(".")[0]
            if target and target != name:
                edges.add(target)
    return graph


def circles(graph: Mapping[str, Set[str]]) -> list[list[str]]:
    """One circle (``a -> b -> ... -> a``) through each strongly connected set of modules."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components: list[list[str]] = []

    def visit(start: str) -> None:  # Tarjan, iterative
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in graph[node]:
                    components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_path_round(graph, set(c)) for c in components]


def _path_round(graph: Mapping[str, Set[str]], members: set[str]) -> list[str]:
    """A shortest circle through the first member, staying inside ``members``."""
    start = min(members)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(graph[node] & members):
                if child == start:
                    return [*paths[node], start]
                if child not in paths:
                    paths[child] = [*paths[node], child]
                    following.append(child)
        frontier = following
    raise AssertionError(f"no circle through {start}")  # pragma: no cover


def test_no_import_circle_in_dagster_defs_and_server() -> None:
    graph = import_graph()
    stale = sorted(edge for edge in KNOWN_EDGES if edge[1] not in graph.get(edge[0], set()))
    assert stale == [], f"these known edges are gone: take them out of KNOWN_EDGES: {stale}"
    for importer, imported in KNOWN_EDGES:
        graph[importer].discard(imported)
    found = [" -> ".join(circle) for circle in circles(graph)]
    assert found == [], "import circles:\n" + "\n".join(found)


def test_the_check_finds_a_circle_through_a_function_level_import(tmp_path: Path) -> None:
    pkg = tmp_path / "app"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from app.b import thing\n")
    (pkg / "b.py").write_text("def thing():\n    from app import c\n")
    (pkg / "c.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from app import b\n"
        "def f():\n    import importlib\n    importlib.import_module('app.a')\n"
    )
    (pkg / "d.py").write_text("from . import a\n")
    graph = import_graph(tmp_path, ("app",))
    assert graph["app.c"] == {"app.a"}  # the TYPE_CHECKING import is left out
    assert graph["app.d"] == {"app.a"}
    assert circles(graph) == [["app.a", "app.b", "app.c", "app.a"]]
