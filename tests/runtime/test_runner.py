"""The runner end to end on real parts: persistent Dagster instance, SQLite event log, git + LFS."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
from dagster import AssetKey, DagsterRunStatus
from PIL import Image

from graph_runtime.canvas import CanvasGraph, RunContext, single_node_graph
from graph_runtime.errors import GraphValidationError, ProjectNotFoundError
from graph_runtime.events import RecordingSink
from graph_runtime.registry import TemplateRegistry
from graph_runtime.tasks import TaskStatus
from graph_runtime.templates import FunctionTemplate
from nodes.builtin import TEMPLATES
from tests.conftest import load_graph

SHOT = "ch01/sc01/sh010"


def run(runtime: Any, graph: CanvasGraph, **kw: Any) -> tuple[Any, RecordingSink]:
    sink = RecordingSink()
    runtime.runner.add_sink(sink)
    record = runtime.runner.submit(graph, **kw)
    sink.wait_terminal(record.task_id, timeout=60)
    return runtime.runner.get(record.task_id), sink


def test_graph_run_makes_take_commit_dagster_run_and_materialization(
    runtime: Any, project: Any
) -> None:
    record, sink = run(runtime, load_graph("poster"), project_id="demo", shot=SHOT)
    assert record.status == TaskStatus.COMPLETED, record.error
    events = sink.for_task(record.task_id)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert events[0].type == "task.submitted" and events[-1].type == "task.completed"
    assert [e.type for e in events].index("take.created") < len(events) - 1
    states = [(e.data["node_id"], e.data["state"]) for e in events if e.type == "node.state"]
    assert ("final", "completed") in states and len(states) == 12
    assert events == runtime.state.read_task(record.task_id)  # stored durably, same order

    takes = project.takes.list(SHOT)
    assert [t.take_id for t in takes] == ["take_001"] and takes[0].active
    take = takes[0]
    assert take.metadata["task_id"] == record.task_id
    assert take.metadata["seeds"] == {"grain": 42}
    assert {t["node_id"] for t in take.metadata["templates"]} == {
        n.id for n in load_graph("poster").nodes
    }
    image = Image.open(project.abs(take.outputs["image"].path))
    assert image.size == (512, 512)

    commit = project.repo.recent_commits(1)[0]
    assert f"Takeflow-Task: {record.task_id}" in commit.message
    assert project.repo.is_lfs_pointer(take.outputs["image"].path)

    run_ = runtime.instance.get_run_by_id(record.dagster_run_id)
    assert run_.status == DagsterRunStatus.SUCCESS
    assert run_.tags["takeflow/task_id"] == record.task_id
    assert run_.tags["takeflow/project"] == "demo" and run_.tags["takeflow/shot"] == SHOT
    mats = runtime.instance.fetch_materializations(
        AssetKey(["takeflow", "demo", "ch01", "sc01", "sh010", "sh010.image"]), limit=5
    ).records
    assert len(mats) == 1
    meta = mats[0].asset_materialization.metadata
    assert meta["take_id"].value == "take_001" and meta["task_id"].value == record.task_id


def test_failing_template_names_node_and_template_and_leaves_no_take(
    runtime: Any, project: Any
) -> None:
    graph = CanvasGraph.model_validate(
        {
            "nodes": [
                {"id": "ok", "template": "solid_image"},
                {
                    "id": "boom",
                    "template": "fail",
                    "inputs": {"message": {"kind": "literal", "value": "kaput"}},
                },
            ]
        }
    )
    record, sink = run(runtime, graph, project_id="demo", shot=SHOT)
    assert record.status == TaskStatus.FAILED
    failed = sink.for_task(record.task_id)[-1]
    assert failed.type == "task.failed"
    assert failed.data["code"] == "template_failed"
    assert failed.data["node_id"] == "boom" and failed.data["template_id"] == "fail"
    assert failed.data["message"] == "node 'boom' (template 'fail') failed: RuntimeError: kaput"
    assert project.takes.list(SHOT) == []
    assert len(project.repo.recent_commits(10)) == 1  # only the project's first commit
    assert runtime.instance.get_run_by_id(record.dagster_run_id).status == DagsterRunStatus.FAILURE


def test_invalid_graph_and_unknown_project_store_nothing(runtime: Any) -> None:
    with pytest.raises(GraphValidationError):
        runtime.runner.submit(load_graph("invalid_everything"))
    with pytest.raises(ProjectNotFoundError, match="no project 'nope'"):
        runtime.runner.submit(load_graph("poster"), project_id="nope")
    assert runtime.state.list() == [] and runtime.state.last_id() == 0


def test_cancel_running_task_stops_at_next_progress_point(runtime: Any) -> None:
    graph = single_node_graph("delay", {"seconds": 20.0, "steps": 200})
    sink = RecordingSink()
    runtime.runner.add_sink(sink)
    record = runtime.runner.submit(graph)
    started = threading.Event()

    class StartWatch:
        def emit(self, event: Any) -> None:
            if event.task_id == record.task_id and event.type == "task.progress":
                started.set()

    runtime.runner.add_sink(StartWatch())
    assert started.wait(30)
    runtime.runner.cancel(record.task_id)
    end = sink.wait_terminal(record.task_id, timeout=10)
    assert end.type == "task.cancelled" and end.data["node_id"] == "node"
    progress = [e for e in sink.for_task(record.task_id) if e.type == "task.progress"]
    assert progress[-1].data["node_progress"] < 0.5
    assert runtime.runner.get(record.task_id).status == TaskStatus.CANCELLED


def test_cancel_queued_task(runtime: Any) -> None:
    blockers = [
        runtime.runner.submit(single_node_graph("delay", {"seconds": 1.0, "steps": 5}))
        for _ in range(2)
    ]
    queued = runtime.runner.submit(single_node_graph("number", {"value": 1}))
    assert runtime.runner.cancel(queued.task_id).status == TaskStatus.CANCELLED
    assert runtime.runner.wait(queued.task_id, 5).status == TaskStatus.CANCELLED
    for b in blockers:
        assert runtime.runner.wait(b.task_id, 30).status == TaskStatus.COMPLETED
    types = [e.type for e in runtime.state.read_task(queued.task_id)]
    assert types == ["task.submitted", "task.cancelled"]


def test_twenty_concurrent_tasks_on_one_shot_number_takes_without_gaps(
    runtime: Any, project: Any
) -> None:
    records = [
        runtime.runner.submit(
            single_node_graph("noise_image", {"width": 16, "height": 16, "seed": i}),
            project_id="demo",
            shot=SHOT,
        )
        for i in range(20)
    ]
    for r in records:
        assert runtime.runner.wait(r.task_id, 60).status == TaskStatus.COMPLETED
    takes = project.takes.list(SHOT)
    assert [t.number for t in takes] == list(range(1, 21))
    assert sorted(t.metadata["task_id"] for t in takes) == sorted(r.task_id for r in records)
    messages = "\n".join(c.message for c in project.repo.recent_commits(40))
    assert all(f"Takeflow-Task: {r.task_id}" in messages for r in records)


def test_resubmitting_a_graph_reuses_the_compiled_job(runtime: Any) -> None:
    for value in (1, 2, 3):
        record = runtime.runner.submit(single_node_graph("number", {"value": value}))
        assert runtime.runner.wait(record.task_id, 30).status == TaskStatus.COMPLETED
    assert runtime.runner.compiler.builds == 1


def test_unchanged_nodes_come_from_cache_and_only_changed_descendants_rerun(
    runtime: Any, project: Any
) -> None:
    calls: list[str] = []
    lock = threading.Lock()

    def counting(t: FunctionTemplate) -> FunctionTemplate:
        def fn(ctx: Any, inputs: Any) -> Any:
            with lock:
                calls.append(ctx.node_id)
            return t.fn(ctx, inputs)

        return FunctionTemplate(**{**t.__dict__, "fn": fn})

    runtime.runner.registry = TemplateRegistry([counting(t) for t in TEMPLATES])
    run(runtime, load_graph("poster"), project_id="demo", shot=SHOT)
    assert sorted(calls) == sorted(["title", "sky", "grain", "mix", "label", "final"])
    calls.clear()

    doc = load_graph("poster").model_dump(mode="json")
    doc["nodes"][0]["inputs"]["text"]["value"] = "CHANGED"  # title -> label -> final
    second, _ = run(runtime, CanvasGraph.model_validate(doc), project_id="demo", shot=SHOT)
    assert second.status == TaskStatus.COMPLETED
    assert sorted(calls) == ["final", "label", "title"]
    take = project.takes.list(task_id=second.task_id)[0]
    assert sorted(take.metadata["cached_nodes"]) == ["grain", "mix", "sky"]


def test_restart_marks_running_failed_and_requeues_queued(tmp_path: Path) -> None:
    from dagster_defs.runtime import open_runtime
    from graph_runtime.tasks import TaskRecord

    home = tmp_path / "home"
    rt = open_runtime(home, workers=0)
    graph = single_node_graph("number", {"value": 5}).model_dump(mode="json")
    rt.state.save(TaskRecord("task_running", graph, None, SHOT, "u", status=TaskStatus.RUNNING))
    rt.state.save(TaskRecord("task_queued", graph, None, SHOT, "u", status=TaskStatus.QUEUED))
    rt.close()

    rt = open_runtime(home, workers=1)
    try:
        interrupted = rt.runner.get("task_running")
        assert (
            interrupted.status == TaskStatus.FAILED and interrupted.error["code"] == "interrupted"
        )
        assert rt.state.read_task("task_running")[-1].data["code"] == "interrupted"
        assert rt.runner.wait("task_queued", 30).status == TaskStatus.COMPLETED
    finally:
        rt.close()


def test_run_context_defaults_come_from_the_graph(runtime: Any, project: Any) -> None:
    graph = single_node_graph(
        "solid_image",
        {"width": 8, "height": 8},
        context=RunContext(project="demo", shot="a/b/c", user="ana"),
    )
    record, _ = run(runtime, graph)
    assert record.project_id == "demo" and record.shot == "a/b/c" and record.user == "ana"
    meta = json.loads(Path(project.abs("03_Renders/a/b/c/takes/take_001/take.json")).read_text())
    assert meta["user_id"] == "ana" and meta["task_id"] == record.task_id


def test_many_threads_run_on_one_instance_with_settings_keys_without_deadlock(
    tmp_path: Path,
) -> None:
    """dagster.yaml carries settings (telemetry, nux); stock Dagster then deadlocks threads."""
    from dagster_defs.runtime import open_runtime

    rt = open_runtime(tmp_path / "home", workers=8)
    try:
        assert "nux:" in (rt.home.dagster_home / "dagster.yaml").read_text()
        records = [rt.runner.submit(single_node_graph("number", {"value": i})) for i in range(50)]
        done = [rt.runner.wait(r.task_id, 60).status for r in records]
        assert done == [TaskStatus.COMPLETED] * 50
        assert len(rt.instance.get_runs(limit=100)) == 50
    finally:
        rt.close()
