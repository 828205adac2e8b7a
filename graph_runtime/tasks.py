"""Task records: what was asked, where it stands, what it made."""

from __future__ import annotations

import threading
import time
from collections.abc import Collection
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Protocol

from graph_runtime.errors import TaskNotFoundError

DEFAULT_USER = "local"
"""The user of a task whose request names none and carries no token, whichever door it came
through (HTTP API, CLI, batches and sweeps, ComfyUI API, a run Dagster started without a
``takeflow/user`` tag). Schedules keep their own configured user."""


class TaskStatus(StrEnum):
    PENDING = "pending"
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED)


@dataclass(frozen=True)
class TaskResult:
    """What a completed task made: its take (if any), outputs, commit and timings."""

    outputs: dict[str, Any] = field(default_factory=dict)
    takes: list[str] = field(default_factory=list)
    take: dict[str, Any] | None = None
    commit: str | None = None
    execution_time: float | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class TaskOwner:
    """The process running a task: recovery after a restart only ends tasks whose owner is gone
    (``started`` tells a reused pid apart)."""

    pid: int
    host: str
    started: str


@dataclass(frozen=True)
class TaskRecord:
    task_id: str
    graph: dict[str, Any]
    project_id: str | None
    shot: str
    user: str
    priority: int = 0
    status: TaskStatus = TaskStatus.QUEUED
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    batch_id: str | None = None
    node_states: dict[str, str] = field(default_factory=dict)
    progress: float = 0.0
    takes: list[str] = field(default_factory=list)
    error: dict[str, Any] | None = None
    dagster_run_id: str | None = None
    trace_id: str | None = None
    result: TaskResult | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    owner: TaskOwner | None = None

    def __post_init__(self) -> None:  # records read back from JSON carry plain dicts
        if isinstance(self.result, dict):
            object.__setattr__(self, "result", TaskResult(**self.result))
        if isinstance(self.owner, dict):
            object.__setattr__(self, "owner", TaskOwner(**self.owner))
        if isinstance(self.status, str) and not isinstance(self.status, TaskStatus):
            object.__setattr__(self, "status", TaskStatus(self.status))
        legacy = self.graph.get("x-metadata") if isinstance(self.graph, dict) else None
        if legacy is not None:  # a record stored before metadata had its own field
            graph = {k: v for k, v in self.graph.items() if k != "x-metadata"}
            object.__setattr__(self, "graph", graph)
            object.__setattr__(self, "metadata", {**legacy, **self.metadata})

    def to_dict(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "status": self.status.value,
            "project_id": self.project_id,
            "shot_id": self.shot,
            "user_id": self.user,
            "priority": self.priority,
            "batch_id": self.batch_id,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "progress": self.progress,
            "nodes": self.node_states,
            "takes": self.takes,
            "error": self.error,
            "dagster_run_id": self.dagster_run_id,
            "trace_id": self.trace_id,
        }


@dataclass(frozen=True)
class TaskQuery:
    """Which task records to list: every filter given must hold (``None``: no filter). Records
    come newest first, by ``created_at`` then ``task_id`` (both descending); ``before`` is the
    ``(created_at, task_id)`` key of the last record of the previous page."""

    projects: frozenset[str] | None = None  # tasks of one of these projects
    projectless_of: str | None = None  # project-less tasks: only this user's (and with
    # ``projects`` too); ``None``: all of them, unless ``projects`` is given
    shot: str | None = None
    statuses: frozenset[TaskStatus] | None = None
    user: str | None = None
    since: float | None = None  # created at or after (unix seconds)
    batch_id: str | None = None
    template_id: str | None = None  # one-template tasks of this template (``metadata``)
    before: tuple[float, str] | None = None
    limit: int = 50

    def matches(self, record: TaskRecord) -> bool:
        """The filters as Python (the memory twin; the SQL stores say the same in SQL)."""
        if record.project_id is None:
            in_scope = record.user == self.projectless_of or (
                self.projectless_of is None and self.projects is None
            )
        else:
            in_scope = self.projects is None or record.project_id in self.projects
        return (
            in_scope
            and (self.shot is None or record.shot == self.shot)
            and (self.statuses is None or record.status in self.statuses)
            and (self.user is None or record.user == self.user)
            and (self.since is None or record.created_at >= self.since)
            and (self.batch_id is None or record.batch_id == self.batch_id)
            and (self.template_id is None or record.metadata.get("template_id") == self.template_id)
            and (self.before is None or (record.created_at, record.task_id) < self.before)
        )


class TaskStore(Protocol):
    """Durable task records. ``transition`` is the only way the lifecycle moves a status: it
    applies ``changes`` when the record's status is one of ``expected``, else returns None."""

    def save(self, record: TaskRecord) -> None: ...

    def get(self, task_id: str) -> TaskRecord | None: ...

    def update(self, task_id: str, **changes: Any) -> TaskRecord: ...

    def transition(
        self, task_id: str, expected: Collection[TaskStatus], **changes: Any
    ) -> TaskRecord | None: ...

    def query(self, query: TaskQuery) -> list[TaskRecord]:
        """At most ``query.limit`` records matching ``query``, newest first (see ``TaskQuery``)."""
        ...

    def list(
        self, status: TaskStatus | None = None, batch_id: str | None = None
    ) -> list[TaskRecord]: ...


class MemoryTaskStore:
    """In-memory twin of the task store."""

    def __init__(self) -> None:
        self._tasks: dict[str, TaskRecord] = {}
        self._lock = threading.Lock()

    def save(self, record: TaskRecord) -> None:
        with self._lock:
            self._tasks[record.task_id] = record

    def get(self, task_id: str) -> TaskRecord | None:
        return self._tasks.get(task_id)

    def update(self, task_id: str, **changes: Any) -> TaskRecord:
        with self._lock:
            if task_id not in self._tasks:
                raise TaskNotFoundError(f"no task {task_id!r}", task_id=task_id)
            record = replace(self._tasks[task_id], **changes)
            self._tasks[task_id] = record
            return record

    def transition(
        self, task_id: str, expected: Collection[TaskStatus], **changes: Any
    ) -> TaskRecord | None:
        with self._lock:
            current = self._tasks.get(task_id)
            if current is None or current.status not in expected:
                return None
            record = replace(current, **changes)
            self._tasks[task_id] = record
            return record

    def query(self, query: TaskQuery) -> list[TaskRecord]:
        with self._lock:
            records = list(self._tasks.values())
        found = sorted(
            (r for r in records if query.matches(r)),
            key=lambda r: (r.created_at, r.task_id),
            reverse=True,
        )
        return found[: query.limit]

    def list(
        self, status: TaskStatus | None = None, batch_id: str | None = None
    ) -> list[TaskRecord]:
        return [
            r
            for r in sorted(self._tasks.values(), key=lambda r: r.created_at)
            if (status is None or r.status == status)
            and (batch_id is None or r.batch_id == batch_id)
        ]

    def close(self) -> None:
        """Nothing to release (the store lives in memory)."""
