"""The parts of a runtime that differ between deployments, chosen once at ``open_runtime``.

``TaskRunner`` is one class in both modes; what it composes differs:

=============  =====================================  ==========================================
part           embedded (one process)                 distributed (replicas + workers)
=============  =====================================  ==========================================
task queue     ``WorkerPool``: fair in-process queue  ``JobQueuePool``: a procrastinate job per
               and worker threads                     task, fair turns in PostgreSQL
coordination   ``LocalCoordination``: thread locks,   ``ClusterCoordination``: advisory locks,
               no leases, gauges of this process      leases, a cancel flag, gauges of all
state          ``SqliteState``                        ``PostgresState``
live events    the runner's ``EventBus``              ``EventFeed`` (PostgreSQL log + Redis)
=============  =====================================  ==========================================

The worker side of the distributed mode (serving queue jobs, keeping leases) is its own object,
``dagster_defs.distributed.QueueWorker``; the lease sweeper is ``dagster_defs.sweeper.Sweeper``.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from dagster_defs.settings import ClusterSettings
from dagster_defs.workers import QueueItem
from graph_runtime.tasks import TaskRecord
from graph_runtime.validation import ExecutionPlan
from stores.projects import Project


class TaskQueue(Protocol):
    """Where admitted tasks wait for a worker, and what the limits and estimates read of it."""

    def start(self, run: Callable[[QueueItem], object]) -> None:
        """Start serving: hand each task to ``run`` (the runner's claim-and-run)."""
        ...

    def put(
        self, task_id: str, plan: ExecutionPlan, project: Project | None, priority: int, user: str
    ) -> None: ...

    def remove(self, task_id: str) -> bool: ...

    def positions(self, task_ids: Iterable[str]) -> dict[str, int]: ...

    def move(self, task_id: str, index: int) -> list[str] | None:
        """Reorder a waiting task among its user's (``WorkerPool.move``)."""
        ...

    def ahead(self, user: str, priority: int) -> int: ...

    def depth(self) -> int: ...

    def queued_by(self, user: str) -> int: ...

    def queued_in(self, project_id: str) -> int: ...

    @property
    def total(self) -> int: ...

    def alive(self) -> int: ...

    def stop_taking_work(self) -> None: ...

    def join(self, timeout: float) -> bool: ...


class Coordination(Protocol):
    """What crosses process boundaries: one intake step at a time, one git writer per project,
    moves that are one transaction, cancelling a task another process runs, leases, gauges."""

    poll_s: float  # how often a waiter looks again (other processes do not wake it)

    def atomic(self) -> contextlib.AbstractContextManager[Any]:
        """A state move and its event as one step (all or none)."""
        ...

    def intake(self) -> contextlib.AbstractContextManager[Any]:
        """Limit checks and the enqueues they admit, one submitter at a time."""
        ...

    def git_writer(self, project_id: str) -> contextlib.AbstractContextManager[Any]:
        """One git writer per project at a time."""
        ...

    def concluding(self, task_id: str) -> contextlib.AbstractContextManager[Any]:
        """Around storing a task's outcome: a fenced worker's outcome is dropped; the claim
        is released after."""
        ...

    def cancel_elsewhere(self, task_id: str) -> bool:
        """Ask the process running ``task_id`` to stop it; False when no other process can."""
        ...

    def running(self, here: int) -> int:
        """Tasks running now (``here``: those of this process)."""
        ...

    def workers_total(self, here: int) -> int: ...

    def workers_alive(self, here: int) -> int: ...

    def waiting_for(self, record: TaskRecord) -> str | None:
        """Why a queued task cannot start when something outside the queue is missing."""
        ...


class LocalCoordination:
    """One process owns every task: thread locks, nothing to lease, gauges of this process."""

    poll_s = 1.0  # finishing tasks wake waiters at once (``TaskLifecycle``)

    def __init__(self) -> None:
        self._intake = threading.RLock()

    def atomic(self) -> contextlib.AbstractContextManager[Any]:
        return contextlib.nullcontext()  # each SQLite write is its own transaction

    def intake(self) -> contextlib.AbstractContextManager[Any]:
        return self._intake

    def git_writer(self, project_id: str) -> contextlib.AbstractContextManager[Any]:
        return contextlib.nullcontext()  # each project's commit queue is the one writer

    @contextlib.contextmanager
    def concluding(self, task_id: str) -> Iterator[None]:
        yield

    def cancel_elsewhere(self, task_id: str) -> bool:
        return False

    def running(self, here: int) -> int:
        return here

    def workers_total(self, here: int) -> int:
        return here

    def workers_alive(self, here: int) -> int:
        return here

    def waiting_for(self, record: TaskRecord) -> str | None:
        return None  # the embedded workers serve every task


class Sweeping(Protocol):
    def run_forever(self, stop: threading.Event) -> None: ...


class QueueServing(Protocol):
    """The worker side of a distributed runtime (``takeflow worker``)."""

    worker_id: str

    def register(self, queues: list[str]) -> None:
        """Record this worker and the queues it serves (``/health``, ``waiting_for``)."""
        ...

    def keep_leases(self) -> None:
        """One heartbeat: extend leases, pass on cancel requests."""
        ...

    def run_task(self, task_id: str, queue: str | None = None, job_id: int | None = None) -> None:
        """Serve one queue job."""
        ...

    def sweeper(self) -> Sweeping:
        """The lease sweeper this worker runs beside its jobs."""
        ...


@dataclass
class ClusterParts:
    """What a distributed runtime holds beyond an embedded one."""

    settings: ClusterSettings
    coordination: Coordination
    worker: QueueServing
    close: Callable[[], None]


@dataclass(frozen=True)
class Deployment:
    """The deployment-specific parts a ``TaskRunner`` is composed from."""

    queue: TaskQueue
    coordination: Coordination
