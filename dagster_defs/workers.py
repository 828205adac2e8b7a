"""The worker pool: a fair queue of admitted tasks and the threads that run them.

A queue item carries everything a worker needs (the task id and its validated plan), so there is
no side table to keep in step with the queue. The queue is a ``FairQueue`` whose owner is the
task's **user**: users take turns (a flood of one user's tasks does not starve another's single
task), higher priority first within and across users; each item also counts toward its project
(``queued_in``) for the per-project admission limit. ``close`` stops taking work; what is still
queued stays queued in the task store and runs after the next start.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from graph_runtime.scheduling import FairQueue
from graph_runtime.validation import ExecutionPlan
from stores.projects import Project

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class QueueItem:
    """One admitted task waiting for a worker."""

    task_id: str
    plan: ExecutionPlan
    project: Project | None = None


class WorkerPool:
    """``workers`` threads taking ``QueueItem``s (fair between users) and handing them to
    the ``run`` given to ``start``."""

    def __init__(self, workers: int) -> None:
        self._run: Callable[[QueueItem], object] = lambda item: None
        self._queue: FairQueue[QueueItem] = FairQueue()
        self._closed = threading.Event()
        self._busy = 0
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._work, name=f"takeflow-worker-{i}", daemon=True)
            for i in range(workers)
        ]

    def start(self, run: Callable[[QueueItem], object]) -> None:
        """Start the workers, each handing the tasks it takes to ``run``."""
        self._run = run
        for thread in self._threads:
            thread.start()

    def put(
        self, task_id: str, plan: ExecutionPlan, project: Project | None, priority: int, user: str
    ) -> None:
        self._queue.put(
            task_id,
            QueueItem(task_id, plan, project),
            owner=user,
            priority=priority,
            group=project.id if project is not None else None,
        )

    def remove(self, task_id: str) -> bool:
        """Take a waiting task out of the queue (it was cancelled); False if not waiting."""
        return self._queue.remove(task_id)

    def move(self, task_id: str, index: int) -> list[str] | None:
        """Put a waiting task at ``index`` among its user's waiting tasks of its priority
        (``FairQueue.move``): their ids in the new order; None when it is not waiting."""
        return self._queue.move(task_id, index)

    def position(self, task_id: str) -> int | None:
        """Tasks that will start before this one (0: next); None when it is not waiting."""
        return self._queue.position(task_id)

    def positions(self, task_ids: Iterable[str]) -> dict[str, int]:
        """``position`` of several tasks in one walk of the queue (waiting ones only)."""
        return self._queue.positions(task_ids)

    def ahead(self, user: str, priority: int) -> int:
        """Tasks a new task of ``user`` at ``priority`` would wait for."""
        return self._queue.ahead(user, priority)

    def depth(self) -> int:
        return len(self._queue)

    def queued_by(self, user: str) -> int:
        return self._queue.count(user)

    def queued_in(self, project_id: str) -> int:
        return self._queue.count_group(project_id)

    def busy(self) -> int:
        """Workers running a task now."""
        return self._busy

    @property
    def total(self) -> int:
        return len(self._threads)

    def alive(self) -> int:
        return sum(1 for t in self._threads if t.is_alive())

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def stop_taking_work(self) -> None:
        """Workers finish what they run and take nothing new."""
        self._closed.set()
        self._queue.close()

    def join(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for every worker to stop; True when all did."""
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            if thread.ident is not None:
                thread.join(timeout=max(0.0, deadline - time.monotonic()))
        return self.alive() == 0

    def _work(self) -> None:
        while True:
            taken = self._queue.get()
            if taken is None or self._closed.is_set():
                return
            item = taken[1]
            with self._lock:
                self._busy += 1
            try:
                self._run(item)
            except Exception:
                log.exception("task %s crashed the worker loop", item.task_id)
            finally:
                with self._lock:
                    self._busy -= 1
