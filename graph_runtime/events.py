"""Task events: one sequenced stream per task, stored durably, fanned out to sinks."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol


class EventType(StrEnum):
    TASK_SUBMITTED = "task.submitted"
    TASK_STARTED = "task.started"
    TASK_PROGRESS = "task.progress"
    NODE_STATE = "node.state"
    TAKE_CREATED = "take.created"
    TASK_COMPLETED = "task.completed"
    TASK_FAILED = "task.failed"
    TASK_CANCELLED = "task.cancelled"
    ASSET_UPLOADED = "asset.uploaded"


TERMINAL_EVENTS = frozenset(
    {EventType.TASK_COMPLETED, EventType.TASK_FAILED, EventType.TASK_CANCELLED}
)


@dataclass(frozen=True)
class TaskEvent:
    """An event as clients see it. ``seq`` counts per task from 1; ``id`` orders the whole log."""

    type: str
    task_id: str
    seq: int
    id: int
    timestamp: float
    project_id: str | None
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "seq": self.seq,
            "id": self.id,
            "timestamp": self.timestamp,
            "project_id": self.project_id,
            "data": {"task_id": self.task_id, **self.data},
        }


class EventSink(Protocol):
    """Receives each event once it is stored, in order. Must not block for long."""

    def emit(self, event: TaskEvent) -> None: ...


class EventLog(Protocol):
    """Durable, sequenced store of task events; the source of every replay."""

    def append(
        self, type: str, task_id: str, project_id: str | None, data: dict[str, Any]
    ) -> TaskEvent: ...

    def read_task(self, task_id: str, after_seq: int = 0) -> list[TaskEvent]: ...

    def read_since(
        self, after_id: int = 0, project_ids: Iterable[str] | None = None, limit: int = 10_000
    ) -> list[TaskEvent]: ...

    def last_id(self) -> int: ...


class MemoryEventLog:
    """In-memory twin of the event log, for unit tests of the core."""

    def __init__(self) -> None:
        self._events: list[TaskEvent] = []
        self._seq: dict[str, int] = defaultdict(int)
        self._lock = threading.Lock()

    def append(
        self, type: str, task_id: str, project_id: str | None, data: dict[str, Any]
    ) -> TaskEvent:
        with self._lock:
            self._seq[task_id] += 1
            event = TaskEvent(
                type=type,
                task_id=task_id,
                seq=self._seq[task_id],
                id=len(self._events) + 1,
                timestamp=time.time(),
                project_id=project_id,
                data=data,
            )
            self._events.append(event)
            return event

    def read_task(self, task_id: str, after_seq: int = 0) -> list[TaskEvent]:
        with self._lock:
            return [e for e in self._events if e.task_id == task_id and e.seq > after_seq]

    def read_since(
        self, after_id: int = 0, project_ids: Iterable[str] | None = None, limit: int = 10_000
    ) -> list[TaskEvent]:
        wanted = set(project_ids) if project_ids is not None else None
        with self._lock:
            found = [e for e in self._events[after_id:] if wanted is None or e.project_id in wanted]
        return found[:limit]

    def last_id(self) -> int:
        return len(self._events)


class RecordingSink:
    """An event sink that keeps what it receives (tests) and can wait for a terminal event."""

    def __init__(self) -> None:
        self.events: list[TaskEvent] = []
        self._cond = threading.Condition()

    def emit(self, event: TaskEvent) -> None:
        with self._cond:
            self.events.append(event)
            self._cond.notify_all()

    def for_task(self, task_id: str) -> list[TaskEvent]:
        with self._cond:
            return [e for e in self.events if e.task_id == task_id]

    def wait_terminal(self, task_id: str, timeout: float = 30.0) -> TaskEvent:
        def done() -> TaskEvent | None:
            return next(
                (e for e in self.events if e.task_id == task_id and e.type in TERMINAL_EVENTS),
                None,
            )

        with self._cond:
            self._cond.wait_for(lambda: done() is not None, timeout=timeout)
            event = done()
        if event is None:
            raise TimeoutError(f"task {task_id} did not finish within {timeout}s")
        return event


class CallbackSink:
    """Adapts a plain callable into an event sink."""

    def __init__(self, fn: Callable[[TaskEvent], None]) -> None:
        self._fn = fn

    def emit(self, event: TaskEvent) -> None:
        self._fn(event)
