"""The intake: admission limits, the queueing of admitted tasks, and honest estimates.

How many tasks may wait in the queue, overall, per user and per project: beyond a limit a
submission (a whole batch) is refused (``QueueFullError``, HTTP 429 with ``Retry-After``)
before anything is stored. ``TaskIntake.queue`` checks and enqueues under one lock, so
concurrent submitters never overshoot. Estimates count the tasks ahead in the fair queue and
the measured mean task duration (``ThroughputEstimate``). Limits live in the home's
``config.json``::

    {"admission": {"max_queued": 10000, "max_queued_per_user": 200,
                   "max_queued_per_project": 1000}}

``max_queued`` defaults to 10,000; the per-user and per-project limits are unset (no limit) by
default; ``null`` or 0 turns a limit off. Health probes and the CLI (``takeflow run``, which
runs its own runner) are not limited: they submit with ``limited=False``.
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from dagster_defs.admission import Admission, Submission
from dagster_defs.deployment import TaskQueue
from dagster_defs.lifecycle import TaskLifecycle
from graph_runtime.errors import TakeflowError
from graph_runtime.scheduling import ThroughputEstimate
from graph_runtime.tasks import TaskRecord, TaskStatus, TaskStore

DEFAULT_MAX_QUEUED = 10_000


class QueueFullError(TakeflowError):
    """The queue is at a limit: try again after ``retry_after`` seconds."""

    code = "queue_full"
    http_status = 429

    def __init__(self, message: str, *, retry_after: int, **details: Any) -> None:
        super().__init__(message, retry_after_s=retry_after, **details)
        self.retry_after = retry_after


class QueueCounts(Protocol):
    """What the limits read from the queue (the worker pool)."""

    def depth(self) -> int: ...

    def queued_by(self, user: str) -> int: ...

    def queued_in(self, project_id: str) -> int: ...


def _limit(value: Any, name: str) -> int | None:
    if value is None or value == 0:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"admission.{name} must be a whole number >= 0 or null, got {value!r}")
    return value


@dataclass(frozen=True)
class QueueLimits:
    """Most tasks waiting at once: overall, per user, per project (None: no limit)."""

    max_queued: int | None = DEFAULT_MAX_QUEUED
    max_queued_per_user: int | None = None
    max_queued_per_project: int | None = None

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> QueueLimits:
        """The limits of a home's ``config.json`` (its ``admission`` section)."""
        section = config.get("admission") or {}
        return cls(
            _limit(section.get("max_queued", DEFAULT_MAX_QUEUED), "max_queued"),
            _limit(section.get("max_queued_per_user"), "max_queued_per_user"),
            _limit(section.get("max_queued_per_project"), "max_queued_per_project"),
        )

    def check(
        self,
        queue: QueueCounts,
        users: Sequence[str],
        projects: Sequence[str | None],
        drain_seconds: Callable[[int], float],
    ) -> None:
        """Raise ``QueueFullError`` when adding tasks of ``users`` / ``projects`` (one entry per
        task) would pass a limit. ``drain_seconds(n)`` says how long ``n`` tasks take to run
        (the ``Retry-After``)."""
        checks: list[tuple[str, str | None, int | None, int, int]] = [
            ("overall", None, self.max_queued, queue.depth(), len(users))
        ]
        if self.max_queued_per_user is not None:
            for user, adding in Counter(users).items():
                queued = queue.queued_by(user)
                checks.append(("user", user, self.max_queued_per_user, queued, adding))
        if self.max_queued_per_project is not None:
            for project, adding in Counter(p for p in projects if p is not None).items():
                queued = queue.queued_in(project)
                checks.append(("project", project, self.max_queued_per_project, queued, adding))
        for scope, name, limit, queued, adding in checks:
            if limit is None or queued + adding <= limit:
                continue
            excess = queued + adding - limit
            retry = max(1, math.ceil(drain_seconds(excess)))
            who = f" for {scope} '{name}'" if name is not None else ""
            what = "this task was" if adding == 1 else f"these {adding} tasks were"
            raise QueueFullError(
                f"the queue is full{who}: {queued} task(s) waiting, limit {limit}; "
                f"{what} refused, try again in {retry} s",
                retry_after=retry,
                limit=scope,
                user=name if scope == "user" else None,
                project_id=name if scope == "project" else None,
                max_queued=limit,
                queued=queued,
                submitted=adding,
            )


class StoredQueueCounts:
    """Queue counts read from the task store, which every process sees: what a process that
    does not hold the queue (a Dagster run worker adopting a run) checks the limits against."""

    def __init__(self, store: TaskStore) -> None:
        self._queued = store.list(status=TaskStatus.QUEUED)

    def depth(self) -> int:
        return len(self._queued)

    def queued_by(self, user: str) -> int:
        return sum(1 for r in self._queued if r.user == user)

    def queued_in(self, project_id: str) -> int:
        return sum(1 for r in self._queued if r.project_id == project_id)


@dataclass(frozen=True)
class QueuedTask:
    """A task just queued, with the seconds until it is expected to finish."""

    record: TaskRecord
    estimated_seconds: float


