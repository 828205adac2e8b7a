"""A fresh demo home: the code location lists its example canvases as jobs, and the sample
schedule (stopped until someone starts it)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from dagster import DefaultScheduleStatus

from dagster_defs.compiler import job_name
from dagster_defs.definitions import build_definitions, load_canvases
from dagster_defs.runtime import Runtime, open_runtime
from graph_runtime.tasks import TaskStatus
from server.demo import DEMO_PROJECT, ensure_demo_project


@pytest.fixture
def demo_runtime(tmp_path: Path) -> Runtime:
    runtime = open_runtime(tmp_path / "home", workers=1)
    ensure_demo_project(runtime)
    yield runtime  # type: ignore[misc]
    runtime.close()


def test_fresh_demo_home_lists_two_jobs_and_the_sample_schedule(demo_runtime: Runtime) -> None:
    errors: list[str] = []
    canvases = {c.name: c for c in load_canvases(demo_runtime, errors)}
    assert errors == []
    assert {"controlnet", "dream", "hires_fix", "inpaint", "lora", "outpaint", "poster"} <= set(
        canvases
    )
    continuity = [n.template.id for n in canvases["next_shot"].plan.nodes]  # two shots in a row
    assert continuity == ["load_take", "extract_frame", "image_to_video"]
    assert canvases["shot_video"].graph.context.shot == "ch01/sc01/sh010"
    guided = {n.template.id for n in canvases["controlnet"].plan.nodes}
    assert {"canny", "controlnet", "image_generation"} <= guided
    hires = [n.template.id for n in canvases["hires_fix"].plan.nodes]
    assert {"upscale_with_model", "scale_image", "image_to_image"} <= set(hires)
    templates = {n.template.id for n in canvases["dream"].plan.nodes}
    assert "image_generation" in templates
    assert canvases["dream"].plan.node("generate").literals["model"] == "demo"
    assert all(
        n.template.resources.gpu is False for n in canvases["poster"].plan.nodes
    )  # the CPU canvas uses builtin templates only

    defs = build_definitions(demo_runtime)
    jobs = {j.name for j in defs.jobs or []}
    assert jobs == {job_name(c.plan) for c in canvases.values()}
    (schedule,) = list(defs.schedules or [])
    assert schedule.name == f"{DEMO_PROJECT}__poster__nightly"
    assert schedule.cron_schedule == "0 2 * * *"
    assert schedule.default_status == DefaultScheduleStatus.STOPPED
    assert schedule.job_name == job_name(canvases["poster"].plan)


def test_example_canvases_are_committed_and_kept_on_the_next_start(
    demo_runtime: Runtime,
) -> None:
    project = demo_runtime.projects.get(DEMO_PROJECT)
    log = subprocess.run(
        ["git", "log", "--format=%s", "--name-only", "-1"],
        cwd=project.path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert log.startswith("Add example canvases")
    assert "02_Source_Creative/canvases/poster.schedules.json" in log
    edited = project.path / "02_Source_Creative" / "canvases" / "poster.takeflow.json"
    edited.write_text(edited.read_text().replace("TAKEFLOW", "MY TITLE"))
    ensure_demo_project(demo_runtime)  # an existing demo project is left as it is
    assert "MY TITLE" in edited.read_text()


@pytest.mark.timeout(60)
def test_the_cpu_example_runs_into_a_take(demo_runtime: Runtime) -> None:
    canvas = next(c for c in load_canvases(demo_runtime, []) if c.name == "poster")
    record = demo_runtime.runner.submit(canvas.graph, project_id=DEMO_PROJECT)
    done = demo_runtime.runner.wait(record.task_id, timeout=45)
    assert done.status == TaskStatus.COMPLETED, done.error
    takes = demo_runtime.projects.get(DEMO_PROJECT).takes.list(task_id=record.task_id)
    assert [t.shot for t in takes] == ["ch01/sc01/sh010"]
