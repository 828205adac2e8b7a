"""The runner's queue under a flood, on a real runtime: users take turns, and queue limits are
checked atomically with enqueueing (concurrent submitters never overshoot, refusals store
nothing). One worker, held by a long ``delay`` task while the queue fills."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dagster_defs.intake import QueueFullError, QueueLimits
from dagster_defs.runtime import open_runtime
from graph_runtime.canvas import single_node_graph
from graph_runtime.tasks import TaskStatus


@pytest.fixture
def blocked(tmp_path: Path) -> Iterator[Any]:
    """A one-worker runtime whose worker runs a long task (cancelled when the test ends)."""
    rt = open_runtime(tmp_path / "home", workers=1)
    blocker = rt.runner.submit(single_node_graph("delay", {"seconds": 60, "steps": 600}))
    deadline = time.monotonic() + 30
    while rt.runner.get(blocker.task_id).status != TaskStatus.RUNNING:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    rt.blocker = blocker.task_id
    try:
        yield rt
    finally:
        for record in rt.state.list(status=TaskStatus.QUEUED):
            rt.runner.cancel(record.task_id)
        rt.runner.cancel(blocker.task_id)
        rt.close(grace_s=5)


def number(value: int) -> Any:
    return single_node_graph("number", {"value": value})


def test_one_users_flood_does_not_starve_another_users_task(blocked: Any) -> None:
    runner = blocked.runner
    flood = [runner.submit(number(i), user="alice").task_id for i in range(500)]
    single = runner.submit(number(-1), user="bob").task_id
    assert runner.queue_depth() == 501
    runner.cancel(blocked.blocker)
    assert runner.wait(single, 60).status == TaskStatus.COMPLETED
    started = runner.get(single).started_at
    before = [t for t in flood if (runner.get(t).started_at or float("inf")) < started]
    assert len(before) <= 2, len(before)  # bob's task ran within a couple of alice's
    for task_id in flood[10:]:  # a cancelled queued task leaves the queue at once
        runner.cancel(task_id)
    assert runner.queue_depth() <= 10


def test_concurrent_submitters_never_overshoot_a_limit(blocked: Any) -> None:
    runner = blocked.runner
    runner.intake.limits = QueueLimits(max_queued=10, max_queued_per_project=4)
    blocked.projects.create("small")
    accepted: list[str] = []
    refused: list[QueueFullError] = []
    lock = threading.Lock()

    def submitter(offset: int) -> None:
        for i in range(5):
            try:
                task_id = runner.submit(number(offset + i), user=f"u{offset}").task_id
            except QueueFullError as exc:
                with lock:
                    refused.append(exc)
            else:
                with lock:
                    accepted.append(task_id)

    threads = [threading.Thread(target=submitter, args=(n * 10,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(accepted) == 10 and len(refused) == 30
    assert runner.queue_depth() == 10
    assert len(blocked.state.list(status=TaskStatus.QUEUED)) == 10  # refusals stored nothing
    assert {e.details["limit"] for e in refused} == {"overall"}
    assert all(e.retry_after >= 1 and e.details["queued"] == 10 for e in refused)

    for task_id in accepted[:5]:
        runner.cancel(task_id)
    for i in range(4):
        runner.submit(number(i), project_id="small")
    with pytest.raises(QueueFullError) as project_full:  # 9 queued: the project's limit
        runner.submit(number(5), project_id="small")
    assert project_full.value.details["limit"] == "project"
    assert project_full.value.details["project_id"] == "small"
    probe = runner.submit(number(6), project_id="small", limited=False)  # probes, the CLI
    assert runner.get(probe.task_id).status == TaskStatus.QUEUED