class TaskIntake:
    """Stores and enqueues admitted submissions within the queue limits."""

    def __init__(
        self,
        pool: TaskQueue,
        lifecycle: TaskLifecycle,
        admission: Admission | None,
        throughput: ThroughputEstimate,
        running: Callable[[], int],
        limits: QueueLimits,
        serialize: Callable[[], contextlib.AbstractContextManager[Any]] | None = None,
    ) -> None:
        self.pool = pool
        self.lifecycle = lifecycle
        self.admission = admission
        self.throughput = throughput
        self.running = running
        self.limits = limits
        # a limit check and its enqueue are one step (across replicas: ``Coordination.intake``)
        lock = threading.RLock()
        self._serialize = serialize or (lambda: lock)

    def check(self, users: Sequence[str], projects: Sequence[str | None]) -> None:
        """``QueueFullError`` when tasks of ``users`` / ``projects`` would pass a limit (call
        inside ``serialized`` to make the check and what it admits one step)."""
        self.limits.check(self.pool, users, projects, self.throughput.drain_seconds)

    def check_stored(self, store: TaskStore, user: str, project_id: str | None) -> None:
        """``check`` one task against the queue as stored (``StoredQueueCounts``)."""
        self.limits.check(
            StoredQueueCounts(store), [user], [project_id], self.throughput.drain_seconds
        )

    def serialized(self) -> contextlib.AbstractContextManager[Any]:
        """One submitter at a time (every process: the limits hold across replicas)."""
        return self._serialize()

    def queue(
        self,
        entries: Sequence[tuple[Submission, int]],
        batch_id: str | None = None,
        batch_size: int | None = None,
        limited: bool = True,
    ) -> list[QueuedTask]:
        """Store and enqueue admitted submissions (each with its priority), all or none: with
        ``limited`` the limits are checked for all of them first. A refusal
        (``QueueFullError``) stores nothing and publishes nothing."""
        with self.serialized():
            if limited:
                try:
                    self.check([s.user for s, _ in entries], [s.project_id for s, _ in entries])
                except QueueFullError:
                    for submission, _ in entries:
                        if self.admission is not None:
                            self.admission.abandon(submission)
                    raise
            return [self._enqueue(s, p, batch_id, batch_size) for s, p in entries]

    def queue_run(
        self, record: TaskRecord, nodes: list[str], put: Callable[[], None], limited: bool = True
    ) -> TaskRecord:
        """Store and enqueue a task for a run Dagster made (``put`` enqueues it), within the
        same limits and with the same ``task.submitted`` as ``queue``; ``QueueFullError``
        stores nothing."""
        with self.serialized():
            if limited:
                self.check([record.user], [record.project_id])
            record = replace(record, trace_id=self.lifecycle.traced(record.task_id))
            self.lifecycle.submit(record, nodes, 0.0, None)
            put()
        self.lifecycle.telemetry.forget(record.task_id)  # its worker carries the trace on
        return record

    def _enqueue(
        self, work: Submission, priority: int, batch_id: str | None, batch_size: int | None
    ) -> QueuedTask:
        plan = work.plan
        record = TaskRecord(
            task_id=work.task_id,
            graph=plan.graph.model_dump(mode="json"),
            project_id=work.project_id,
            shot=work.shot,
            user=work.user,
            priority=priority,
            batch_id=batch_id,
            node_states={n.node_id: "queued" for n in plan.nodes},
            trace_id=work.trace_id,
            metadata=dict(work.metadata),
        )
        ahead = self.pool.ahead(work.user, priority)
        estimate = self.throughput.seconds(ahead, len(plan.nodes), self.running())
        self.lifecycle.submit(record, [n.node_id for n in plan.nodes], estimate, batch_size)
        self.pool.put(record.task_id, plan, work.project, priority, work.user)
        return QueuedTask(record, estimate)

    def estimate(self, record: TaskRecord) -> tuple[int | None, float | None]:
        """A task's place in the queue (0: next; None when not waiting) and the seconds until
        it is expected to finish (None once it ended), from the measured task durations."""
        return self.estimates([record])[record.task_id]

    def estimates(
        self, records: Sequence[TaskRecord]
    ) -> dict[str, tuple[int | None, float | None]]:
        """``estimate`` of several tasks, their places in line found in one walk of the queue."""
        queued = [r.task_id for r in records if r.status == TaskStatus.QUEUED]
        positions = self.pool.positions(queued) if queued else {}
        found: dict[str, tuple[int | None, float | None]] = {}
        running = self.running() if queued else 0
        for record in records:
            found[record.task_id] = None, None
            position = positions.get(record.task_id)
            if record.status == TaskStatus.QUEUED and position is not None:
                nodes = len(record.node_states)
                found[record.task_id] = position, self.throughput.seconds(position, nodes, running)
            elif record.status == TaskStatus.RUNNING and record.started_at is not None:
                mean = self.throughput.mean_task_s or self.throughput.per_node_s
                found[record.task_id] = (
                    None,
                    round(max(0.0, record.started_at + mean - time.time()), 3),
                )
        return found
