"""A run Dagster starts without a ``takeflow/user`` tag (a launch from its UI) is recorded as
``DEFAULT_USER``'s task, as every other door records a request that names no user."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dagster_defs.compiler import job_name
from dagster_defs.definitions import build_definitions
from graph_runtime.canvas import CanvasGraph
from graph_runtime.tasks import DEFAULT_USER, TaskStatus


def test_a_dagster_launch_without_a_user_tag_is_the_default_users(
    runtime: Any, project: Any, demo_canvas: Path
) -> None:
    graph = CanvasGraph.model_validate_json(demo_canvas.read_text())
    job = (
        build_definitions(runtime)
        .get_repository_def()
        .get_job(job_name(runtime.runner.plan(graph)))
    )
    assert "takeflow/user" not in job.tags
    run = job.execute_in_process(instance=runtime.instance)  # the job's tags and saved config
    assert run.success
    (take,) = project.takes.list(shot="ch01/sc01/sh010")
    record = runtime.state.get(take.metadata["task_id"])
    assert record is not None and record.status == TaskStatus.COMPLETED
    assert record.dagster_run_id == run.run_id
    assert record.user == DEFAULT_USER
