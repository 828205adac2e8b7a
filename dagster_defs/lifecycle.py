"""The task state machine over the ``TaskStore`` and the ``EventBus``.

    queued --claim--> running --finish--> completed | failed | cancelled
    queued --cancel--> cancelled
    running (owner gone) --recover--> failed (interrupted)

Every move is a compare-and-set on the stored status (``TaskStore.transition``), so a worker,
a cancel and a shutdown racing on one task end it once. Each move publishes its event, the two
one step (``atomic``: a transaction in distributed mode, so no reader sees a terminal status
without its terminal event). Every door (HTTP API, batches, CLI, Dagster launches and schedule
ticks, the lease sweeper, the ComfyUI API) moves tasks through these verbs only.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Protocol

from dagster_defs.observability import TaskTelemetry, trace_id_of
from graph_runtime.errors import TaskNotFoundError
from graph_runtime.events import (
    EventBus,
    EventLog,
    EventPayload,
    TaskCancelled,
    TaskFailed,
    TaskStarted,
    TaskSubmitted,
)
from graph_runtime.tasks import TaskOwner, TaskRecord, TaskResult, TaskStatus, TaskStore

log = logging.getLogger(__name__)


class TaskState(TaskStore, EventLog, Protocol):
    """Task records and their event log in one store (``SqliteState``, ``PostgresState``)."""

    def delete_task(self, task_id: str) -> None:
        """Remove an internal task (the ``/health`` probe) and its events."""
        ...

    def close(self) -> None: ...


def _process_started(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot, from ``/proc``); None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            stat = fh.read()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]


def this_process() -> TaskOwner:
    pid = os.getpid()
    return TaskOwner(pid, socket.gethostname(), _process_started(pid) or str(time.time()))


def owner_alive(owner: TaskOwner | None) -> bool:
    """Whether the process that ran a task still runs. A home is served from one host: an owner
    on another host (or none recorded, as in records of older versions) counts as gone."""
    if owner is None or owner.host != socket.gethostname():
        return False
    return _process_started(owner.pid) == owner.started


class TaskLifecycle:
    """Moves tasks through their states, storing each move and publishing its event."""

    def __init__(
        self,
        store: TaskStore,
        bus: EventBus,
        telemetry: TaskTelemetry,
        atomic: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext,
        poll_s: float = 1.0,
    ) -> None:
        self.store = store
        self.bus = bus
        self.telemetry = telemetry
        self.atomic = atomic
        self.poll_s = poll_s  # waiters look again this often (other processes do not wake them)
        self.owner = this_process()
        self._done = threading.Condition()

    def _emit(self, record: TaskRecord, payload: EventPayload) -> None:
        self.bus.publish(record.task_id, record.project_id, payload)

    def submit(
        self,
        record: TaskRecord,
        nodes: list[str],
        estimate: float,
        batch_size: int | None,
    ) -> TaskRecord:
        """Store a new queued task with ``task.submitted`` naming the ``nodes`` it will run."""
        with self.atomic():
            self._save_submitted(record, nodes, estimate, batch_size)
        return record

    def _save_submitted(
        self, record: TaskRecord, nodes: list[str], estimate: float, batch_size: int | None
    ) -> None:
        """Store a new task and publish the ``task.submitted`` every door's task opens with."""
        self.store.save(record)
        self._emit(
            record,
            TaskSubmitted(
                shot_id=record.shot,
                nodes=nodes,
                estimated_time=estimate,
                batch_id=record.batch_id,
                batch_size=batch_size,
                trace_id=record.trace_id,
            ),
        )
        self.telemetry.metrics.tasks_submitted.inc()

    def traced(self, task_id: str) -> str:
        """Open the root span of a task that no admission opened (a run Dagster started);
        its trace id (a fresh one where this process exports no traces: logs still join)."""
        return trace_id_of(self.telemetry.start_task(task_id)) or uuid.uuid4().hex

    def claim(self, task_id: str, run_id: str, job_name: str) -> TaskRecord | None:
        """Queued -> running, owned by this process; None when the task is no longer queued."""
        with self.atomic():
            record = self.store.transition(
                task_id,
                (TaskStatus.QUEUED,),
                status=TaskStatus.RUNNING,
                started_at=time.time(),
                dagster_run_id=run_id,
                owner=self.owner,
            )
            if record is not None:
                self._emit(
                    record,
                    TaskStarted(dagster_run_id=run_id, job_name=job_name, trace_id=record.trace_id),
                )
        return record

    def adopt(self, record: TaskRecord, job_name: str, nodes: list[str]) -> TaskRecord:
        """A run Dagster started itself, stored as a running task of this process: the same
        ``task.submitted`` as every other door's task, then ``task.started``."""
        record = replace(record, owner=self.owner, trace_id=self.traced(record.task_id))
        with self.atomic():
            self._save_submitted(record, nodes, 0.0, None)
            self._emit(
                record,
                TaskStarted(
                    dagster_run_id=record.dagster_run_id or "",
                    adopted=True,
                    job_name=job_name,
                    trace_id=record.trace_id,
                ),
            )
        return record

    def finish(
        self,
        task_id: str,
        status: TaskStatus,
        payload: EventPayload,
        *,
        node_states: dict[str, str] | None = None,
        progress: float | None = None,
        result: TaskResult | None = None,
        error: dict[str, Any] | None = None,
    ) -> TaskRecord | None:
        """Running -> ``status`` with its event; None when something else ended it first."""
        changes: dict[str, Any] = {"status": status, "finished_at": time.time(), "error": error}
        if node_states is not None:
            changes["node_states"] = node_states
        if progress is not None:
            changes["progress"] = progress
        if result is not None:
            changes["result"], changes["takes"] = result, result.takes
        with self.atomic():
            record = self.store.transition(task_id, (TaskStatus.RUNNING,), **changes)
            if record is None:
                return None
            self._emit(record, payload)
        self._ended(record)
        return record

    def cancel_queued(self, task_id: str) -> TaskRecord | None:
        """Queued -> cancelled; None when it is no longer queued (claimed or ended)."""
        with self.atomic():
            record = self.store.transition(
                task_id,
                (TaskStatus.QUEUED,),
                status=TaskStatus.CANCELLED,
                finished_at=time.time(),
            )
            if record is not None:
                self._emit(record, TaskCancelled(trace_id=record.trace_id))
        if record is not None:
            self._ended(record)
        return record

    def fail_queued(self, task_id: str, error: dict[str, Any]) -> None:
        """Queued -> failed with ``error`` (it cannot run: e.g. a template this worker lacks)."""
        with self.atomic():
            record = self.store.transition(
                task_id, (TaskStatus.QUEUED,), status=TaskStatus.FAILED, error=error
            )
            if record is not None:
                self._emit(record, TaskFailed.of(error, record.trace_id))
        if record is not None:
            self._ended(record)

    def expire(
        self,
        task_id: str,
        error: dict[str, Any],
        fence: Callable[[str, dict[str, Any]], TaskRecord | None],
    ) -> TaskRecord | None:
        """Running -> failed (``interrupted``) because its worker's lease ran out: ``fence``
        ends it in the store and fences the old owner out; None when the lease was renewed
        meanwhile or another sweeper was first."""
        with self.atomic():
            record = fence(task_id, error)
            if record is not None:
                self._emit(record, TaskFailed.of(error, record.trace_id))
        if record is not None:
            self._ended(record)
        return record

    def interrupt(self, record: TaskRecord, message: str) -> TaskRecord | None:
        """Running -> failed (``interrupted``): its process stopped before the task ended."""
        error = {"code": "interrupted", "message": message}
        return self.finish(
            record.task_id,
            TaskStatus.FAILED,
            TaskFailed.of(error, record.trace_id),
            error={"code": "interrupted", "message": "the server stopped while it ran"},
        )

    def orphans(self, alive: Callable[[TaskOwner | None], bool] = owner_alive) -> list[TaskRecord]:
        """Running tasks whose owning process is gone (a crash or a kill)."""
        return [r for r in self.store.list(status=TaskStatus.RUNNING) if not alive(r.owner)]

    def _ended(self, record: TaskRecord) -> None:
        self.telemetry.metrics.tasks_finished.labels(record.status.value).inc()
        message = None
        if record.status != TaskStatus.COMPLETED:
            message = (record.error or {}).get("message", record.status.value)
        self.telemetry.end_task(record.task_id, record.status.value, message)
        log.info("task %s %s trace_id=%s", record.task_id, record.status.value, record.trace_id)
        with self._done:
            self._done.notify_all()

    def get(self, task_id: str) -> TaskRecord:
        record = self.store.get(task_id)
        if record is None:
            raise TaskNotFoundError(f"no task '{task_id}'", task_id=task_id)
        return record

    def wait(
        self, task_id: str, timeout: float, view: Callable[[str], TaskRecord] | None = None
    ) -> TaskRecord:
        """Block until the task ends (``TimeoutError`` after ``timeout`` seconds)."""
        view = view or self.get
        deadline = time.monotonic() + timeout
        with self._done:
            while True:
                record = view(task_id)
                if record.status.terminal:
                    return record
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"task {task_id} still {record.status} after {timeout}s")
                self._done.wait(min(remaining, self.poll_s))
