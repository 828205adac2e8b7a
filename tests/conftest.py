"""Shared fixtures: every test gets its own Takeflow home, real Dagster instance and git repos."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from graph_runtime.canvas import CanvasGraph

FIXTURES = Path(__file__).parent / "fixtures"
# real PostgreSQL / Redis servers for the distributed-mode tests (pg_server, pg_url, redis_srv)
pytest_plugins = ["tests.services"]


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "takeflow-home"
    monkeypatch.setenv("TAKEFLOW_HOME", str(home))
    return home


@pytest.fixture
def runtime(_isolated_home: Path) -> Iterator[object]:
    from dagster_defs.runtime import open_runtime

    rt = open_runtime(_isolated_home, workers=2)
    try:
        yield rt
    finally:
        rt.close()


@pytest.fixture
def project(runtime: object) -> object:
    return runtime.projects.create("demo", "Demo project")  # type: ignore[attr-defined]


def load_graph(name: str) -> CanvasGraph:
    """A canvas fixture from tests/fixtures/graphs/<name>.json."""
    return CanvasGraph.model_validate(
        json.loads((FIXTURES / "graphs" / f"{name}.json").read_text())
    )


@pytest.fixture
def validations(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every ``validate_graph`` call, by graph name (admission is its only caller)."""
    import dagster_defs.admission as admission_module
    from graph_runtime.validation import validate_graph

    calls: list[str] = []

    def counting(graph: Any, registry: Any, **options: Any) -> Any:
        calls.append(graph.name)
        return validate_graph(graph, registry, **options)

    monkeypatch.setattr(admission_module, "validate_graph", counting)
    return calls
