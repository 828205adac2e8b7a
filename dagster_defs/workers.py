"""The worker pool: a priority queue of admitted tasks and the threads that run them.

A queue item carries everything a worker needs (the task id and its validated plan), so there is
no side table to keep in step with the queue. ``close`` stops taking work; what is still queued
stays queued in the task store and runs after the next start.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from graph_runtime.validation import ExecutionPlan
from stores.projects import Project

log = logging.getLogger(__name__)


@dataclass(order=True, frozen=True)
class QueueItem:
    """One admitted task waiting for a worker (higher priority first, then first come)."""

    rank: int
    order: int
    task_id: str = field(compare=False)
    plan: ExecutionPlan | None = field(compare=False)  # None: a wake-up to stop
    project: Project | None = field(default=None, compare=False)


class WorkerPool:
    """``workers`` threads taking ``QueueItem``s and handing them to ``run``."""

    def __init__(self, run: Callable[[QueueItem], None], workers: int) -> None:
        self._run = run
        self._queue: queue.PriorityQueue[QueueItem] = queue.PriorityQueue()
        self._order = itertools.count()
        self._closed = threading.Event()
        self._busy = 0
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._work, name=f"takeflow-worker-{i}", daemon=True)
            for i in range(workers)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def put(
        self, task_id: str, plan: ExecutionPlan, project: Project | None, priority: int
    ) -> None:
        self._queue.put(QueueItem(-priority, next(self._order), task_id, plan, project))

    def depth(self) -> int:
        return self._queue.qsize()

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
        for _ in self._threads:
            self._queue.put(QueueItem(-(10**9), next(self._order), "", None))

    def join(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for every worker to stop; True when all did."""
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            if thread.ident is not None:
                thread.join(timeout=max(0.0, deadline - time.monotonic()))
        return self.alive() == 0

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if self._closed.is_set() or item.plan is None:
                return
            with self._lock:
                self._busy += 1
            try:
                self._run(item)
            except Exception:
                log.exception("task %s crashed the worker loop", item.task_id)
            finally:
                with self._lock:
                    self._busy -= 1
