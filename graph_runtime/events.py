"""Task events: typed payloads, one sequenced stream per task, stored durably, fanned out to sinks.

Each kind of event is a frozen model (``TaskSubmitted`` ... ``AssetUploaded``), one member of
the ``EventPayload`` union discriminated by ``type``. Emitters build a model and hand it to
``EventBus.publish``, which stores it in the ``EventLog`` and then calls every sink; sinks match
on the model's type. What is stored and sent is ``payload.to_data()``: the model's fields, with
optional ones only when the emitter set them (``docs/integration.md`` is the wire contract).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from graph_runtime.tasks import TaskResult

log = logging.getLogger(__name__)


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


class NodeState(StrEnum):
    """Where one node of a task stands."""

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class _Payload(BaseModel):
    """Base of every event payload. Fields listed in ``_always`` (constants such as ``status``)
    are always sent; other fields with a default only when the emitter set them."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    _always: ClassVar[frozenset[str]] = frozenset()

    trace_id: str | None = None

    def to_data(self) -> dict[str, Any]:
        """The event's ``data`` as stored and sent (``trace_id`` last, when there is one)."""
        include = (self.model_fields_set | self._always) - {"type", "trace_id"}
        data = self.model_dump(mode="json", include=include | set(self.model_extra or {}))
        if self.trace_id is not None:
            data["trace_id"] = self.trace_id
        return data


class TaskSubmitted(_Payload):
    type: Literal["task.submitted"] = "task.submitted"
    _always = frozenset({"status"})
    status: Literal["queued"] = "queued"
    shot_id: str
    nodes: list[str]
    estimated_time: float
    batch_id: str | None
    batch_size: int | None


class TaskStarted(_Payload):
    type: Literal["task.started"] = "task.started"
    _always = frozenset({"status"})
    status: Literal["running"] = "running"
    dagster_run_id: str
    adopted: bool | None = None  # only on runs Dagster started itself
    job_name: str


class TaskProgress(_Payload):
    """``preview_path`` is project-relative; the server sends it as ``preview_url``."""

    type: Literal["task.progress"] = "task.progress"
    node_id: str
    progress: float
    node_progress: float
    stage: str
    message: str
    eta: float | None
    preview_path: str | None = None
    preview_url: str | None = None  # events stored before previews were paths
    element: int | None = None  # a mapped node: the element running (from 0) ...
    elements: int | None = None  # ... of this many (graph_runtime/mapping.py)


class NodeStateChanged(_Payload):
    type: Literal["node.state"] = "node.state"
    node_id: str
    state: NodeState
    template: str | None = None
    cached: bool | None = None
    duration_ms: float | None = None
    outputs: dict[str, Any] | None = None
    error: dict[str, Any] | None = None


class TakeCreated(_Payload):
    type: Literal["take.created"] = "take.created"
    take: dict[str, Any]


class TaskCompleted(_Payload):
    type: Literal["task.completed"] = "task.completed"
    _always = frozenset({"status"})
    status: Literal["completed"] = "completed"
    execution_time: float
    takes: list[str]
    outputs: dict[str, Any]
    take: dict[str, Any] | None
    commit: str | None
    timings_ms: dict[str, float]

    def result(self) -> TaskResult:
        return TaskResult(
            self.outputs, self.takes, self.take, self.commit, self.execution_time, self.timings_ms
        )


class TaskFailed(_Payload):
    """An error's ``to_dict()``: ``code``, ``message`` and the error's own details."""

    model_config = ConfigDict(frozen=True, extra="allow")
    type: Literal["task.failed"] = "task.failed"
    code: str
    message: str

    @classmethod
    def of(cls, error: dict[str, Any], trace_id: str | None = None) -> TaskFailed:
        body = {**error, "trace_id": trace_id} if trace_id else dict(error)
        return cls.model_validate(body)

    @property
    def error(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, **(self.model_extra or {})}


class TaskCancelled(_Payload):
    type: Literal["task.cancelled"] = "task.cancelled"
    _always = frozenset({"status"})
    status: Literal["cancelled"] = "cancelled"
    node_id: str | None = None  # set when a running task stopped at a node


