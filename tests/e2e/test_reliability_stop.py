"""A stop or a crash ends interrupted tasks in Takeflow and in Dagster (issue 14).

After SIGKILL, the restart fails the running task (``interrupted``) and ends its Dagster run as
FAILURE with an engine event saying why, so no run stays "in progress"; after SIGTERM, running
tasks get the grace period (``--grace``), then are ended the same way before the process exits.
Either way the queue goes on after the restart.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from dagster import DagsterEventType, DagsterRunStatus, RunsFilter

from dagster_defs.instance import open_runner_instance
from tests.server.harness import ServerProcess

pytestmark = pytest.mark.e2e
UNFINISHED = [
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
]


def _start_long_task(server: ServerProcess) -> tuple[str, str]:
    """A long ``delay`` task that is running, and a task queued behind it (one worker)."""
    long = server.submit("delay", {"seconds": 120, "steps": 1200})
    deadline = time.monotonic() + 30
    while server.ok("GET", f"/api/v1/functions/tasks/{long}")["status"] != "running":
        assert time.monotonic() < deadline, server.output()
        time.sleep(0.05)
    while not any(e["type"] == "task.progress" for e in server.stored_events(long)):
        assert time.monotonic() < deadline, server.output()
        time.sleep(0.05)
    queued = server.submit("number", {"value": 7})
    return long, queued


def _assert_run_ended(home: Path, task_id: str, why: str) -> None:
    instance = open_runner_instance(home / "dagster")
    try:
        (run,) = instance.get_runs(RunsFilter(tags={"takeflow/task_id": task_id}))
        assert run.status == DagsterRunStatus.FAILURE
        assert instance.get_runs_count(RunsFilter(statuses=UNFINISHED)) == 0  # "In progress" 0
        engine = instance.all_logs(run.run_id, of_type=DagsterEventType.ENGINE_EVENT)
        messages = [e.dagster_event.message or "" for e in engine if e.dagster_event]
        assert any(task_id in m and why in m for m in messages), messages
    finally:
        instance.dispose()


def _assert_interrupted_and_queue_goes_on(home: Path, long: str, queued: str) -> None:
    server = ServerProcess(home, workers=1).wait_ready()
    try:
        status = server.ok("GET", f"/api/v1/functions/tasks/{long}")
        assert status["status"] == "failed" and status["error"]["code"] == "interrupted"
        assert server.stored_events(long)[-1]["data"]["code"] == "interrupted"
        deadline = time.monotonic() + 60
        while server.ok("GET", f"/api/v1/functions/tasks/{queued}")["status"] != "completed":
            assert time.monotonic() < deadline, server.output()
            time.sleep(0.1)
    finally:
        server.stop()


@pytest.mark.timeout(180)
def test_sigkill_then_restart_ends_the_dagster_run_as_failed(tmp_path: Path) -> None:
    home = tmp_path / "home"
    first = ServerProcess(home, workers=1).wait_ready()
    try:
        long, queued = _start_long_task(first)
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(timeout=10)
    finally:
        first.stop()
    instance = open_runner_instance(home / "dagster")
    try:  # what a crash leaves behind: the run stays STARTED until the next start
        (run,) = instance.get_runs(RunsFilter(tags={"takeflow/task_id": long}))
        assert run.status == DagsterRunStatus.STARTED
    finally:
        instance.dispose()

    _assert_interrupted_and_queue_goes_on(home, long, queued)
    _assert_run_ended(home, long, "a server stop or crash")


@pytest.mark.timeout(180)
def test_sigterm_gives_the_grace_period_then_interrupts(tmp_path: Path) -> None:
    home = tmp_path / "home"
    first = ServerProcess(home, "--grace", "1", workers=1).wait_ready()
    try:
        long, queued = _start_long_task(first)
        started = time.monotonic()
        first.proc.send_signal(signal.SIGTERM)
        assert first.proc.wait(timeout=30) == 0, first.output()
        assert time.monotonic() - started < 20  # the grace period, not the task's 120 s
        output = first.output()
        assert "1 running task(s) get 1 s to finish" in output, output
        assert f"task {long} interrupted by a server stop" in output, output
    finally:
        first.stop()
    # ended in both places before the process exited, no restart needed
    _assert_run_ended(home, long, "grace period of 1 s ran out")
    _assert_interrupted_and_queue_goes_on(home, long, queued)
