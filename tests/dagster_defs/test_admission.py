"""One admission path: each submission validates its graph exactly once, and only validation
can make an execution plan."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from graph_runtime.canvas import single_node_graph
from graph_runtime.tasks import TaskStatus
from graph_runtime.validation import ExecutionPlan
from tests.conftest import FIXTURES

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("graph_runtime", "nodes", "stores", "dagster_defs", "server", "ui_bridge")


@pytest.fixture
def client(runtime: Any, project: Any) -> Iterator[TestClient[Any]]:
    from server.app import create_app

    with TestClient(create_app(runtime)) as test_client:
        yield test_client


def test_admission_is_the_only_caller_of_validate_graph() -> None:
    callers = [
        str(path.relative_to(REPO))
        for package in PACKAGES
        for path in (REPO / package).rglob("*.py")
        if "validate_graph(" in path.read_text() and path.name != "validation.py"
    ]
    assert callers == ["dagster_defs/admission.py"]


def test_only_validation_makes_a_plan(runtime: Any) -> None:
    plan = runtime.runner.plan(single_node_graph("number", {"value": 1}))
    with pytest.raises(TypeError, match="made by validate_graph only"):
        ExecutionPlan(plan.graph, plan.nodes, plan.terminal, "x", "y")


def test_a_task_a_run_and_a_batch_are_each_validated_once(
    client: TestClient[Any], runtime: Any, validations: list[str]
) -> None:
    task = client.post(
        "/api/v1/functions/tasks",
        json={"template_id": "solid_image", "inputs": {"width": 4, "height": 4},
              "project_id": "demo"},
    )  # fmt: skip
    assert task.status_code == 200, task.text
    assert validations == ["solid_image"]

    validations.clear()
    graph = json.loads((FIXTURES / "graphs" / "poster.json").read_text())
    run = client.post("/api/v1/runs", json={"graph": graph, "project_id": "demo"})
    assert run.status_code == 200, run.text
    assert validations == ["poster"]

    validations.clear()
    batch = client.post(
        "/api/v1/functions/batches",
        json={"tasks": [{"template_id": "number", "inputs": {"value": i}} for i in range(3)]},
    )
    assert batch.status_code == 200, batch.text
    assert validations == ["number"] * 3
    for task_id in [task.json()["task_id"], run.json()["task_id"], *batch.json()["task_ids"]]:
        assert runtime.runner.wait(task_id, 60).status == TaskStatus.COMPLETED
    assert validations == ["number"] * 3  # the runner never validates again


def test_a_sweep_validates_each_combination_once(
    client: TestClient[Any], runtime: Any, validations: list[str]
) -> None:
    graph = single_node_graph("noise_image", {"width": 8, "height": 8, "seed": 1})
    sweep = {"values": {"node.seed": [1, 2, 3]}}
    response = client.post(
        "/api/v1/functions/batches",
        json={"graph": graph.model_dump(mode="json"), "sweep": sweep, "project_id": "demo"},
    )
    assert response.status_code == 200, response.text
    assert len(validations) == 3
    for task_id in response.json()["task_ids"]:
        assert runtime.runner.wait(task_id, 60).status == TaskStatus.COMPLETED
    assert len(validations) == 3


def test_the_cli_validates_once(tmp_path: Path, validations: list[str]) -> None:
    from server.cli import main

    path = tmp_path / "graph.json"
    path.write_text(single_node_graph("number", {"value": 3}).model_dump_json())
    assert main(["--home", str(tmp_path / "home"), "run", str(path)]) == 0
    assert validations == ["number"]
