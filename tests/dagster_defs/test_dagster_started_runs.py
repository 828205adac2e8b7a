"""Runs that Dagster starts (UI launches, re-executions, schedule ticks) run the graph and values
in their own run config, and their takes record exactly what made them: the same pixels as the
same graph and values submitted through Takeflow, whatever the node cache holds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dagster import DagsterRun, RunsFilter, build_schedule_context

from dagster_defs.compiler import job_name, run_config
from dagster_defs.definitions import build_definitions
from graph_runtime.canvas import CanvasGraph
from graph_runtime.sweeps import set_inputs
from graph_runtime.takes import Take
from graph_runtime.tasks import TaskStatus

EDITS = {"grain.seed": 9, "mix.opacity": 0.6, "sky.start_color": "#aa0000"}


def _submitted_take(runtime: Any, project: Any, graph: CanvasGraph, shot: str) -> Take:
    """The take of ``graph`` submitted through Takeflow's own API (the reference)."""
    record = runtime.runner.submit(graph, project_id="demo", shot=shot, user="artist")
    assert runtime.runner.wait(record.task_id, 60).status == TaskStatus.COMPLETED
    (take,) = project.takes.list(shot=shot)
    return take


def _only_take(project: Any, shot: str) -> Take:
    (take,) = project.takes.list(shot=shot)
    return take


def _pixels(take: Take) -> str:
    return take.outputs["image"].sha256


def _warm_cache_with_the_saved_canvas(runtime: Any, project: Any, saved: CanvasGraph) -> None:
    _submitted_take(runtime, project, saved, "warm/w01/sh001")


def test_a_ui_launch_with_edited_config_runs_and_records_its_own_values(
    runtime: Any, project: Any, demo_canvas: Path
) -> None:
    saved = CanvasGraph.model_validate_json(demo_canvas.read_text())
    _warm_cache_with_the_saved_canvas(runtime, project, saved)
    edited = set_inputs(saved, EDITS)
    plan = runtime.runner.plan(edited)
    job = build_definitions(runtime).get_repository_def().get_job(job_name(plan))

    # what the launchpad sends after the user edits the default config
    launched = job.execute_in_process(
        run_config=run_config(plan),
        tags={"takeflow/project": "demo", "takeflow/shot": "ui/u01/sh001"},
        instance=runtime.instance,
    )
    assert launched.success
    take = _only_take(project, "ui/u01/sh001")
    reference = _submitted_take(runtime, project, edited, "api/a01/sh001")

    assert _pixels(take) == _pixels(reference)  # the values in its config, not the saved ones
    assert take.metadata["graph_hash"] == plan.content_hash == reference.metadata["graph_hash"]
    assert take.metadata["inputs"]["grain"]["seed"] == 9
    assert take.metadata["inputs"]["sky"]["start_color"] == "#aa0000"
    # nodes whose values changed ran; only the unchanged logo may come from the cache
    assert set(take.metadata["cached_nodes"]) <= {"logo"}
    record = runtime.state.get(take.metadata["task_id"])
    assert CanvasGraph.model_validate(record.graph).content_hash() == plan.content_hash


def test_a_schedule_tick_after_the_canvas_ran_renders_its_own_inputs(
    runtime: Any, project: Any, demo_canvas: Path
) -> None:
    saved = CanvasGraph.model_validate_json(demo_canvas.read_text())
    _warm_cache_with_the_saved_canvas(runtime, project, saved)
    repo = build_definitions(runtime).get_repository_def()
    schedule = repo.get_schedule_def("demo__poster__nightly")
    with build_schedule_context(instance=runtime.instance) as context:
        (request,) = schedule.evaluate_tick(context).run_requests or []
    ran = repo.get_job(schedule.job_name).execute_in_process(
        run_config=request.run_config, tags=request.tags, instance=runtime.instance
    )
    assert ran.success
    take = _only_take(project, "ch01/sc01/sh020")
    overridden = set_inputs(saved, {"grain.seed": 7, "mix.opacity": 0.4})
    reference = _submitted_take(runtime, project, overridden, "api/a01/sh002")
    assert _pixels(take) == _pixels(reference) != _pixels(_only_take(project, "warm/w01/sh001"))
    assert take.metadata["graph_hash"] == runtime.runner.plan(overridden).content_hash
    assert take.metadata["inputs"]["grain"]["seed"] == 7
    assert take.metadata["schedule"] == "demo__poster__nightly"


def _reexecute(runtime: Any, job: Any, parent: DagsterRun) -> Any:
    """What Dagster does for "Re-execute all": the parent's run config and tags, and the
    re-execution tags."""
    tags = {
        **parent.tags,
        "dagster/parent_run_id": parent.run_id,
        "dagster/root_run_id": parent.root_run_id or parent.run_id,
        "dagster/is_resume_retry": "false",
    }
    return job.execute_in_process(
        run_config=parent.run_config, tags=tags, instance=runtime.instance
    )


