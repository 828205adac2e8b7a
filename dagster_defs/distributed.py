"""Distributed mode: API replicas and worker processes sharing PostgreSQL (state, queue, Dagster)
and Redis (live fan-out). Selected by ``TAKEFLOW_DATABASE_URL`` (or ``distributed.database_url``
in ``<home>/config.json``); without it Takeflow stays the embedded single process.

``DistributedRunner`` is the embedded ``TaskRunner`` with the process-local parts swapped out:
- submit: task row, ``task.submitted`` and the queue job in ONE transaction (a batch in one too);
- claim: an atomic ``queued -> running`` in the task row with a new epoch and a lease, the plan
  re-made from the stored graph (any worker can run any task);
- cancel: queued tasks in the row (only while unclaimed); running ones through a flag the owning
  worker reads with its heartbeat;
- recovery: no start-up sweep of everything; ``Sweeper`` fails only tasks whose lease expired.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, cast

from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

from dagster_defs.queue import JobQueue, queue_for
from dagster_defs.runner import TaskRunner, _Execution
from graph_runtime.canvas import CanvasGraph
from graph_runtime.errors import TakeflowError
from graph_runtime.events import EventType
from graph_runtime.tasks import TaskRecord, TaskStatus
from stores.postgres.state import LeaseLostError, PostgresState

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClusterSettings:
    """Distributed-mode settings (env beats ``config.json``'s ``distributed`` block)."""

    database_url: str
    redis_url: str | None = None
    lease_s: float = 10.0
    heartbeat_s: float = 2.0
    sweep_s: float = 1.0

    @classmethod
    def resolve(cls, config: Mapping[str, Any]) -> ClusterSettings | None:
        block = dict(config.get("distributed") or {})
        url = os.environ.get("TAKEFLOW_DATABASE_URL") or block.get("database_url")
        if not url:
            return None
        lease = float(os.environ.get("TAKEFLOW_LEASE_S") or block.get("lease_s") or 10.0)
        return cls(
            database_url=url,
            redis_url=os.environ.get("TAKEFLOW_REDIS_URL") or block.get("redis_url"),
            lease_s=lease,
            heartbeat_s=float(block.get("heartbeat_s") or max(0.2, lease / 5)),
            sweep_s=float(block.get("sweep_s") or max(0.2, min(1.0, lease / 5))),
        )


def worker_identity() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class _Jobs:
    """Stands in for the runner's in-memory queue: ``put`` enqueues a queue job on the
    connection of the submit transaction."""

    def __init__(self, runner: DistributedRunner) -> None:
        self._runner = runner

    def put(self, item: tuple[int, int, str]) -> None:
        neg_priority, _, task_id = item
        runner = self._runner
        plan = runner._plans.pop(task_id, None)  # workers re-plan from the stored graph
        queue = queue_for(plan) if plan is not None else "cpu"
        with runner.pg.transaction() as conn:
            runner.jobs.defer(conn, task_id, queue, -neg_priority)

    def qsize(self) -> int:
        return self._runner.queue_depth()


class DistributedRunner(TaskRunner):
    """A ``TaskRunner`` whose queue, claims, cancel and recovery live in PostgreSQL."""

    def __init__(
        self,
        *args: Any,
        settings: ClusterSettings,
        jobs: JobQueue,
        worker_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs["workers"] = 0  # execution is driven by the job queue (server/worker.py)
        kwargs["recover"] = False  # the Sweeper handles dead workers, by lease
        super().__init__(*args, **kwargs)
        self.settings = settings
        self.jobs = jobs
        self.worker_id = worker_id or worker_identity()
        self._queue = _Jobs(self)  # type: ignore[assignment]

    @property
    def pg(self) -> PostgresState:
        """The shared state (``self.state``, typed as what it is in this mode)."""
        return cast(PostgresState, self.state)

    # -- submit ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Submissions inside the block are queued all together or not at all."""
        with self.pg.transaction():
            yield

    def submit(self, graph: CanvasGraph, **kwargs: Any) -> TaskRecord:
        with self.pg.transaction():
            return super().submit(graph, **kwargs)

    # -- claim and run (worker processes) -----------------------------------------------------

    def run_task(self, task_id: str) -> None:
        """Run one queued task in this process (called by the queue worker, one thread each)."""
        self._execute(task_id)

    def _claim(self, task_id: str) -> _Execution | None:
        record = self.pg.claim(task_id, self.worker_id, self.settings.lease_s)
        if record is None:
            return None  # cancelled, or already taken
        try:
            graph = {k: v for k, v in record.graph.items() if k != "x-metadata"}
            plan = self.plan(CanvasGraph.model_validate(graph))
            project = self.projects.get(record.project_id) if record.project_id else None
        except TakeflowError as exc:  # e.g. a template this worker lacks
            record = self.pg.update(
                task_id, status=TaskStatus.FAILED, finished_at=time.time(), error=exc.to_dict()
            )
            self._emit_raw(record, EventType.TASK_FAILED, exc.to_dict())
            self.pg.release(task_id)
            return None
        execution = _Execution(record, plan, project, cache_keys=self._cache_keys(plan))
        with self._lock:
            self._by_task[task_id] = execution
        return execution

    def _finish(self, execution: _Execution, *args: Any, **kwargs: Any) -> None:
        """Terminal status and terminal event in one transaction (a reader never sees one
        without the other)."""
        try:
            with self.pg.transaction():
                super()._finish(execution, *args, **kwargs)
        finally:
            self.pg.release(execution.record.task_id)
            with self._lock:
                self._by_task.pop(execution.record.task_id, None)

    def _commit(self, project: Any, take: Any, record: TaskRecord) -> str | None:
        """One git writer per project at a time across every process (a transaction-level
        advisory lock keyed by the project), so commits never collide on ``.git/index.lock``."""
        with self.pg.transaction() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"git:{project.id}",))
            return super()._commit(project, take, record)

    def keep_leases(self) -> None:
        """Extend this worker's leases; pass on cancel requests; stop tasks whose lease is lost."""
        alive = self.pg.heartbeat(self.worker_id, self.settings.lease_s)
        for task_id, execution in list(self._by_task.items()):
            if task_id in self.pg.lost:
                if execution.stop_error is None:
                    execution.stop_error = LeaseLostError(
                        f"worker {self.worker_id} lost its lease on task {task_id}",
                        task_id=task_id,
                    )
                execution.cancel.set()
            elif alive.get(task_id):
                execution.cancel.set()

    # -- cancel, wait, gauges (any process) ---------------------------------------------------

    def cancel(self, task_id: str) -> TaskRecord:
        record = self.get(task_id)
        if record.status == TaskStatus.QUEUED:
            with self.pg.transaction():
                cancelled = self.pg.update_if(
                    task_id, TaskStatus.QUEUED, status=TaskStatus.CANCELLED, finished_at=time.time()
                )
                if cancelled is not None:
                    self._emit_raw(cancelled, EventType.TASK_CANCELLED, {"status": "cancelled"})
                    return cancelled
            record = self.get(task_id)  # a worker claimed it meanwhile
        if record.status == TaskStatus.RUNNING:
            local = self._by_task.get(task_id)
            if local is not None:
                local.cancel.set()
            else:
                self.pg.request_cancel(task_id)
        return record

    def wait(self, task_id: str, timeout: float = 60.0) -> TaskRecord:
        deadline = time.monotonic() + timeout
        while True:
            record = self.get(task_id)
            if record.status.terminal:
                return record
            if time.monotonic() > deadline:
                raise TimeoutError(f"task {task_id} still {record.status} after {timeout}s")
            time.sleep(0.05)

    def _count(self, query: str) -> int:
        with self.pg.pool.connection() as conn:
            row = conn.execute(query).fetchone()
        return int(row[0]) if row else 0

    def queue_depth(self) -> int:
        return self._count("SELECT count(*) FROM takeflow_tasks WHERE status = 'queued'")

    def running(self) -> int:
        return self._count("SELECT count(*) FROM takeflow_tasks WHERE status = 'running'")

    def workers_total(self) -> int:
        return self._count("SELECT count(*) FROM takeflow_workers")

    def workers_alive(self) -> int:
        return self._count(
            "SELECT count(*) FROM takeflow_workers WHERE heartbeat > now() - "
            f"make_interval(secs => {float(self.settings.lease_s)})"
        )

    def estimate_seconds(self, nodes: int) -> float:
        return round(0.02 * max(nodes, 1), 3)


