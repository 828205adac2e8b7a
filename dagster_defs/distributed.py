"""Distributed mode: API replicas and worker processes sharing PostgreSQL (state, queue, Dagster)
and Redis (live fan-out). Selected by ``TAKEFLOW_DATABASE_URL`` (or ``distributed.database_url``
in ``<home>/config.json``); without it Takeflow stays the embedded single process.

``DistributedRunner`` is the embedded ``TaskRunner`` with its process-local rooms swapped:
- pool: ``put`` enqueues a procrastinate job in the submit transaction (task row,
  ``task.submitted`` and job commit together; ``queue`` makes a batch one transaction, under one
  advisory lock, so the queue limits hold across API replicas); a job is a token of its queue:
  the worker runs that queue's next task in fair turns between users (``stores.postgres.turns``);
- lifecycle: each move and its event in one transaction; in a worker, ``queued -> running`` is a
  claim in the task row (new epoch, lease) and the plan is re-made from the stored graph;
- histories: one git writer per project across processes (advisory lock);
- cancel: queued tasks in the row (only while unclaimed); running ones through a flag the owning
  worker reads with its heartbeat;
- recovery: no start-up sweep; ``dagster_defs.sweeper.Sweeper`` fails only tasks whose lease
  expired.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any, cast

from dagster import DagsterError, JobDefinition

from dagster_defs.commits import ProjectHistories
from dagster_defs.intake import QueuedTask, TaskIntake
from dagster_defs.launcher import LAUNCHED
from dagster_defs.lifecycle import TaskLifecycle
from dagster_defs.node_executor import TaskExecution
from dagster_defs.queue import JobQueue, model_for, queue_for
from dagster_defs.run_plans import adopted_run
from dagster_defs.runner import TaskRunner
from dagster_defs.settings import ClusterSettings, worker_identity
from dagster_defs.workers import QueueItem
from graph_runtime.errors import TakeflowError
from graph_runtime.services import WarmModels
from graph_runtime.tasks import TaskRecord, TaskStatus
from graph_runtime.validation import ExecutionPlan
from stores.home import TakeflowHome
from stores.postgres.state import LeaseLostError, PostgresState
from stores.postgres.turns import INTAKE_LOCK, QueueTurns

log = logging.getLogger(__name__)


class _JobPool:
    """Stands in for the embedded ``WorkerPool``: ``put`` enqueues a queue job on the
    connection of the submit transaction; execution is the job queue's (``server/worker.py``)."""

    total = 0
    closed = False

    def __init__(self, runner: DistributedRunner) -> None:
        self._runner = runner

    def put(
        self, task_id: str, plan: ExecutionPlan, project: Any, priority: int, user: str
    ) -> None:
        runner = self._runner
        queue = queue_for(plan)
        with runner.pg.transaction() as conn:
            runner.turns.enqueue(task_id, queue, model_for(plan))
            runner.jobs.defer(conn, task_id, queue, priority)

    def remove(self, task_id: str) -> bool:
        return False  # a cancelled task's row says so; the job that finds it runs the next one

    def position(self, task_id: str) -> int | None:
        return self._runner.turns.position(task_id)

    def positions(self, task_ids: Iterable[str]) -> dict[str, int]:
        found = {t: self._runner.turns.position(t) for t in task_ids}
        return {t: p for t, p in found.items() if p is not None}

    def ahead(self, user: str, priority: int) -> int:
        return self._runner.turns.ahead(user, priority)

    def queued_by(self, user: str) -> int:
        return self._runner.turns.queued_by(user)

    def queued_in(self, project_id: str) -> int:
        return self._runner._scalar(
            "SELECT count(*) FROM takeflow_tasks "
            "WHERE status = 'queued' AND record->>'project_id' = %s",
            (project_id,),
        )

    def depth(self) -> int:
        return self._runner.queue_depth()

    def busy(self) -> int:
        return len(self._runner._signals)

    def alive(self) -> int:
        return 0

    def start(self) -> None:
        pass

    def stop_taking_work(self) -> None:
        pass

    def join(self, timeout: float) -> bool:
        return True