def test_a_re_execution_reproduces_the_run_it_re_executes_as_a_new_task(
    runtime: Any, project: Any, demo_canvas: Path
) -> None:
    saved = CanvasGraph.model_validate_json(demo_canvas.read_text())
    _warm_cache_with_the_saved_canvas(runtime, project, saved)
    edited = set_inputs(saved, {"grain.seed": 11, "final.width": 96})
    first = _submitted_take(runtime, project, edited, "api/a01/sh003")
    parent_task = first.metadata["task_id"]
    (parent,) = runtime.instance.get_runs(RunsFilter(tags={"takeflow/task_id": parent_task}))
    job = build_definitions(runtime).get_repository_def().get_job(parent.job_name)

    result = _reexecute(runtime, job, parent)
    assert result.success
    second = next(t for t in project.takes.list(shot="api/a01/sh003") if t.number == 2)
    assert _pixels(second) == _pixels(first)
    assert second.metadata["graph_hash"] == first.metadata["graph_hash"]
    assert second.metadata["inputs"] == first.metadata["inputs"]
    # tags describe the run they are on: the new task's id, its parent named apart
    child = runtime.instance.get_run_by_id(result.run_id)
    new_task = second.metadata["task_id"]
    assert new_task != parent_task
    assert child.tags["takeflow/task_id"] == new_task
    assert child.tags["takeflow/parent_task_id"] == parent_task
    found = runtime.instance.get_runs(RunsFilter(tags={"takeflow/task_id": new_task}))
    assert [r.run_id for r in found] == [result.run_id]
    assert [
        r.run_id
        for r in runtime.instance.get_runs(RunsFilter(tags={"takeflow/task_id": parent_task}))
    ] == [parent.run_id]
    record = runtime.state.get(new_task)
    assert record.status == TaskStatus.COMPLETED and record.dagster_run_id == result.run_id
    # re-executing the re-execution: it copies the child's tags (its parent tag included)
    again = _reexecute(runtime, job, child)
    assert again.success
    third = next(t for t in project.takes.list(shot="api/a01/sh003") if t.number == 3)
    assert _pixels(third) == _pixels(first)
    grandchild = runtime.instance.get_run_by_id(again.run_id)
    assert third.metadata["task_id"] not in (parent_task, new_task)
    assert grandchild.tags["takeflow/task_id"] == third.metadata["task_id"]
    assert grandchild.tags["takeflow/parent_task_id"] == new_task
    assert json.dumps(record.graph, sort_keys=True) == json.dumps(
        runtime.state.get(parent_task).graph, sort_keys=True
    )


def test_a_launch_with_an_out_of_range_value_fails_naming_the_node(
    runtime: Any, project: Any, demo_canvas: Path
) -> None:
    saved = CanvasGraph.model_validate_json(demo_canvas.read_text())
    plan = runtime.runner.plan(saved)
    job = build_definitions(runtime).get_repository_def().get_job(job_name(plan))
    config = run_config(plan)
    config["ops"]["mix"]["config"]["inputs"]["opacity"] = 7.5  # blend's opacity is 0..1
    result = job.execute_in_process(
        run_config=config,
        tags={"takeflow/project": "demo", "takeflow/shot": "bad/b01/sh001"},
        instance=runtime.instance,
        raise_on_error=False,
    )
    assert not result.success
    assert project.takes.list(shot="bad/b01/sh001") == []
    (record,) = [
        r for r in runtime.state.list(status=TaskStatus.FAILED) if r.shot == "bad/b01/sh001"
    ]
    assert record.error is not None and record.error["code"] == "invalid_graph"
    (issue,) = record.error["errors"]
    assert (issue["node_id"], issue["port"]) == ("mix", "opacity")
    # one task for the run, though Dagster ran the independent branches after the failure
    run = runtime.instance.get_run_by_id(result.run_id)
    assert run.tags["takeflow/task_id"] == record.task_id


def test_runs_of_template_tasks_and_unsaved_graphs_can_be_re_executed(
    runtime: Any, project: Any
) -> None:
    from dagster_defs.definitions import LocationSource
    from graph_runtime.canvas import single_node_graph

    template_task = single_node_graph("noise_image", {"width": 24, "height": 16, "seed": 5})
    unsaved = CanvasGraph.model_validate(
        {
            "name": "sketch",
            "nodes": [
                {
                    "id": "a",
                    "template": "noise_image",
                    "inputs": {
                        "width": {"kind": "literal", "value": 32},
                        "height": {"kind": "literal", "value": 32},
                        "seed": {"kind": "literal", "value": 3},
                    },
                },
                {
                    "id": "b",
                    "template": "resize",
                    "inputs": {
                        "image": {"kind": "link", "node": "a", "output": "image"},
                        "width": {"kind": "literal", "value": 16},
                        "height": {"kind": "literal", "value": 16},
                    },
                },
            ],
        }
    )
    for shot, graph in (("tpl/t01/sh001", template_task), ("sk/s01/sh001", unsaved)):
        first = _submitted_take(runtime, project, graph, shot)
        (parent,) = runtime.instance.get_runs(
            RunsFilter(tags={"takeflow/task_id": first.metadata["task_id"]})
        )
        # the code location as `takeflow ui` loads it: no saved canvas has this shape
        repo = build_definitions(LocationSource.open(runtime.home.path)).get_repository_def()
        assert repo.has_job(parent.job_name), sorted(j.name for j in repo.get_all_jobs())
        job = build_definitions(runtime).get_repository_def().get_job(parent.job_name)
        assert _reexecute(runtime, job, parent).success
        second = next(t for t in project.takes.list(shot=shot) if t.number == 2)
        assert _pixels(second) == _pixels(first)
        assert second.metadata["inputs"] == first.metadata["inputs"]
