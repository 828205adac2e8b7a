"""The code location built from a Takeflow home: jobs, schedules and lineage of saved canvases."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from dagster import (
    AssetKey,
    DagsterRunStatus,
    RunsFilter,
    build_schedule_context,
    validate_run_config,
)

from dagster_defs.compiler import job_name
from dagster_defs.definitions import build_definitions
from graph_runtime.canvas import CanvasGraph
from graph_runtime.tasks import TaskStatus


def _key(*path: str) -> AssetKey:
    return AssetKey(["takeflow", "demo", *path])


def test_saved_canvas_is_a_job_named_like_takeflow_runs(runtime: Any, demo_canvas: Path) -> None:
    graph = CanvasGraph.model_validate_json(demo_canvas.read_text())
    name = job_name(runtime.runner.plan(graph))
    repo = build_definitions(runtime).get_repository_def()
    job = repo.get_job(name)
    assert job.tags == {
        "takeflow/graph": "poster",
        "takeflow/project": "demo",
        "takeflow/shot": "ch01/sc01/sh010",
        "takeflow/canvas": "poster",
        "takeflow/queue": "cpu",  # where a distributed-mode launch of it is queued
    }
    assert job.executor_def.name == "in_process"
    # a run started from Takeflow sits under that job, with its tags
    record = runtime.runner.submit(graph, project_id="demo", user="artist")
    assert runtime.runner.wait(record.task_id, 60).status == TaskStatus.COMPLETED
    runs = runtime.instance.get_runs(
        RunsFilter(job_name=name, tags={"takeflow/task_id": record.task_id})
    )
    assert len(runs) == 1 and runs[0].status == DagsterRunStatus.SUCCESS
    assert runs[0].tags["takeflow/project"] == "demo"
    assert runs[0].tags["takeflow/user"] == "artist"
    # the job's default config is the canvas as saved, so a launch from the UI runs it
    default = job.run_config_schema.config_type.fields["ops"].default_value
    assert default["grain"]["config"]["inputs"]["seed"] == 42


def test_asset_graph_draws_lineage_from_upload_to_takes(runtime: Any, demo_canvas: Path) -> None:
    graph = build_definitions(runtime).resolve_asset_graph()
    parents = {
        key.to_user_string(): sorted(p.to_user_string() for p in graph.get(key).parent_keys)
        for key in graph.get_all_asset_keys()
    }
    assert parents == {
        "takeflow/demo/01_Assets/logo.png": [],
        "takeflow/demo/poster/poster.logo": ["takeflow/demo/01_Assets/logo.png"],
        "takeflow/demo/poster/poster.sky": [],
        "takeflow/demo/poster/poster.grain": [],
        "takeflow/demo/poster/poster.mix": [
            "takeflow/demo/poster/poster.grain",
            "takeflow/demo/poster/poster.sky",
        ],
        "takeflow/demo/poster/poster.stamp": [
            "takeflow/demo/poster/poster.logo",
            "takeflow/demo/poster/poster.mix",
        ],
        "takeflow/demo/poster/poster.final": ["takeflow/demo/poster/poster.stamp"],
        # the canvas's own shot and the shot its schedule renders into; the lineage graph
        # draws the last part of a key, so each box names its canvas or shot
        "takeflow/demo/ch01/sc01/sh010/sh010.image": ["takeflow/demo/poster/poster.final"],
        "takeflow/demo/ch01/sc01/sh020/sh020.image": ["takeflow/demo/poster/poster.final"],
    }
    assert graph.get(_key("poster", "poster.stamp")).group_name == "takeflow_demo"


def test_schedule_tick_requests_a_run_that_becomes_a_take(
    runtime: Any, project: Any, demo_canvas: Path
) -> None:
    repo = build_definitions(runtime).get_repository_def()
    schedule = repo.get_schedule_def("demo__poster__nightly")
    assert (schedule.cron_schedule, schedule.execution_timezone) == ("0 2 * * *", "Europe/Paris")
    job = repo.get_job(schedule.job_name)

    with build_schedule_context(instance=runtime.instance) as context:
        result = schedule.evaluate_tick(context)
    (request,) = result.run_requests or []
    validate_run_config(job, request.run_config)
    ops = request.run_config["ops"]
    assert ops["grain"]["config"]["inputs"]["seed"] == 7  # the schedule's overrides
    assert ops["mix"]["config"]["inputs"]["opacity"] == 0.4
    assert ops["sky"]["config"]["inputs"]["start_color"] == "#1b2a6b"  # the rest as saved
    assert request.tags["takeflow/shot"] == "ch01/sc01/sh020"
    assert request.tags["takeflow/project"] == "demo"

    # what the daemon does with it: run the job; the runner adopts the run and makes a take
    run = job.execute_in_process(
        run_config=request.run_config, tags=request.tags, instance=runtime.instance
    )
    assert run.success
    (take,) = project.takes.list(shot="ch01/sc01/sh020")
    record = runtime.state.get(take.metadata["task_id"])
    assert record is not None and record.status == TaskStatus.COMPLETED
    assert record.dagster_run_id == run.run_id and record.user == "scheduler"
    assert "Takeflow-Task: " + record.task_id in project.repo.recent_commits(1)[0].message
    assert take.metadata["inputs"]["grain"]["seed"] == 7  # what the run used, not the saved 42
    assert take.metadata["seeds"]["grain"] == 7
    assert take.metadata["inputs"]["mix"]["opacity"] == 0.4


def test_runs_of_a_saved_canvas_materialize_its_nodes_and_takes(
    runtime: Any, project: Any, demo_canvas: Path
) -> None:
    """Every node asset of the canvas gets a materialization per run (so the lineage graph says
    what ran), and the take's has a project-relative path and a link through the API."""
    graph = CanvasGraph.model_validate_json(demo_canvas.read_text())
    for _ in range(2):
        record = runtime.runner.submit(graph, project_id="demo", user="artist")
        assert runtime.runner.wait(record.task_id, 60).status == TaskStatus.COMPLETED
    for node in ("logo", "sky", "grain", "mix", "stamp", "final"):
        events = runtime.instance.fetch_materializations(_key("poster", f"poster.{node}"), 10)
        assert len(events.records) == 2, node
        latest = events.records[0].asset_materialization
        assert latest.metadata["task_id"].value == record.task_id
    # the second run found every node in the cache, and says so
    assert latest.metadata["cached"].value is True
    take = (
        runtime.instance.fetch_materializations(_key("ch01", "sc01", "sh010", "sh010.image"), 1)
        .records[0]
        .asset_materialization
    )
    assert take.metadata["path"].value == "03_Renders/ch01/sc01/sh010/takes/take_002/image.png"
    assert take.metadata["url"].value == (
        "http://127.0.0.1:8470/api/v1/projects/demo/files/"
        "03_Renders/ch01/sc01/sh010/takes/take_002/image.png"
    )
    # a graph that is not a saved canvas (another shape) materializes takes only
    other = runtime.runner.submit(
        CanvasGraph.model_validate(
            {"name": "poster", "nodes": [{"id": "grain", "template": "noise_image"}]}
        ),
        project_id="demo",
        shot="ch09/sc01/sh001",
    )
    assert runtime.runner.wait(other.task_id, 60).status == TaskStatus.COMPLETED
    events = runtime.instance.fetch_materializations(_key("poster", "poster.grain"), 10)
    assert len(events.records) == 2


