"""What a module imports, read from its source (for the layering and import-circle tests).

An import is an ``import`` / ``from ... import`` statement anywhere in the module (also inside
functions), a call of ``import_module`` / ``importlib.import_module`` / ``__import__`` with a
literal name, or the loading of an entry-point group (``entry_points(group=...)`` with a literal
or a module-level constant), which imports the targets ``pyproject.toml`` publishes into it.
"""

from __future__ import annotations

import ast
import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMPORT_FUNCTIONS = {"import_module", "__import__"}


@dataclass(frozen=True)
class Import:
    target: str  # the dotted name imported (for ``from a import b``: ``a.b``, may be a name in a)
    line: int
    via: str  # "import" | "import_module" | "entry point <group>"
    type_only: bool  # under ``if TYPE_CHECKING:``: never runs

    @property
    def package(self) -> str:
        return self.target.split(".")[0]


@cache
def entry_point_targets(pyproject: Path = ROOT / "pyproject.toml") -> dict[str, tuple[str, ...]]:
    """Entry-point group -> the modules published into it (``module:attr`` -> ``module``)."""
    groups = tomllib.loads(pyproject.read_text())["project"].get("entry-points", {})
    return {
        group: tuple(sorted({value.split(":")[0].strip() for value in targets.values()}))
        for group, targets in groups.items()
    }


def module_name(path: Path, root: Path = ROOT) -> str:
    """``root/a/b.py`` -> ``a.b`` (a file outside ``root``: its stem)."""
    if not path.is_relative_to(root):
        return path.stem
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_checking_nodes(tree: ast.Module) -> set[int]:
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = test.id if isinstance(test, ast.Name) else getattr(test, "attr", None)
            if name == "TYPE_CHECKING":
                inside |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return inside


def _constants(tree: ast.Module) -> dict[str, str]:
    """Module-level ``NAME = "text"`` assignments."""
    found = {}
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and isinstance(stmt.value, ast.Constant):
            for target in stmt.targets:
                if isinstance(target, ast.Name) and isinstance(stmt.value.value, str):
                    found[target.id] = stmt.value.value
    return found


def _called_name(call: ast.Call) -> str | None:
    func = call.func
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def module_imports(path: Path, root: Path = ROOT) -> list[Import]:
    """Every import of the module at ``path`` (relative imports made absolute)."""
    tree = ast.parse(path.read_text(), str(path))
    type_only = _type_checking_nodes(tree)
    constants = _constants(tree)
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[Import] = []
    for node in ast.walk(tree):
        only = id(node) in type_only
        if isinstance(node, ast.Import):
            found += [Import(a.name, node.lineno, "import", only) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join([*parts, *([node.module] if node.module else [])])
            found += [Import(f"{base}.{a.name}", node.lineno, "import", only) for a in node.names]
        elif isinstance(node, ast.Call):
            called = _called_name(node)
            if called in IMPORT_FUNCTIONS and node.args:
                first = node.args[0]
                if isinstance(first, ast.Constant) and isinstance(first.value, str):
                    found.append(Import(first.value, node.lineno, "import_module", only))
            elif called == "entry_points":
                group = next((k.value for k in node.keywords if k.arg == "group"), None)
                text = None
                if isinstance(group, ast.Constant) and isinstance(group.value, str):
                    text = group.value
                elif isinstance(group, ast.Name):
                    text = constants.get(group.id)
                for target in entry_point_targets().get(text or "", ()):
                    found.append(Import(target, node.lineno, f"entry point {text}", only))
    return found
