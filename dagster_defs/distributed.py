"""Distributed mode: API replicas and worker processes sharing PostgreSQL (state, queue, Dagster)
and Redis (live fan-out). Selected by ``TAKEFLOW_DATABASE_URL`` (or ``distributed.database_url``
in ``<home>/config.json``, ``dagster_defs.settings``); without it Takeflow stays embedded.

The runner is the same ``TaskRunner`` as embedded, composed with the parts of this module
(``dagster_defs.deployment`` has the table):
- ``JobQueuePool``, the task queue: ``put`` enqueues a procrastinate job in the submit
  transaction (task row, ``task.submitted`` and job commit together, under the intake lock so the
  queue limits hold across replicas); a job is a token of its queue: the worker runs that queue's
  next task in fair turns between users (``stores.postgres.turns``);
- ``ClusterCoordination``: each move and its event one transaction; one git writer per project
  across processes (advisory lock); cancel of a task another process runs through a flag its
  worker reads with its heartbeat; a fenced worker's outcome dropped; gauges of every process;
- ``QueueWorker``, the worker side (``takeflow worker``): serves queue jobs (``queued ->
  running`` is a claim in the task row: new epoch, lease; the plan is made again from the stored
  graph) and keeps its leases. Recovery is no start-up sweep but ``dagster_defs.sweeper.Sweeper``,
  which fails only tasks whose lease expired.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Iterable, Iterator
from typing import Any

from dagster import DagsterError, JobDefinition

from dagster_defs.queue import model_for, queue_for
from dagster_defs.run_plans import LAUNCHED, adopted_run
from dagster_defs.runner import TaskRunner
from dagster_defs.settings import ClusterSettings
from dagster_defs.sweeper import Sweeper
from dagster_defs.workers import QueueItem
from graph_runtime.errors import TakeflowError
from graph_runtime.projects import ProjectStore
from graph_runtime.services import WarmModels
from graph_runtime.tasks import TaskRecord, TaskStatus
from graph_runtime.validation import ExecutionPlan
from stores.home import TakeflowHome
from stores.postgres.cluster import ClusterStore
from stores.postgres.jobs import JobQueue
from stores.postgres.state import LeaseLostError, PostgresState
from stores.postgres.turns import QueueTurns

log = logging.getLogger(__name__)


class JobQueuePool:
    """The distributed task queue: a procrastinate job per task, deferred on the connection of
    the submit transaction; execution is the job queue's (``QueueWorker.run_task``)."""

    total = 0  # no threads here: workers are other processes (``ClusterCoordination`` counts)

    def __init__(self, state: PostgresState, jobs: JobQueue) -> None:
        self.state = state
        self.jobs = jobs
        self.turns = QueueTurns(state)
        self.cluster = ClusterStore(state)

    def start(self, run: Any) -> None:
        """Nothing to start: ``takeflow worker`` processes serve the jobs."""

    def put(
        self, task_id: str, plan: ExecutionPlan, project: Any, priority: int, user: str
    ) -> None:
        self.put_job(task_id, queue_for(plan), priority, model_for(plan))

    def put_job(self, task_id: str, queue: str, priority: int, model: str | None = None) -> None:
        """Give a stored queued task its turn in ``queue`` and defer its job (one transaction
        with the caller's, e.g. the submit)."""
        with self.state.transaction() as conn:
            self.turns.enqueue(task_id, queue, model)
            self.jobs.defer(conn, task_id, queue, priority)

    def remove(self, task_id: str) -> bool:
        return False  # a cancelled task's row says so; the job that finds it runs the next one

    def move(self, task_id: str, index: int) -> list[str] | None:
        """Reorder a waiting task among its user's (``QueueTurns.move``), under the intake lock
        the enqueues take; None when it is not waiting."""
        with self.cluster.intake():
            return self.turns.move(task_id, index)

    def positions(self, task_ids: Iterable[str]) -> dict[str, int]:
        found = {t: self.turns.position(t) for t in task_ids}
        return {t: p for t, p in found.items() if p is not None}

    def ahead(self, user: str, priority: int) -> int:
        return self.turns.ahead(user, priority)

    def queued_by(self, user: str) -> int:
        return self.turns.queued_by(user)

    def queued_in(self, project_id: str) -> int:
        return self.cluster.queued_in(project_id)

    def depth(self) -> int:
        return self.cluster.count(TaskStatus.QUEUED.value)

    def alive(self) -> int:
        return 0

    def stop_taking_work(self) -> None:
        pass

    def join(self, timeout: float) -> bool:
        return True


class ClusterCoordination:
    """Coordination through PostgreSQL: transactions, advisory locks, leases, a cancel flag."""

    poll_s = 0.05  # tasks end in other processes: waiters look again this often

    def __init__(self, state: PostgresState, settings: ClusterSettings) -> None:
        self.state = state
        self.settings = settings
        self.cluster = ClusterStore(state)
        self.turns = QueueTurns(state)

    def atomic(self) -> contextlib.AbstractContextManager[Any]:
        return self.state.transaction()

    def intake(self) -> contextlib.AbstractContextManager[Any]:
        return self.cluster.intake()

    def git_writer(self, project_id: str) -> contextlib.AbstractContextManager[Any]:
        return self.cluster.git_writer(project_id)

    @contextlib.contextmanager
    def concluding(self, task_id: str) -> Iterator[None]:
        try:
            yield
        except LeaseLostError:  # fenced: the sweeper already ended the task; nothing was stored
            log.warning(
                "task %s: this worker lost its lease while running it (paused or cut off past "
                "lease_s); its outcome was discarded, the task had been failed over",
                task_id,
            )
        finally:
            self.state.release(task_id)

    def cancel_elsewhere(self, task_id: str) -> bool:
        return self.state.request_cancel(task_id)

    def running(self, here: int) -> int:
        return self.cluster.count(TaskStatus.RUNNING.value)

    def workers_total(self, here: int) -> int:
        return self.cluster.workers_total()

    def workers_alive(self, here: int) -> int:
        return self.cluster.workers_alive(self.settings.lease_s)

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