def test_broken_files_are_skipped_and_reported(
    runtime: Any, project: Any, demo_canvas: Path
) -> None:
    source = project.path / "02_Source_Creative"
    (source / "broken.json").write_text('{"nodes": [{"id": "a", "template": "no_such"}]}')
    (source / "typo.json").write_text("{not json")
    schedules = json.loads((source / "poster.schedules.json").read_text())
    schedules["schedules"].append({"name": "bad", "cron": "every day"})
    (source / "poster.schedules.json").write_text(json.dumps(schedules))

    defs = build_definitions(runtime)
    errors = json.loads(defs.metadata["load_errors"].value)
    assert any("broken.json" in e and "unknown template" in e.lower() for e in errors), errors
    assert any("typo.json" in e for e in errors)
    assert any("poster.json" in e and "not a cron string" in e for e in errors)
    # the good canvas still loads (its schedules are skipped together with the bad one)
    assert len(defs.get_repository_def().get_all_jobs()) >= 1


@pytest.mark.parametrize("value", ["every day", "61 * * * *"])
def test_bad_cron_is_refused(value: str) -> None:
    from dagster_defs.schedules import SavedSchedule, ScheduleError

    with pytest.raises(ValueError, match="not a cron string"):
        SavedSchedule(name="x", cron=value)
    assert issubclass(ScheduleError, Exception)


def test_canvases_sharing_node_ids_load_side_by_side(
    runtime: Any, project: Any, demo_canvas: Path
) -> None:
    from dagster_defs.compiler import run_config

    graph = json.loads(demo_canvas.read_text())
    graph["name"] = "poster-b"
    (demo_canvas.parent / "poster_b.json").write_text(json.dumps(graph))
    repo = build_definitions(runtime).get_repository_def()
    names = sorted(j.name for j in repo.get_all_jobs() if not j.name.startswith("__"))
    assert [n.split("__")[0] for n in names] == ["poster", "poster_b"]
    for name in names:
        plan = runtime.runner.compiler.plan_for_job(name)
        job = repo.get_job(name)
        # the run config the runner gives its own runs fits the location's job (re-execution)
        assert validate_run_config(job, run_config(plan))["ops"]["grain"]["config"]["inputs"]
        assert {n.name for n in job.graph.nodes} == {
            "logo",
            "sky",
            "grain",
            "mix",
            "stamp",
            "final",
            "takeflow_takes",
        }


def test_canvases_saved_by_the_server_are_jobs_too(runtime: Any, project: Any) -> None:
    from tests.dagster_defs.conftest import FIXTURES, save_demo_canvas

    save_demo_canvas(project)
    (project.path / "02_Source_Creative" / "poster.json").unlink()
    folder = project.path / "02_Source_Creative" / "canvases"
    folder.mkdir()
    graph = json.loads((FIXTURES / "poster.json").read_text())
    (folder / "poster.takeflow.json").write_text(json.dumps(graph))
    (project.path / "02_Source_Creative" / "poster.schedules.json").rename(
        folder / "poster.schedules.json"
    )
    repo = build_definitions(runtime).get_repository_def()
    assert [j.name.split("__")[0] for j in repo.get_all_jobs() if j.name[0] != "_"] == ["poster"]
    assert [s.name for s in repo.schedule_defs] == ["demo__poster__nightly"]


def test_a_canvas_symlinked_from_outside_the_project_is_not_loaded(
    runtime: Any, project: Any, demo_canvas: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "elsewhere.json"
    graph = json.loads(demo_canvas.read_text())
    graph["name"] = "smuggled"
    outside.write_text(json.dumps(graph))
    (demo_canvas.parent / "smuggled.json").symlink_to(outside)
    names = [j.name for j in build_definitions(runtime).get_repository_def().get_all_jobs()]
    assert any(n.startswith("poster__") for n in names)
    assert not any(n.startswith("smuggled__") for n in names), names
