"""Every door obeys the same queue limits and starts a task the same way, in both deployments.

With the queue at its limit (``admission.max_queued`` = 1, one task waiting, no worker running
anything), the HTTP API and the ComfyUI API answer 429 ``queue_full``, and a run Dagster starts
(a UI launch, or the saved canvas's schedule tick) is refused with the same ``queue_full`` error.
Under the limit each door's task opens with the same ``task.submitted``. Embedded, a Dagster run
is adopted by the process running it (here the test's own runtime on the server's home, as a run
worker does); distributed, ``QueueRunLauncher`` queues it (no worker serves it here).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.comfy.client import ComfyClient, txt2img
from tests.comfy.conftest import wait_compat
from tests.server.harness import ServerProcess, free_port
from tests.services import PostgresServer

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]
SUBMITTED_KEYS = {"shot_id", "nodes", "estimated_time", "batch_id", "batch_size", "trace_id"}


@pytest.fixture(scope="module")
def demo_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from nodes.diffusion.demo import build_random_pipeline

    return build_random_pipeline(tmp_path_factory.mktemp("doors-demo") / "demo", "tiny", seed=0)


@dataclass
class Doors:
    mode: str
    home: Path
    env: dict[str, str]
    server: ServerProcess
    comfy: ComfyClient

    def api_submit(self) -> httpx.Response:
        body = {"template_id": "delay", "inputs": {"seconds": 0.0, "steps": 1, "value": "x"}}
        return self.server.http.post("/api/v1/functions/tasks", json=body)

    def comfy_submit(self) -> httpx.Response:
        body = json.dumps({"prompt": txt2img(seed=3)})
        return httpx.post(f"{self.comfy.base}/prompt", content=body, timeout=30)


@pytest.fixture(params=["embedded", "distributed"])
def doors(request: pytest.FixtureRequest, tmp_path: Path, demo_model: Path) -> Iterator[Doors]:
    home = tmp_path / "home"
    shutil.copytree(demo_model, home / "models" / "demo")
    config = {"admission": {"max_queued": 1}, "diffusion": {"batch_window_ms": 0}}
    (home / "config.json").write_text(json.dumps(config))
    env = {"TAKEFLOW_HOME": str(home)}
    if request.param == "distributed":
        pg: PostgresServer = request.getfixturevalue("pg_server")
        env["TAKEFLOW_DATABASE_URL"] = pg.url(pg.create_database("doors"))
    port = free_port()
    server = ServerProcess(home, "--demo", "--comfy-port", str(port), workers=0, env=env)
    try:
        server.wait_ready()
        wait_compat(f"http://127.0.0.1:{port}")
        yield Doors(request.param, home, env, server, ComfyClient(f"http://127.0.0.1:{port}"))
    finally:
        server.stop()


class DagsterDoor:
    """Runs Dagster starts, as its UI and its daemon start them, against the server's home."""

    def __init__(self, doors: Doors, monkeypatch: pytest.MonkeyPatch) -> None:
        from dagster_defs.definitions import build_definitions
        from dagster_defs.runtime import open_runtime

        for name, value in doors.env.items():
            monkeypatch.setenv(name, value)
        self.doors = doors
        self.runtime = open_runtime(doors.home, workers=0)
        self.repo = build_definitions(self.runtime).get_repository_def()
        (self.job,) = [
            j for j in self.repo.get_all_jobs() if "poster" in j.tags.get("takeflow/canvas", "")
        ]

    def close(self) -> None:
        self.runtime.close()

    def tick(self) -> tuple[dict[str, Any], dict[str, str]]:
        """The run request of the saved canvas's schedule, as the daemon's tick makes it."""
        from dagster import build_schedule_context

        (schedule,) = [s for s in self.repo.schedule_defs if s.job_name == self.job.name]
        with build_schedule_context(instance=self.runtime.instance) as context:
            (request,) = schedule.evaluate_tick(context).run_requests or []
        return dict(request.run_config), {**request.tags, "dagster/schedule_name": schedule.name}

    def launch(self, run_config: dict[str, Any], tags: dict[str, str]) -> str:
        """Start a run of the canvas job; the run's id."""
        if self.doors.mode == "embedded":  # adopted by the process that runs it
            result = self.job.execute_in_process(
                run_config=run_config,
                tags=tags,
                instance=self.runtime.instance,
                raise_on_error=False,
            )
            return str(result.run_id)
        from tests.distributed.test_cluster import _launch

        try:
            return _launch(self.runtime.instance, self.job, run_config, tags)
        except Exception as exc:  # the launcher refused it: Dagster fails the run
            assert "queue is full" in str(exc), exc
            (run,) = self.runtime.instance.get_runs(limit=1)
            return str(run.run_id)

    def refusal(self, run_id: str) -> str:
        """What refused the run: the code of its task's error (embedded), or the launch
        failure Dagster recorded (distributed: no task stored)."""
        from dagster import DagsterRunStatus

        run = self.runtime.instance.get_run_by_id(run_id)
        assert run is not None and run.status == DagsterRunStatus.FAILURE, run
        tasks = [r for r in self.runtime.state.list() if r.dagster_run_id == run_id]
        if self.doors.mode == "embedded":
            (task,) = tasks
            assert task.error is not None
            return str(task.error["code"])
        assert tasks == []  # refused before anything was stored
        logs = self.runtime.instance.all_logs(run_id)
        text = " ".join(str(e.message) + str(e.dagster_event) for e in logs)
        assert "queue is full" in text, text[-2000:]
        return "queue_full"

    def submitted(self, run_id: str) -> dict[str, Any]:
        """The first event of the task that ran ``run_id``."""
        tasks = [r for r in self.runtime.state.list() if r.dagster_run_id == run_id]
        (task,) = tasks
        return self.first_event(task.task_id)

    def first_event(self, task_id: str) -> dict[str, Any]:
        (first, *_) = self.runtime.state.read_task(task_id)
        assert first.type == "task.submitted", first
        return dict(first.data)