class QueueWorker:
    """The worker side of a distributed runtime (``takeflow worker``): serves queue jobs with
    the runner, keeps this process's leases and passes on cancel requests."""

    def __init__(
        self,
        runner: TaskRunner,
        state: PostgresState,
        jobs: JobQueue,
        settings: ClusterSettings,
        worker_id: str,
        home: TakeflowHome,
    ) -> None:
        self.runner = runner
        self.state = state
        self.jobs = jobs
        self.settings = settings
        self.worker_id = worker_id
        self.home = home
        self.turns = QueueTurns(state)
        state.claim_as(worker_id, settings.lease_s)

    def register(self, queues: list[str]) -> None:
        self.state.register_worker(self.worker_id, queues, socket.gethostname(), os.getpid())

    def sweeper(self) -> Sweeper:
        return Sweeper(self.runner, self.state, self.jobs, self.settings)

    def run_task(self, task_id: str, queue: str | None = None, job_id: int | None = None) -> None:
        """Serve one queue job in this process (the queue worker calls it, one thread each):
        run the next task of the job's ``queue`` in fair turns (``task_id``, the task it was
        deferred for, when no queue is given or nothing else waits). The plan is made again
        from the stored graph, so any worker can run any task."""
        with self.state.serving(job_id):
            while True:  # another worker claimed the task we picked: it made progress, pick again
                picked = self.turns.next_queued(queue, self.warm_models()) if queue else None
                record = self.state.get(picked or task_id)
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
            for service in self.runner.services.values()
            if isinstance(service, WarmModels)
            for name in service.warm_models()
        ]

    def keep_leases(self) -> None:
        """Extend this worker's leases; pass on cancel requests; stop tasks whose lease is lost."""
        self.state.worker_heartbeat(self.worker_id)
        alive = self.state.heartbeat(self.worker_id, self.settings.lease_s)
        for task_id, signal in self.runner.signals().items():
            if task_id in self.state.lost:
                signal.stop(
                    LeaseLostError(
                        f"worker {self.worker_id} lost its lease on task {task_id}",
                        task_id=task_id,
                    )
                )
            elif alive.get(task_id):
                signal.request_cancel()

    def _run_record(self, record: TaskRecord) -> bool:
        """Claim and run a queued task; False when another worker claimed it first."""
        runner = self.runner
        if record.metadata.get(LAUNCHED):
            return self._run_launched(record)
        try:
            work = runner.admission.readmit(record)
        except TakeflowError as exc:  # e.g. a template this worker lacks
            runner.lifecycle.fail_queued(record.task_id, exc.to_dict())
            return True
        return runner.run_item(QueueItem(record.task_id, work.plan, work.project))

    def _run_launched(self, record: TaskRecord) -> bool:
        """A run Dagster created and ``QueueRunLauncher`` queued: find its job among the saved
        canvases, fill in the task's graph, claim the task and execute that very run."""
        runner = self.runner
        run_id = str(record.metadata[LAUNCHED])
        run = runner.instance.get_run_by_id(run_id)
        try:
            if run is None:
                raise TakeflowError(f"Dagster run {run_id} does not exist")
            job, plan = self._location_job(run.job_name)
        except (TakeflowError, DagsterError) as exc:
            error = {"code": "launch_failed", "message": str(exc)}
            runner.lifecycle.fail_queued(record.task_id, error)
            if run is not None:
                runner.instance.report_run_failed(run, f"Takeflow could not run it: {exc}")
            return True
        adopted = adopted_run(run, plan, runner.admission.validate, self.state.get, record)
        if adopted.error is not None:  # the run's config does not validate: refuse it here
            runner.lifecycle.fail_queued(record.task_id, adopted.error.to_dict())
            runner.instance.report_run_failed(run, f"Takeflow refused it: {adopted.error.message}")
            return True
        plan = adopted.plan
        project_id = record.project_id or plan.graph.context.project
        project: ProjectStore | None = runner.projects.get(project_id) if project_id else None
        self.state.update(
            record.task_id,
            graph=plan.graph.model_dump(mode="json"),
            project_id=project_id,
            node_states={n.node_id: "queued" for n in plan.nodes},
            metadata={**record.metadata, **adopted.record.metadata},
        )
        runner.instance.add_run_tags(run.run_id, adopted.tags)
        return runner.claim_and_run(
            record.task_id, plan, project, run.run_id, run.job_name,
            lambda execution: runner.backend.execute_launched(execution, job, run),
        )  # fmt: skip

    def _location_job(self, name: str) -> tuple[JobDefinition, ExecutionPlan]:
        """The code location's job ``name`` (built from the saved canvases now, with this
        runner's compiler, so its ops reach this worker's backend) and its plan."""
        from dagster_defs.definitions import LocationSource, build_definitions

        runner = self.runner
        source = LocationSource(self.home, runner.projects, runner.admission, runner.compiler)
        definitions = build_definitions(source)
        job = definitions.get_job_def(name)
        plan = runner.compiler.plan_for_job(name)
        if plan is None:
            raise TakeflowError(f"job {name!r} is not a saved Takeflow canvas")
        return job, plan