class AssetUploaded(_Payload):
    """An upload; its event's ``task_id`` is ``project:<id>``."""

    type: Literal["asset.uploaded"] = "asset.uploaded"
    asset_id: str
    uri: str
    path: str
    size: int
    sha256: str
    filename: str
    commit: str | None
    content_type: str
    video: dict[str, Any] | None = None  # probed facts of a video upload (fps, size, duration)


EventPayload = Annotated[
    TaskSubmitted
    | TaskStarted
    | TaskProgress
    | NodeStateChanged
    | TakeCreated
    | TaskCompleted
    | TaskFailed
    | TaskCancelled
    | AssetUploaded,
    Field(discriminator="type"),
]
PAYLOADS: tuple[type[_Payload], ...] = (
    TaskSubmitted, TaskStarted, TaskProgress, NodeStateChanged, TakeCreated, TaskCompleted,
    TaskFailed, TaskCancelled, AssetUploaded,
)  # fmt: skip
_PAYLOAD = TypeAdapter[Any](EventPayload)


def parse_payload(type_: str, data: dict[str, Any]) -> EventPayload:
    """The typed payload of a stored event (``ValidationError`` for an unknown shape)."""
    result: EventPayload = _PAYLOAD.validate_python({**data, "type": type_})
    return result


@dataclass(frozen=True)
class TaskEvent:
    """An event as clients see it. ``seq`` counts per task from 1; ``id`` orders the whole log.

    ``payload`` is the typed model (set when published here, parsed on first use when read
    back from the log)."""

    type: str
    task_id: str
    seq: int
    id: int
    timestamp: float
    project_id: str | None
    data: dict[str, Any] = field(default_factory=dict)
    _payload: Any = field(default=None, repr=False, compare=False)

    @property
    def payload(self) -> EventPayload:
        if self._payload is None:
            object.__setattr__(self, "_payload", parse_payload(self.type, self.data))
        return self._payload  # type: ignore[no-any-return]

    def with_payload(self, payload: EventPayload) -> TaskEvent:
        object.__setattr__(self, "_payload", payload)
        return self

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

    def last_seq(self, task_id: str) -> int | None: ...

    def last_id(self) -> int: ...


class EventSource(Protocol):
    """Where a server's live hubs listen: every stored event once, in order. Embedded, the
    runner's ``EventBus``; distributed, the replica's feed of every process's events."""

    def add_sink(self, sink: EventSink) -> None: ...

    def remove_sink(self, sink: EventSink) -> None: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...


class PublishHook(Protocol):
    """Telemetry around publishing (a span while the event is stored, counters after)."""

    def publishing(self, type_: str, task_id: str) -> contextlib.AbstractContextManager[Any]: ...

    def published(self, event: TaskEvent) -> None: ...


class EventBus:
    """The one publish path: store the event in the log, then hand it to every sink."""

    def __init__(self, log: EventLog, hooks: Iterable[PublishHook] = ()) -> None:
        self.log = log
        self._hooks = tuple(hooks)
        self._sinks: tuple[EventSink, ...] = ()
        self._lock = threading.Lock()

    def add_sink(self, sink: EventSink) -> None:
        with self._lock:
            self._sinks = (*self._sinks, sink)

    def remove_sink(self, sink: EventSink) -> None:
        with self._lock:
            self._sinks = tuple(s for s in self._sinks if s is not sink)

    def start(self) -> None:
        """Nothing to start: sinks get events as they are published (``EventSource``)."""

    def stop(self) -> None:
        """Nothing to stop (``EventSource``)."""

    def publish(self, task_id: str, project_id: str | None, payload: EventPayload) -> TaskEvent:
        with contextlib.ExitStack() as stack:
            for hook in self._hooks:
                stack.enter_context(hook.publishing(payload.type, task_id))
            event = self.log.append(payload.type, task_id, project_id, payload.to_data())
            event.with_payload(payload)
            for sink in self._sinks:
                try:
                    sink.emit(event)
                except Exception:  # a broken sink must not break the run
                    log.exception("event sink %r failed", sink)
        for hook in self._hooks:
            hook.published(event)
        return event


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

    def last_seq(self, task_id: str) -> int | None:
        with self._lock:
            return self._seq.get(task_id)

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
