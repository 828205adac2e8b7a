"""SIGKILL the real server mid-run and start it again on the same home.

Policy (docs/integration.md): a task that was running is failed with code ``interrupted`` (its
events say so); queued tasks survive and run; half-staged takes are discarded, so no partial
take is visible and take numbers continue without a gap; the project's git stays consistent.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.server.harness import EventClient, ServerProcess

pytestmark = pytest.mark.e2e
SHOT = "ch01/sc01/sh010"


def _image(server: ServerProcess, seed: int) -> str:
    inputs = {"width": 8, "height": 8, "seed": seed}
    return server.submit("noise_image", inputs, project_id="film", shot_id=SHOT)


def _assert_run_and_steps_failed(home: Path, run_id: str) -> None:
    """The killed task's Dagster run failed, and so did the step it was executing (the run's
    page must not list it under "Executing")."""
    from dagster import DagsterInstance, DagsterRunStatus
    from dagster._core.execution.stats import StepEventStatus

    instance = DagsterInstance.from_config(str(home / "dagster"))
    try:
        run = instance.get_run_by_id(run_id)
        assert run is not None and run.status == DagsterRunStatus.FAILURE
        (step,) = instance.get_run_step_stats(run_id)
        assert step.status == StepEventStatus.FAILURE and step.end_time is not None
        messages = [e.message for e in instance.all_logs(run_id)]
        interrupted = [m for m in messages if "was interrupted" in m]
        assert interrupted and all(m.count("task_") == 1 for m in interrupted), interrupted
    finally:
        instance.dispose()


def test_sigkill_mid_run_then_restart(tmp_path: Path) -> None:
    home = tmp_path / "home"
    first = ServerProcess(home, workers=1).wait_ready()
    try:
        first.ok("POST", "/api/v1/projects", json={"project_id": "film"})
        done = _image(first, 0)

        async def until_running() -> tuple[str, list[str], int]:
            async with EventClient(f"{first.ws_base}/ws/artist") as client:
                await client.subscribe(project_ids=["film"])
                await client.until_terminal(done, 30)
                long = first.submit(
                    "delay", {"seconds": 120, "steps": 1200}, project_id="film", shot_id=SHOT
                )
                await client.until(
                    lambda e: e["data"].get("task_id") == long and e["type"] == "task.progress",
                    30,
                )
                queued = [_image(first, seed) for seed in (1, 2, 3)]
                await client.until(
                    lambda e: (
                        e["data"].get("task_id") == queued[-1] and e["type"] == "task.submitted"
                    ),
                    30,
                )
                return long, queued, client.for_task(long)[-1]["seq"]

        long, queued, last_seq = asyncio.run(until_running())
        statuses = [first.ok("GET", f"/api/v1/functions/tasks/{t}")["status"] for t in queued]
        assert statuses == ["queued"] * 3
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(timeout=10)
    finally:
        first.stop()

    second = ServerProcess(home, workers=1).wait_ready()
    try:

        async def after_restart() -> EventClient:
            async with EventClient(f"{second.ws_base}/ws/artist") as client:
                await client.subscribe(task_ids=[long, *queued], last_seq={long: last_seq})
                await client.until_terminal(long, 30)
                for task_id in queued:
                    await client.until_terminal(task_id, 60)
                return client

        client = asyncio.run(after_restart())
        rest = client.for_task(long)
        assert [e["seq"] for e in rest] == list(range(last_seq + 1, last_seq + 1 + len(rest)))
        failed = rest[-1]
        assert failed["type"] == "task.failed" and failed["data"]["code"] == "interrupted"
        assert "stopped while this task ran" in failed["data"]["message"]
        status = second.ok("GET", f"/api/v1/functions/tasks/{long}")
        assert status["status"] == "failed" and status["error"]["code"] == "interrupted"
        _assert_run_and_steps_failed(home, status["dagster_run_id"])
        for task_id in queued:
            assert client.for_task(task_id)[-1]["type"] == "task.completed"

        takes = second.ok("GET", "/api/v1/projects/film/takes", params={"shot_id": SHOT})
        assert sorted(t["number"] for t in takes) == [1, 2, 3, 4]  # no gap, no partial take
        assert {t["metadata"]["task_id"] for t in takes} == {done, *queued}
        project = home / "projects" / "film"
        staging = project / "05_Cache" / "staging"
        assert not staging.exists() or not any(staging.iterdir())
        takes_dir = project / "03_Renders" / SHOT / "takes"
        assert sorted(p.name for p in takes_dir.iterdir() if p.is_dir()) == [
            f"take_{n:03d}" for n in (1, 2, 3, 4)
        ]
        fsck = subprocess.run(
            ["git", "fsck", "--strict"], cwd=project, capture_output=True, text=True, timeout=60
        )
        assert fsck.returncode == 0, fsck.stderr
        assert not (project / ".git" / "index.lock").exists()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "03_Renders"],
            cwd=project, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert dirty.stdout == ""  # every take committed
        deadline = time.monotonic() + 10
        while second.ok("GET", "/health")["status"] != "healthy":
            assert time.monotonic() < deadline, second.ok("GET", "/health")
            time.sleep(0.2)
    finally:
        second.stop()
