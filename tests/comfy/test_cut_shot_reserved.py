"""Only the assembler writes into a ``_cut`` shot: a task, a run, a ComfyUI prompt and
``takeflow run`` that target ``ch/sc/_cut`` (or a chapter's ``ch/_cut/_cut``) are refused with
``cut_shot_reserved`` naming ``shot_id`` and nothing is queued; an ``assemble_scene`` task
whose plan is for another cut shot is refused too. ``GET .../takes`` without a shot filter
does not list cuts (they are ``GET .../assemblies``'), with the cut shot as the filter it does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from graph_runtime.canvas import single_node_graph
from tests.comfy.client import txt2img

CUTS = ("ch01/sc01/_cut", "ch01/_cut/_cut")


def _tasks(client: TestClient[Any]) -> list[str]:
    return [t["task_id"] for t in client.get("/api/v1/functions/tasks").json()["tasks"]]


@pytest.mark.parametrize("shot", CUTS)
def test_ordinary_work_targeting_a_cut_shot_is_refused(
    app_client: TestClient[Any], shot: str
) -> None:
    client = app_client
    assert client.post("/api/v1/projects", json={"project_id": "film"}).status_code in (200, 201)
    before = _tasks(client)
    body = {"template_id": "number", "inputs": {"value": 1}, "project_id": "film"}
    graph = single_node_graph("number", {"value": 1}).model_dump(mode="json")
    for path, payload in (
        ("/api/v1/functions/tasks", {**body, "shot_id": shot}),
        ("/api/v1/runs", {"graph": graph, "project_id": "film", "shot_id": shot}),
        ("/api/v1/runs", {"graph": {**graph, "context": {"shot": shot}}, "project_id": "film"}),
    ):
        response = client.post(path, json=payload)
        assert response.status_code == 422, (path, response.text)
        error = response.json()
        assert error["code"] == "cut_shot_reserved" and error["field"] == "shot_id", error
        assert error["shot_id"] == shot and shot in error["message"]

    # the assembler's own template, with a plan for another cut shot
    other = {"scene": "ch09/sc09", "shot": "ch09/sc09/_cut", "shots": []}
    task = {"template_id": "assemble_scene", "inputs": {"plan": other}, "project_id": "film"}
    response = client.post("/api/v1/functions/tasks", json={**task, "shot_id": shot})
    assert response.status_code == 422 and response.json()["code"] == "cut_shot_reserved"

    extra = {"takeflow": {"project": "film", "shot": shot}}
    answer = client.post("/api/prompt", json={"prompt": txt2img(seed=3), "extra_data": extra})
    assert answer.status_code == 400, answer.text  # ComfyUI's refusal shape, our code inside
    assert answer.json()["error"]["details"] == "cut_shot_reserved"
    assert _tasks(client) == before  # nothing queued


def test_takeflow_run_into_a_cut_shot_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from server.cli import main

    path = tmp_path / "graph.json"
    path.write_text(single_node_graph("number", {"value": 3}).model_dump_json())
    home = str(tmp_path / "home")
    assert main(["--home", home, "run", str(path), "--shot", "ch01/sc01/_cut"]) == 2
    assert "[cut_shot_reserved]" in capsys.readouterr().err