class _AtomicLifecycle(TaskLifecycle):
    """Each move's status change and its event in one transaction: a reader never sees a
    terminal status without its terminal event, nor a claim without ``task.started``."""

    store: Any

    def claim(self, task_id: str, run_id: str, job_name: str) -> TaskRecord | None:
        with self.store.transaction():
            return super().claim(task_id, run_id, job_name)

    def finish(
        self, task_id: str, status: TaskStatus, payload: Any, **kw: Any
    ) -> TaskRecord | None:
        with self.store.transaction():
            return super().finish(task_id, status, payload, **kw)

    def cancel_queued(self, task_id: str) -> TaskRecord | None:
        with self.store.transaction():
            return super().cancel_queued(task_id)


class _LockedHistories(ProjectHistories):
    """One git writer per project at a time across every process (a transaction-level advisory
    lock keyed by the project), so commits never collide on ``.git/index.lock``."""

    def __init__(self, metrics: Any, state: PostgresState) -> None:
        super().__init__(metrics)
        self._state = state

    def commit(self, project: Any, paths: Any, message: str, trace_context: Any = None) -> Any:
        with self._state.transaction() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"git:{project.id}",))
            return super().commit(project, paths, message, trace_context)


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
        super().__init__(*args, **kwargs)  # no workers: no start-up recovery (the Sweeper's)
        self.settings = settings
        self.jobs = jobs
        self.worker_id = worker_id or worker_identity()
        self.pg.claim_as(self.worker_id, settings.lease_s)
        self.lifecycle = _AtomicLifecycle(self.pg, self.bus, self.telemetry)
        self.histories = _LockedHistories(self.metrics, self.pg)
        self.completion.lifecycle = self.lifecycle
        self.completion.histories = self.histories
        self.turns = QueueTurns(self.pg)
        self.pool = _JobPool(self)  # type: ignore[assignment]
        self.intake = TaskIntake(
            self.pool,
            self.lifecycle,
            self.admission,
            self.throughput,
            self.running,
            self.intake.limits,
        )
        self.home: TakeflowHome | None = None  # set by open_cluster_parts (launched runs)

    @property
    def pg(self) -> PostgresState:
        """The shared state (``self.state``, typed as what it is in this mode)."""
        return cast(PostgresState, self.state)

    # -- submit ------------------------------------------------------------------------------

    def queue(self, entries: Any, **kwargs: Any) -> list[QueuedTask]:
        """Task rows, first events and queue jobs of a batch in one transaction: all or none.
        The intake lock makes each limit check and its enqueue one step across API replicas:
        submissions queue one at a time (``bench/intake.py``: 4 ms each, ~220/s from 20
        clients over 2 replicas on 2 cores; ~280/s without the lock)."""
        with self.pg.transaction() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (INTAKE_LOCK,))
            return super().queue(entries, **kwargs)

    # -- run (worker processes) ---------------------------------------------------------------

    def run_task(self, task_id: str, queue: str | None = None, job_id: int | None = None) -> None:
        """Serve one queue job in this process (the queue worker calls it, one thread each):
        run the next task of the job's ``queue`` in fair turns (``task_id``, the task it was
        deferred for, when no queue is given or nothing else waits). The plan is made again
        from the stored graph, so any worker can run any task."""
        with self.pg.serving(job_id):
            while True:  # another worker claimed the task we picked: it made progress, pick again
                picked = self.turns.next_queued(queue, self.warm_models()) if queue else None
                record = self.pg.get(picked or task_id)
                if record is None or record.status != TaskStatus.QUEUED:
                    if picked:
                        continue
                    return  # nothing waits in this queue (cancelled, or all taken)
                if self._run_record(record):
                    return

    def warm_models(self) -> list[str]:
        """Models this worker's services hold loaded (its picks prefer tasks naming them)."""
        return [
            name
            for service in self.services.values()
            if isinstance(service, WarmModels)
            for name in service.warm_models()
        ]

    def _run_record(self, record: TaskRecord) -> bool:
        """Claim and run a queued task; False when another worker claimed it first."""
        if record.metadata.get(LAUNCHED):
            return self._run_launched(record)
        try:
            work = self.admission.readmit(record)
        except TakeflowError as exc:  # e.g. a template this worker lacks
            self.lifecycle.fail_queued(record.task_id, exc.to_dict())
            return True
        return self._execute(QueueItem(record.task_id, work.plan, work.project))

    def _run_launched(self, record: TaskRecord) -> bool:
        """A run Dagster created and ``QueueRunLauncher`` queued: find its job among the saved
        canvases, fill in the task's graph, claim the task and execute that very run."""
        run_id = str(record.metadata[LAUNCHED])
        run = self.instance.get_run_by_id(run_id)
        try:
            if run is None:
                raise TakeflowError(f"Dagster run {run_id} does not exist")
            job, plan = self._location_job(run.job_name)
        except (TakeflowError, DagsterError) as exc:
            error = {"code": "launch_failed", "message": str(exc)}
            self.lifecycle.fail_queued(record.task_id, error)
            if run is not None:
                self.instance.report_run_failed(run, f"Takeflow could not run it: {exc}")
            return True
        adopted = adopted_run(run, plan, self.admission.validate, self.pg.get, record)
        if adopted.error is not None:  # the run's config does not validate: refuse it here
            self.lifecycle.fail_queued(record.task_id, adopted.error.to_dict())
            self.instance.report_run_failed(run, f"Takeflow refused it: {adopted.error.message}")
            return True
        plan = adopted.plan
        project_id = record.project_id or plan.graph.context.project
        project = self.projects.get(project_id) if project_id else None
        self.pg.update(
            record.task_id,
            graph=plan.graph.model_dump(mode="json"),
            project_id=project_id,
            node_states={n.node_id: "queued" for n in plan.nodes},
            metadata={**record.metadata, **adopted.record.metadata},
        )
        self.instance.add_run_tags(run.run_id, adopted.tags)
        return self._claim_and_run(
            record.task_id, plan, project, run.run_id, run.job_name,
            lambda execution: self.backend.execute_launched(execution, job, run),
        )  # fmt: skip

    def _location_job(self, name: str) -> tuple[JobDefinition, ExecutionPlan]:
        """The code location's job ``name`` (built from the saved canvases now, with this
        runner's compiler, so its ops reach this worker's backend) and its plan."""
        from dagster_defs.definitions import LocationSource, build_definitions

        if self.home is None:
            raise TakeflowError("this runner has no Takeflow home to load saved canvases from")
        source = LocationSource(self.home, self.projects, self.admission, self.compiler)
        definitions = build_definitions(source)
        job = definitions.get_job_def(name)
        plan = self.compiler.plan_for_job(name)
        if plan is None:
            raise TakeflowError(f"job {name!r} is not a saved Takeflow canvas")
        return job, plan

    def _conclude(self, execution: TaskExecution, success: bool, dagster_error: str | None) -> None:
        try:
            super()._conclude(execution, success, dagster_error)
        except LeaseLostError:  # fenced: the sweeper already ended the task; nothing was stored
            log.warning(
                "task %s: this worker lost its lease while running it (paused or cut off past "
                "lease_s); its outcome was discarded, the task had been failed over",
                execution.task_id,
            )
        finally:
            self.pg.release(execution.task_id)

    def keep_leases(self) -> None:
        """Extend this worker's leases; pass on cancel requests; stop tasks whose lease is lost."""
        alive = self.pg.heartbeat(self.worker_id, self.settings.lease_s)
        for task_id, signal in list(self._signals.items()):
            if task_id in self.pg.lost:
                signal.stop(
                    LeaseLostError(
                        f"worker {self.worker_id} lost its lease on task {task_id}",
                        task_id=task_id,
                    )
                )
            elif alive.get(task_id):
                signal.request_cancel()

    # -- cancel, wait, gauges (any process) ---------------------------------------------------

    def cancel(self, task_id: str) -> TaskRecord:
        record = self.get(task_id)
        if record.status == TaskStatus.QUEUED:
            cancelled = self.lifecycle.cancel_queued(task_id)
            if cancelled is not None:
                return cancelled
            record = self.get(task_id)  # a worker claimed it meanwhile
        if record.status == TaskStatus.RUNNING:
            local = self._signals.get(task_id)
            if local is not None:
                local.request_cancel()
            else:
                self.pg.request_cancel(task_id)
        return record

    def waiting_for(self, record: TaskRecord) -> str | None:
        """Names the queue of a waiting task that no live worker serves."""
        if record.status != TaskStatus.QUEUED:
            return None
        queue = self.turns.unserved(record.task_id, self.settings.lease_s)
        if queue is None:
            return None
        return (
            f"no live worker serves queue '{queue}': start one with "
            f"`takeflow worker --queues {queue}` (or `gpu` with enough GPU memory)"
        )

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
        return int(self._scalar(query))

    def _scalar(self, query: str, params: tuple[Any, ...] = ()) -> Any:
        """The first column of the first row (0 when none)."""
        with self.pg.pool.connection() as conn:
            found = conn.execute(query, params).fetchone()
        return found[0] if found else 0

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
