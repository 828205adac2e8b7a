"""Continuity in Dagster: a take made from a ``load_take`` node has the take it read upstream
in the asset graph (from the project's takes, and from a saved canvas's node), and its
materialization names the take it read."""

from __future__ import annotations

import json
from typing import Any

from dagster import AssetKey

from dagster_defs.definitions import build_definitions
from graph_runtime.canvas import CanvasGraph, single_node_graph
from graph_runtime.tasks import TaskStatus

SHOT_A, SHOT_B = "ch01/sc01/sh010", "ch01/sc01/sh020"


def _lit(value: Any) -> dict[str, Any]:
    return {"kind": "literal", "value": value}


def _key(*path: str) -> AssetKey:
    return AssetKey(["takeflow", "demo", *path])


def _done(runtime: Any, graph: CanvasGraph, shot: str) -> Any:
    record = runtime.runner.submit(graph, project_id="demo", shot=shot)
    record = runtime.runner.wait(record.task_id, 60)
    assert record.status == TaskStatus.COMPLETED, record.error
    return record


def _continuity(shot: str = SHOT_A) -> dict[str, Any]:
    return {"name": "next_shot", "context": {"shot": SHOT_B}, "nodes": [
        {"id": "prev", "template": "load_take", "inputs": {"shot": _lit(shot)}},
        {"id": "small", "template": "resize",
         "inputs": {"image": {"kind": "link", "node": "prev", "output": "image"},
                    "width": _lit(4), "height": _lit(4)}},
    ]}  # fmt: skip


def _parents(graph: Any, key: AssetKey) -> list[str]:
    return sorted(p.to_user_string() for p in graph.get(key).parent_keys)


def test_a_take_read_by_load_take_is_upstream_of_the_take_it_made(
    runtime: Any, project: Any
) -> None:
    _done(runtime, single_node_graph("solid_image", {"width": 8, "height": 8}), SHOT_A)
    record = _done(runtime, CanvasGraph.model_validate(_continuity()), SHOT_B)

    graph = build_definitions(runtime).resolve_asset_graph()
    source = _key("ch01", "sc01", "sh010", "sh010.image")
    assert _parents(graph, _key("ch01", "sc01", "sh020", "sh020.image")) == [
        source.to_user_string()
    ]
    assert graph.get(source).group_name == "takeflow_demo"

    mat = runtime.instance.get_latest_materialization_event(
        _key("ch01", "sc01", "sh020", "sh020.image")
    )
    assert mat is not None
    (named,) = mat.asset_materialization.metadata["source_takes"].value
    take_a = project.takes.get(SHOT_A, "take_001")
    assert named == {"shot": SHOT_A, "take_id": "take_001", "output": "image",
                     "sha256": take_a.outputs["image"].sha256,
                     "file": take_a.outputs["image"].path}  # fmt: skip
    assert project.takes.list(task_id=record.task_id)[0].shot == SHOT_B


def test_a_saved_canvas_load_take_node_depends_on_the_shot_it_reads(
    runtime: Any, project: Any
) -> None:
    _done(runtime, single_node_graph("solid_image", {"width": 8, "height": 8}), SHOT_A)
    canvas = project.path / "02_Source_Creative" / "next_shot.json"
    canvas.write_text(json.dumps(_continuity()))
    graph = build_definitions(runtime).resolve_asset_graph()
    # active resolves to take_001, whose media output is its image
    assert _parents(graph, _key("next_shot", "next_shot.prev")) == [
        _key("ch01", "sc01", "sh010", "sh010.image").to_user_string()
    ]
    assert _parents(graph, _key("next_shot", "next_shot.small")) == [
        _key("next_shot", "next_shot.prev").to_user_string()
    ]
