"""The layers import one way: ``graph_runtime`` (pure) <- ``nodes``, ``stores``, ``ui_bridge`` <-
``dagster_defs`` <- ``server``. Checked on the source: every ``import`` (also inside functions),
``import_module("...")`` with a literal name, and entry-point groups loaded (``tests/imports.py``).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.imports import ROOT, Import, entry_point_targets, module_imports

FORBIDDEN = {
    "graph_runtime": {
        "dagster", "litestar", "git", "torch", "diffusers",
        "stores", "nodes", "dagster_defs", "server", "ui_bridge",
    },
    "nodes": {"stores", "dagster_defs", "server"},
    "stores": {"dagster_defs", "server", "nodes"},
    "ui_bridge": {"dagster_defs", "server", "stores"},
    "dagster_defs": {"server"},
}  # fmt: skip

# Plug-in doors, the one stated way a layer reaches code above it: it loads an entry-point group
# it defines, and packs (``nodes`` publishes the built-ins; third-party packs the same way)
# register into it in their pyproject.toml. Loading the group counts as importing every target;
# it is allowed only for the group and layer named here.
PLUGIN_DOORS = {"takeflow.templates": "graph_runtime", "takeflow.services": "graph_runtime"}


def imported_packages(source: Path) -> set[tuple[str, int]]:
    """Top-level package of every import in a module, with its line."""
    return {(i.package, i.line) for i in module_imports(source)}


def through_a_door(package: str, imported: Import) -> bool:
    group = imported.via.removeprefix("entry point ")
    return imported.via.startswith("entry point ") and PLUGIN_DOORS.get(group) == package


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_a_layer_imports_nothing_above_it(package: str) -> None:
    modules = sorted((ROOT / package).rglob("*.py"))
    assert modules, f"no modules found under {package}/"
    wrong = [
        f"{module.relative_to(ROOT)}:{i.line} imports {i.target} ({i.via})"
        for module in modules
        for i in sorted(module_imports(module), key=lambda i: (i.line, i.target))
        if i.package in FORBIDDEN[package] and not through_a_door(package, i)
    ]
    assert wrong == []


def test_every_plug_in_door_is_published() -> None:
    assert set(PLUGIN_DOORS) <= set(entry_point_targets())


def test_the_check_sees_imports_inside_functions(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("import os\n\ndef f():\n    from stores.projects import Project\n")
    assert imported_packages(module) == {("os", 1), ("stores", 4)}


def test_the_check_sees_import_module_and_entry_points(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text(
        "import importlib\nfrom importlib import import_module\n"
        "from importlib.metadata import entry_points\n"
        "GROUP = 'takeflow.templates'\n\n"
        "def f(name):\n"
        "    import_module('nodes.builtin')\n"
        "    importlib.import_module('dagster_defs.runtime')\n"
        "    __import__('server.app')\n"
        "    import_module(name)\n"  # not a literal: the caller's choice, not seen
        "    entry_points(group=GROUP)\n"
        "    entry_points(group='takeflow.services')\n"
    )
    seen = {(i.target, i.line, i.via) for i in module_imports(module, tmp_path)}
    assert {
        ("nodes.builtin", 7, "import_module"),
        ("dagster_defs.runtime", 8, "import_module"),
        ("server.app", 9, "import_module"),
        ("nodes.builtin", 11, "entry point takeflow.templates"),
        ("nodes.diffusion", 11, "entry point takeflow.templates"),
        ("nodes.diffusion.factory", 12, "entry point takeflow.services"),
    } <= seen
    assert not any(i.line == 10 for i in module_imports(module, tmp_path))
    # a core module doing this is refused, except through its stated doors
    wrong = [i for i in module_imports(module, tmp_path) if i.package in FORBIDDEN["graph_runtime"]]
    assert [i.line for i in wrong if not through_a_door("graph_runtime", i)] == [7, 8, 9]


SQL = re.compile(r"^\s*(SELECT|INSERT\s+INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|CREATE\s+TABLE)\b")


def sql_literals(source: Path) -> list[int]:
    """Lines of string literals in ``source`` that are SQL statements."""
    tree = ast.parse(source.read_text(), str(source))
    return [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL.match(node.value)
    ]


@pytest.mark.parametrize(
    "package", ["graph_runtime", "nodes", "dagster_defs", "server", "ui_bridge"]
)
def test_sql_lives_in_stores_only(package: str) -> None:
    found = [
        f"{source.relative_to(ROOT)}:{line}"
        for source in sorted((ROOT / package).rglob("*.py"))
        for line in sql_literals(source)
    ]
    assert found == [], f"SQL outside stores/ (move it behind a store): {found}"


def test_the_sql_check_sees_a_statement(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text('Q = "SELECT record FROM takeflow_tasks"\nX = "select a value"\n')
    assert sql_literals(module) == [1]


def test_every_commit_goes_through_the_commit_queue() -> None:
    """``project.history.commit`` (git itself) is called by the commit queue only, so every
    commit gets its backlog, its health and, distributed, the per-project git lock."""
    callers = [
        f"{source.relative_to(ROOT)}:{node.lineno}"
        for package in ("dagster_defs", "server", "nodes", "ui_bridge")
        for source in sorted((ROOT / package).rglob("*.py"))
        for node in ast.walk(ast.parse(source.read_text()))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "commit"
        and isinstance(node.func.value, ast.Attribute)
        and node.func.value.attr == "history"
    ]
    assert [c.split(":")[0] for c in callers] == ["dagster_defs/commits.py"], callers
