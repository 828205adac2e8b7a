"""Batches: a sweep submitted as one task per combination, and the batch's progress as events.

Every graph of the batch is admitted (validated, once) before the first is queued, so a bad
value in the fifth combination stores nothing. Each task carries the batch id (Dagster tag
``takeflow/batch_id``) and its take records the combination under ``sweep`` (``batch_id``,
``index``, ``run``, ``values``).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dagster_defs.admission import Submission
from dagster_defs.runner import TaskRunner
from graph_runtime.canvas import CanvasGraph
from graph_runtime.errors import GraphValidationError
from graph_runtime.events import (
    EventType,
    TaskCancelled,
    TaskCompleted,
    TaskEvent,
    TaskFailed,
    TaskProgress,
    TaskStarted,
    TaskSubmitted,
)
from graph_runtime.sweeps import Sweep, SweepError, expand_sweep


def new_batch_id() -> str:
    return f"batch_{uuid.uuid4().hex[:16]}"


def submit_sweep(
    runner: TaskRunner,
    graph: CanvasGraph,
    sweep: Sweep,
    runs: int | None = None,
    *,
    project_id: str | None = None,
    shot: str | None = None,
    user: str | None = None,
    priority: int = 0,
    batch_id: str | None = None,
    check: Callable[[Submission], None] | None = None,
    limited: bool = True,
) -> tuple[str, list[str]]:
    """Queue one task per combination of ``sweep`` (``runs`` overrides the sweep's own).

    Raises ``SweepError`` or ``GraphValidationError`` (naming the combination), or what
    ``check`` raises for an admitted combination, before queuing any; ``QueueFullError`` when
    the batch does not fit the queue limits (``limited``): the batch is refused whole.
    """
    if runs is not None:
        sweep = sweep.model_copy(update={"runs": runs})
        if runs < 1:
            raise SweepError("runs must be at least 1", runs=runs)
    items = expand_sweep(graph, sweep)
    batch_id = batch_id or new_batch_id()
    admitted: list[Submission] = []
    for item in items:
        try:
            submission = runner.admission.admit(
                item.graph,
                project_id=project_id,
                shot=shot,
                user=user,
                metadata={"sweep": item.metadata(batch_id)},
            )
            if check is not None:
                check(submission)  # abandons the submission itself when it refuses it
            admitted.append(submission)
        except Exception as exc:
            if isinstance(exc, GraphValidationError):
                for issue in exc.issues:
                    issue.extra.setdefault("sweep_index", item.index)
            for submission in admitted:
                runner.admission.abandon(submission)
            raise
    queued = runner.queue(
        [(s, priority) for s in admitted],
        batch_id=batch_id,
        batch_size=len(items),
        limited=limited,
    )
    return batch_id, [q.record.task_id for q in queued]


@dataclass
class BatchProgress:
    """An event sink that follows every task of one batch (add it before submitting).

    Tasks join when their ``task.submitted`` event names the batch; ``on_change`` is called (from
    worker threads; keep it quick) after each event that changes the counts or the fraction.
    """

    batch_id: str
    on_change: Callable[[BatchProgress], None] | None = None
    tasks: dict[str, float] = field(default_factory=dict)
    status: dict[str, str] = field(default_factory=dict)
    expected: int | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _cond: threading.Condition = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._cond = threading.Condition(self._lock)

    @property
    def total(self) -> int:
        return max(self.expected or 0, len(self.tasks))

    @property
    def finished(self) -> int:
        return sum(1 for s in self.status.values() if s != "running" and s != "queued")

    def count(self, status: str) -> int:
        return sum(1 for s in self.status.values() if s == status)

    @property
    def fraction(self) -> float:
        return sum(self.tasks.values()) / self.total if self.total else 0.0

    def emit(self, event: TaskEvent) -> None:
        if event.type == EventType.ASSET_UPLOADED:
            return
        changed = True
        task_id, payload = event.task_id, event.payload
        with self._cond:
            match payload:
                case TaskSubmitted(batch_id=self.batch_id, batch_size=size):
                    if size is not None:  # the whole batch is known: the bar never moves back
                        self.expected = max(self.expected or 0, size)
                    self.tasks[task_id] = 0.0
                    self.status[task_id] = "queued"
                case _ if task_id not in self.tasks:
                    changed = False
                case TaskStarted():
                    self.status[task_id] = "running"
                case TaskProgress(progress=progress):
                    self.tasks[task_id] = progress
                case TaskCompleted() | TaskFailed() | TaskCancelled():
                    self.tasks[task_id] = 1.0
                    self.status[task_id] = payload.type.removeprefix("task.")
                case _:
                    changed = False
            if changed:
                self._cond.notify_all()
        if changed and self.on_change is not None:
            self.on_change(self)

    def wait(self, timeout: float) -> bool:
        """Block until every expected task has finished; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self.total == 0 or self.finished < self.total:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    def summary(self) -> dict[str, Any]:
        return {
            "batch_id": self.batch_id,
            "total": self.total,
            "finished": self.finished,
            "completed": self.count("completed"),
            "failed": self.count("failed"),
            "cancelled": self.count("cancelled"),
            "progress": round(self.fraction, 4),
        }
