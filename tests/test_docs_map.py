"""``docs/runner-design.md``'s module map follows the code: every module of ``dagster_defs/``,
``stores/`` and ``server/`` listed, none that is gone, each line count within ~10%
(``scripts/module_map.py`` writes the map and holds the check)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("module_map", ROOT / "scripts" / "module_map.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


module_map = _load_script()


@pytest.fixture(scope="module")
def modules() -> list[Any]:
    return module_map.scan()


def test_the_runner_design_module_map_follows_the_code(modules: list[Any]) -> None:
    found = module_map.problems(module_map.DOC.read_text(encoding="utf-8"), modules)
    assert not found, "docs/runner-design.md's module map is stale:\n  " + "\n  ".join(
        [*found, f"fix: {module_map.FIX}"]
    )


def _doc(modules: list[Any]) -> str:
    return f"# Runner design\n\nprose\n\n{module_map.render(modules)}\n\nmore prose\n"


def test_the_check_finds_a_module_missing_from_the_map(modules: list[Any]) -> None:
    doc = _doc([m for m in modules if m.path != "dagster_defs/lifecycle.py"])
    assert module_map.problems(doc, modules) == [
        "dagster_defs/lifecycle.py is missing from the map"
    ]


def test_the_check_finds_a_listed_module_that_is_gone(modules: list[Any]) -> None:
    gone = module_map.Module("dagster_defs/manager.py", 120, "Everything else.")
    assert module_map.problems(_doc([*modules, gone]), modules) == [
        "dagster_defs/manager.py is in the map but no longer exists"
    ]


def test_the_check_finds_a_count_off_by_more_than_ten_percent(modules: list[Any]) -> None:
    def listing(share: float) -> list[Any]:
        """The map with ``stores/postgres/state.py``'s count scaled by ``share``."""
        return [
            module_map.Module(m.path, round(m.lines * share), m.purpose)
            if m.path == "stores/postgres/state.py"
            else m
            for m in modules
        ]

    lines = {m.path: m.lines for m in modules}["stores/postgres/state.py"]
    assert module_map.problems(_doc(listing(0.85)), modules) == [
        f"stores/postgres/state.py: the map says {round(lines * 0.85)} lines, it has {lines}"
    ]
    assert module_map.problems(_doc(listing(1.08)), modules) == []


def test_the_check_needs_the_markers(modules: list[Any]) -> None:
    assert module_map.problems("# Runner design\n", modules) == [
        f"no module map between {module_map.START} and {module_map.END}"
    ]


def test_write_replaces_only_the_map(tmp_path: Path, modules: list[Any]) -> None:
    doc = tmp_path / "runner-design.md"
    doc.write_text(f"before\n\n{module_map.START}\n| `old.py` | 1 | |\n{module_map.END}\n\nafter\n")
    module_map.write(doc, modules)
    text = doc.read_text()
    assert text.startswith("before\n\n") and text.endswith("\n\nafter\n")
    assert "old.py" not in text
    assert module_map.problems(text, modules) == []


@pytest.mark.parametrize(
    ("docstring", "sentence"),
    [
        ("One thing.\n\nMore.", "One thing."),
        ("Reads ``a.json``, e.g. more. Then the rest.", "Reads `a.json`, e.g. more."),
        ("Spans\ntwo lines. Second.", "Spans two lines."),
        ("Ends with ``code``.", "Ends with `code`."),
        ("A | B choice", "A \\| B choice"),
        (None, "(no module docstring)"),
    ],
)
def test_the_purpose_is_the_docstrings_first_sentence(docstring: str | None, sentence: str) -> None:
    assert module_map.first_sentence(docstring) == sentence
