"""Assembled cuts in Dagster: the cut task is a Dagster run whose take materializes the scene's
cut asset, and the asset graph draws shot takes -> scene cut; a new active take, a new cut."""

from __future__ import annotations

from typing import Any

from dagster import AssetKey, DagsterRunStatus, RunsFilter

from dagster_defs.definitions import build_definitions
from graph_runtime.assembly import TEMPLATE_ID, AssemblyRequest, plan_assembly
from graph_runtime.canvas import CanvasGraph, single_node_graph
from graph_runtime.tasks import TaskStatus


def _lit(value: Any) -> dict[str, Any]:
    return {"kind": "literal", "value": value}


def _done(runtime: Any, graph: CanvasGraph, shot: str) -> Any:
    record = runtime.runner.submit(graph, project_id="demo", shot=shot)
    record = runtime.runner.wait(record.task_id, 60)
    assert record.status == TaskStatus.COMPLETED, record.error
    return record


def _still(runtime: Any, shot: str, colour: str) -> None:
    _done(
        runtime,
        single_node_graph("solid_image", {"width": 32, "height": 32, "color": colour}),
        shot,
    )


def _cut(runtime: Any, project: Any) -> Any:
    plan = plan_assembly(project, AssemblyRequest(scene="ch01/sc01", still_duration=0.25))
    return _done(runtime, single_node_graph(TEMPLATE_ID, {"plan": plan}), plan["shot"])


def _key(*path: str) -> AssetKey:
    return AssetKey(["takeflow", "demo", *path])


def test_cut_lineage_from_shot_takes_and_a_new_cut_per_active_take(
    runtime: Any, project: Any
) -> None:
    _still(runtime, "ch01/sc01/sh010", "#ff0000")
    clip = CanvasGraph.model_validate(
        {"name": "clip", "nodes": [
            {"id": "plate", "template": "solid_image",
             "inputs": {"width": _lit(32), "height": _lit(32), "color": _lit("#00ff00")}},
            {"id": "clip", "template": "frames_to_video",
             "inputs": {"images": {"kind": "link", "node": "plate", "output": "image"},
                        "frame_count": _lit(6), "fps": _lit(12.0)}},
        ]}
    )  # fmt: skip
    _done(runtime, clip, "ch01/sc01/sh020")
    first = _cut(runtime, project)

    cut_video = _key("ch01", "sc01", "_cut", "_cut.video")
    runs = runtime.instance.get_runs(RunsFilter(tags={"takeflow/task_id": first.task_id}))
    assert len(runs) == 1 and runs[0].status == DagsterRunStatus.SUCCESS
    mat = runtime.instance.get_latest_materialization_event(cut_video)
    assert mat is not None and mat.run_id == runs[0].run_id
    assert mat.asset_materialization.metadata["take_id"].value == "take_001"

    graph = build_definitions(runtime).resolve_asset_graph()
    shots = [
        _key("ch01", "sc01", "sh010", "sh010.image"),
        _key("ch01", "sc01", "sh020", "sh020.video"),
    ]
    for output in ("video", "manifest"):
        parents = graph.get(_key("ch01", "sc01", "_cut", f"_cut.{output}")).parent_keys
        assert sorted(parents, key=AssetKey.to_user_string) == shots
    assert graph.get(cut_video).group_name == "takeflow_demo"

    # a new take of sh010 made active: the next cut is take_002 and names it
    _still(runtime, "ch01/sc01/sh010", "#0000ff")
    project.takes.set_active("ch01/sc01/sh010", "take_002")
    second = _cut(runtime, project)
    take = project.takes.list(task_id=second.task_id)[0]
    assert (take.shot, take.take_id) == ("ch01/sc01/_cut", "take_002")
    assert take.metadata["inputs"]["node"]["plan"]["shots"][0]["take_id"] == "take_002"
    mat = runtime.instance.get_latest_materialization_event(cut_video)
    assert mat is not None and mat.asset_materialization.metadata["take_id"].value == "take_002"

    # a chapter's cut (ch01/_cut/_cut) has its own lineage
    plan = plan_assembly(project, AssemblyRequest(chapter="ch01", still_duration=0.25))
    _done(runtime, single_node_graph(TEMPLATE_ID, {"plan": plan}), plan["shot"])
    graph = build_definitions(runtime).resolve_asset_graph()
    parents = graph.get(_key("ch01", "_cut", "_cut", "_cut.video")).parent_keys
    assert sorted(parents, key=AssetKey.to_user_string) == shots