def test_every_door_refuses_over_the_limit_alike_and_submits_alike(
    doors: Doors, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = doors.server
    blocker = doors.api_submit()
    assert blocker.status_code in (200, 201, 202), blocker.text
    blocker_id = blocker.json()["task_id"]
    dagster = DagsterDoor(doors, monkeypatch)
    try:
        # -- over the limit: the same refusal at every door, nothing queued
        refused = doors.api_submit()
        assert refused.status_code == 429 and refused.json()["code"] == "queue_full", refused.text
        comfy = doors.comfy_submit()
        assert comfy.status_code == 429, comfy.text
        assert comfy.json()["error"]["type"] == "queue_full"
        config = dict(dagster.job.run_config or {})
        launched = dagster.launch(config, {"takeflow/shot": "ui/u01/sh001"})
        assert dagster.refusal(launched) == "queue_full"
        tick_config, tick_tags = dagster.tick()
        ticked = dagster.launch(tick_config, tick_tags)
        assert dagster.refusal(ticked) == "queue_full"
        queued = [r for r in dagster.runtime.state.list() if r.status.value == "queued"]
        assert [r.task_id for r in queued] == [blocker_id]

        # -- under the limit: each door's task opens with the same task.submitted
        server.ok("POST", f"/api/v1/functions/tasks/{blocker_id}/cancel")
        firsts: dict[str, dict[str, Any]] = {}

        def free_the_queue() -> None:
            for record in dagster.runtime.state.list():
                if record.status.value == "queued":
                    server.ok("POST", f"/api/v1/functions/tasks/{record.task_id}/cancel")

        accepted = doors.api_submit()
        assert accepted.status_code < 300, accepted.text
        firsts["api"] = dagster.first_event(accepted.json()["task_id"])
        free_the_queue()
        comfy = doors.comfy_submit()
        assert comfy.status_code == 200, comfy.text
        (prompt_task,) = [r for r in dagster.runtime.state.list() if r.status.value == "queued"]
        firsts["comfyui"] = dagster.first_event(prompt_task.task_id)
        free_the_queue()
        firsts["launch"] = dagster.submitted(dagster.launch(config, {}))
        free_the_queue()
        firsts["tick"] = dagster.submitted(dagster.launch(tick_config, tick_tags))
        for door, data in firsts.items():
            assert set(data) == set(firsts["api"]) and set(data) >= SUBMITTED_KEYS, (door, data)
            assert data["nodes"] and data["trace_id"], (door, data)
    finally:
        dagster.close()
