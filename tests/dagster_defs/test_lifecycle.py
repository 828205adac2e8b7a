"""The task state machine on the in-memory twins: every move stored, published, and made once."""

from __future__ import annotations

import os
import socket

import pytest

from dagster_defs.lifecycle import TaskLifecycle, owner_alive, this_process
from dagster_defs.observability import RunnerMetrics, TaskTelemetry
from graph_runtime.canvas import single_node_graph
from graph_runtime.events import (
    EventBus,
    MemoryEventLog,
    TaskCancelled,
    TaskCompleted,
    TaskFailed,
    TaskStarted,
    TaskSubmitted,
)
from graph_runtime.registry import TemplateRegistry
from graph_runtime.tasks import MemoryTaskStore, TaskOwner, TaskRecord, TaskResult, TaskStatus
from graph_runtime.validation import validate_graph
from nodes.builtin import TEMPLATES

DONE = TaskCompleted(execution_time=0.1, takes=[], outputs={}, take=None, commit=None,
                     timings_ms={})  # fmt: skip


@pytest.fixture
def lifecycle() -> TaskLifecycle:
    log = MemoryEventLog()
    return TaskLifecycle(MemoryTaskStore(), EventBus(log), TaskTelemetry(RunnerMetrics()))


def _submit(lifecycle: TaskLifecycle, task_id: str) -> TaskRecord:
    graph = single_node_graph("number", {"value": 1})
    plan = validate_graph(graph, TemplateRegistry(list(TEMPLATES)))
    record = TaskRecord(task_id, graph.model_dump(mode="json"), None, "a/b/c", "ana")
    return lifecycle.submit(record, [n.node_id for n in plan.nodes], 0.02, None)


def _types(lifecycle: TaskLifecycle, task_id: str) -> list[type]:
    log = lifecycle.bus.log
    return [type(e.payload) for e in log.read_task(task_id)]


def test_a_task_moves_queued_running_completed_with_its_result(lifecycle: TaskLifecycle) -> None:
    _submit(lifecycle, "t1")
    running = lifecycle.claim("t1", "run-1", "job")
    assert running is not None and running.owner == lifecycle.owner
    assert running.dagster_run_id == "run-1"
    result = TaskResult(takes=["take_001"], commit="abc")
    done = lifecycle.finish("t1", TaskStatus.COMPLETED, DONE, result=result)
    assert done is not None and done.result == result and done.takes == ["take_001"]
    assert _types(lifecycle, "t1") == [TaskSubmitted, TaskStarted, TaskCompleted]
    assert lifecycle.wait("t1", 1).status == TaskStatus.COMPLETED


def test_racing_moves_end_a_task_once(lifecycle: TaskLifecycle) -> None:
    _submit(lifecycle, "t1")
    assert lifecycle.cancel_queued("t1") is not None
    assert lifecycle.claim("t1", "run-1", "job") is None  # a worker comes too late
    _submit(lifecycle, "t2")
    lifecycle.claim("t2", "run-2", "job")
    assert lifecycle.cancel_queued("t2") is None  # running: not a queued cancel
    record = lifecycle.get("t2")
    assert lifecycle.interrupt(record, "the server stopped") is not None
    assert lifecycle.finish("t2", TaskStatus.COMPLETED, DONE) is None  # the worker, too late
    assert lifecycle.get("t2").error == {
        "code": "interrupted",
        "message": "the server stopped while it ran",
    }
    assert _types(lifecycle, "t1") == [TaskSubmitted, TaskCancelled]
    assert _types(lifecycle, "t2") == [TaskSubmitted, TaskStarted, TaskFailed]


def test_only_tasks_of_gone_processes_are_orphans(lifecycle: TaskLifecycle) -> None:
    me = this_process()
    gone = TaskOwner(2**22 + 7, socket.gethostname(), "1")  # no such pid
    reused = TaskOwner(os.getpid(), socket.gethostname(), "not-my-start-time")
    assert owner_alive(me) and not owner_alive(gone) and not owner_alive(reused)
    assert not owner_alive(None)
    for task_id, owner in [("mine", me), ("dead", gone), ("reused", reused), ("old", None)]:
        _submit(lifecycle, task_id)
        lifecycle.store.update(task_id, status=TaskStatus.RUNNING, owner=owner)
    assert sorted(r.task_id for r in lifecycle.orphans()) == ["dead", "old", "reused"]