class Sweeper:
    """Fails tasks whose worker stopped renewing its lease (killed, paused, cut off): epoch + 1
    (the old owner is fenced), ``task.failed`` with code ``interrupted``, its Dagster run marked
    failed, and queue jobs of dead workers retired (re-queued if their task never started).
    Any number of processes may sweep: each step is conditional under a row lock."""

    def __init__(self, runner: DistributedRunner, instance: DagsterInstance) -> None:
        self.runner = runner
        self.instance = instance

    def sweep(self) -> int:
        runner, failed = self.runner, 0
        for record in runner.pg.expired():
            data = {"code": "interrupted", "message": "the worker running this task stopped"}
            event = runner.pg.fail_expired(record.task_id, data)
            if event is None:
                continue
            failed += 1
            for sink in runner._sinks:
                with contextlib.suppress(Exception):
                    sink.emit(event)
            self._fail_dagster_runs(record.task_id)
        with runner.pg.transaction() as conn:
            for job_id, task_id in runner.jobs.stalled_jobs(conn, 3 * runner.settings.lease_s):
                task = runner.pg.get(task_id)
                runner.jobs.retire(
                    conn, job_id, requeue=task is not None and task.status == "queued"
                )
        return failed

    def _fail_dagster_runs(self, task_id: str) -> None:
        runs = self.instance.get_runs(RunsFilter(tags={"takeflow/task_id": task_id}))
        for run in runs:
            if run.status in (DagsterRunStatus.STARTED, DagsterRunStatus.STARTING):
                self.instance.report_run_failed(run, "the Takeflow worker running it stopped")

    def run_forever(self, stop: threading.Event) -> None:
        while not stop.wait(self.runner.settings.sweep_s):
            try:
                self.sweep()
            except Exception:  # the database may be briefly away: try again next round
                log.exception("sweep failed")
