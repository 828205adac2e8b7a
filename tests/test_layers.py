"""The layers import one way: ``graph_runtime`` (pure) <- ``nodes``, ``stores``, ``ui_bridge`` <-
``dagster_defs`` <- ``server``. Checked on the source (every ``import``, also inside functions)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
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


def imported_packages(source: Path) -> set[tuple[str, int]]:
    """Top-level package of every absolute import in a module, with its line."""
    found = set()
    for node in ast.walk(ast.parse(source.read_text(), str(source))):
        if isinstance(node, ast.Import):
            found |= {(alias.name.split(".")[0], node.lineno) for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add((node.module.split(".")[0], node.lineno))
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_a_layer_imports_nothing_above_it(package: str) -> None:
    modules = sorted((ROOT / package).rglob("*.py"))
    assert modules, f"no modules found under {package}/"
    wrong = [
        f"{module.relative_to(ROOT)}:{line} imports {name}"
        for module in modules
        for name, line in sorted(imported_packages(module))
        if name in FORBIDDEN[package]
    ]
    assert wrong == []


def test_the_check_sees_imports_inside_functions(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("import os\n\ndef f():\n    from stores.projects import Project\n")
    assert imported_packages(module) == {("os", 1), ("stores", 4)}
