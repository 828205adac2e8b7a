"""The task runner: admitted graphs become Dagster runs on the persistent instance, their events
a durable, sequenced stream, their terminal outputs takes committed to git.

``TaskRunner`` is a thin facade that composes the rooms, each with one job
(docs/runner-design.md has the map): ``Admission`` (validate once), ``TaskLifecycle`` (the state
machine), ``DagsterBackend`` (runs, adoption, materializations), ``NodeExecutor`` (templates),
``Limits`` (time and memory), ``TakeRecorder`` and ``ProjectHistories`` (takes and commits).
One class serves both deployments: the task queue and the coordination between processes are
parts chosen at ``open_runtime`` (``dagster_defs.deployment``), never swapped afterwards. Runs
execute in process on worker threads; the instance's storage is tuned so that its bookkeeping
costs milliseconds.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from dagster import DagsterInstance, OpExecutionContext

from dagster_defs.admission import Admission, Submission, new_task_id
from dagster_defs.backend import DEFAULT_PUBLIC_URL, DagsterBackend
from dagster_defs.commits import ProjectHistories
from dagster_defs.compiler import JobCompiler, job_name
from dagster_defs.completion import TaskCompletion
from dagster_defs.deployment import Deployment, LocalCoordination
from dagster_defs.intake import QueuedTask, QueueFullError, QueueLimits, TaskIntake
from dagster_defs.lifecycle import TaskLifecycle, TaskState
from dagster_defs.limits import Limits, StopSignal
from dagster_defs.node_executor import NodeExecutor, TaskExecution
from dagster_defs.observability import RunnerMetrics, TaskTelemetry
from dagster_defs.queue_order import in_queue_order, not_pending, persist_order
from dagster_defs.run_plans import adopted_run
from dagster_defs.take_recorder import VERSIONS, TakeRecorder
from dagster_defs.workers import QueueItem, WorkerPool
from graph_runtime.caching import NodeOutputCache
from graph_runtime.canvas import CanvasGraph
from graph_runtime.errors import TakeflowError, TaskInterruptedError
from graph_runtime.events import EventBus, EventSink
from graph_runtime.projects import ProjectStore
from graph_runtime.registry import TemplateRegistry
from graph_runtime.scheduling import ThroughputEstimate
from graph_runtime.tasks import TaskRecord, TaskStatus
from graph_runtime.validation import ExecutionPlan
from stores.graph_shapes import GraphShapes
from stores.projects import ProjectCatalog

log = logging.getLogger(__name__)
__all__ = ["VERSIONS", "QueuedTask", "TaskRunner", "new_task_id"]


class TaskRunner:
    """Queues, runs, cancels and reports tasks. Thread-safe; ``workers`` run at once. With
    workers, it first recovers from a previous process's crash (``recover``)."""

    def __init__(
        self,
        registry: TemplateRegistry,
        projects: ProjectCatalog,
        state: TaskState,
        instance: DagsterInstance,
        workers: int = 2,
        services: Mapping[str, Any] | None = None,
        node_cache: NodeOutputCache | None = None,
        node_timeout_s: float = 3600.0,
        metrics: RunnerMetrics | None = None,
        memory_limit_mb: float | None = None,
        shutdown_grace_s: float = 10.0,
        queue_limits: QueueLimits | None = None,
        shapes: GraphShapes | None = None,
        public_url: str = DEFAULT_PUBLIC_URL,
        deployment: Deployment | None = None,
    ) -> None:
        """``deployment`` picks the task queue and the coordination (default: embedded, a
        ``WorkerPool`` of ``workers`` threads in this process)."""
        deployment = deployment or Deployment(WorkerPool(workers), LocalCoordination())
        self.coordination = deployment.coordination
        self.projects = projects
        self.state = state
        self.instance = instance
        self.shutdown_grace_s = shutdown_grace_s
        self.metrics = metrics or RunnerMetrics()
        self.telemetry = TaskTelemetry(self.metrics)
        self.bus = EventBus(state, hooks=[self.telemetry])
        self.lifecycle = TaskLifecycle(
            state, self.bus, self.telemetry, self.coordination.atomic, self.coordination.poll_s
        )
        provided = dict(services or {})  # one mapping: what ops get is what admission checks
        self.admission = Admission(registry, projects, self.telemetry, provided.keys())
        self.limits = Limits(node_timeout_s, memory_limit_mb)
        self.executor = NodeExecutor(self.bus, self.limits, self.telemetry, provided, node_cache)
        self.histories = ProjectHistories(self.metrics, self.coordination.git_writer)
        self.recorder = TakeRecorder(self.bus, self.telemetry)
        self.completion = TaskCompletion(self.lifecycle, self.histories, self.telemetry)
        self.backend = DagsterBackend(
            instance, self.executor, self.recorder, self._conclude, self._adopt, shapes, public_url
        )
        self.pool = deployment.queue
        self.throughput = ThroughputEstimate(workers)
        self.intake = TaskIntake(
            self.pool, self.lifecycle, self.admission, self.throughput, self.running,
            queue_limits or QueueLimits(), self.coordination.intake,
        )  # fmt: skip
        self._signals: dict[str, StopSignal] = {}  # running tasks, by task id
        self._by_task: dict[str, TaskExecution] = {}
        self._lock = threading.Lock()
        self.metrics.watch(self.queue_depth, self.running)
        if workers:
            self.recover()
            self.pool.start(self.run_item)
            self.limits.start()

    # -- configuration seen by callers and tests ----------------------------------------

    @property
    def registry(self) -> TemplateRegistry:
        return self.admission.registry

    @registry.setter
    def registry(self, registry: TemplateRegistry) -> None:
        self.admission.registry = registry

    @property
    def services(self) -> dict[str, Any]:
        return self.executor.services

    @property
    def node_cache(self) -> NodeOutputCache | None:
        return self.executor.node_cache

    @property
    def compiler(self) -> JobCompiler:
        return self.backend.compiler

    @property
    def memory_limit_mb(self) -> float | None:
        return self.limits.memory_limit_mb

    @memory_limit_mb.setter
    def memory_limit_mb(self, value: float | None) -> None:
        self.limits.memory_limit_mb = value

    @property
    def git_error(self) -> str | None:
        return self.histories.git_error

    @property
    def storage_error(self) -> str | None:
        return self.recorder.health.error

    # -- public API ------------------------------------------------------------------------

    def add_sink(self, sink: EventSink) -> None:
        self.bus.add_sink(sink)

    def remove_sink(self, sink: EventSink) -> None:
        self.bus.remove_sink(sink)

    def plan(self, graph: CanvasGraph) -> ExecutionPlan:
        """Validate a graph without submitting it (raises ``GraphValidationError``)."""
        return self.admission.validate(graph)

    def submit(
        self,
        work: Submission | CanvasGraph,
        *,
        project_id: str | None = None,
        shot: str | None = None,
        user: str | None = None,
        priority: int = 0,
        batch_id: str | None = None,
        batch_size: int | None = None,
        task_id: str | None = None,
        extra_metadata: Mapping[str, Any] | None = None,
        limited: bool = True,
    ) -> TaskRecord:
        """Queue an admitted submission (a bare graph is admitted first: validated once).
        Nothing is stored when admission fails or a queue limit refuses it (``limited``)."""
        if isinstance(work, CanvasGraph):
            work = self.admission.admit(
                work,
                project_id=project_id,
                shot=shot,
                user=user,
                task_id=task_id,
                metadata=extra_metadata,
            )
        return self.queue(
            [(work, priority)], batch_id=batch_id, batch_size=batch_size, limited=limited
        )[0].record

    def queue(
        self,
        entries: Sequence[tuple[Submission, int]],
        *,
        batch_id: str | None = None,
        batch_size: int | None = None,
        limited: bool = True,
    ) -> list[QueuedTask]:
        """Queue admitted submissions (each with its priority), all or none (``TaskIntake``)."""
        return self.intake.queue(entries, batch_id, batch_size, limited)

    def estimate(self, record: TaskRecord) -> tuple[int | None, float | None]:
        """A task's queue position and expected seconds to finish (``TaskIntake.estimate``)."""
        return self.intake.estimate(record)

    def estimates(
        self, records: Sequence[TaskRecord]
    ) -> dict[str, tuple[int | None, float | None]]:
        """``estimate`` of a page of tasks, in one walk of the queue."""
        return self.intake.estimates(records)

    def waiting_for(self, record: TaskRecord) -> str | None:
        """Why a queued task cannot start, when something outside the queue is missing (the
        embedded workers serve every task: never; distributed: no live worker serves its
        queue)."""
        return self.coordination.waiting_for(record)

    def get(self, task_id: str) -> TaskRecord:
        record = self.lifecycle.get(task_id)
        live = self._by_task.get(task_id)
        if live is not None and not record.status.terminal:
            states, progress = live.snapshot()
            record = replace(record, node_states=states, progress=progress)
        return record

    def cancel(self, task_id: str) -> TaskRecord:
        """Cancel a queued task at once, or a running one at its template's next progress point
        (here, or through the process that runs it)."""
        record = self.get(task_id)
        if record.status == TaskStatus.QUEUED:
            cancelled = self.lifecycle.cancel_queued(task_id)
            if cancelled is not None:
                self.pool.remove(task_id)
                return cancelled
            record = self.get(task_id)  # a worker claimed it meanwhile
        if record.status == TaskStatus.RUNNING:
            signal = self._signals.get(task_id)
            if signal is not None:
                signal.request_cancel()
            else:
                self.coordination.cancel_elsewhere(task_id)
        return record

    def move(self, task_id: str, position: int) -> list[str]:
        """Put a queued task at ``position`` (0: first) among its user's waiting tasks of its
        priority, in the queue and in the store (``queue_order``); their ids in the new order.
        ``TaskNotPendingError`` (409) once it runs or ended."""
        record = self.get(task_id)
        if record.status != TaskStatus.QUEUED:
            raise not_pending(record)
        band = self.pool.move(task_id, position)
        if band is None:
            raise not_pending(self.get(task_id))
        persist_order(self.state, band)
        return band

    def wait(self, task_id: str, timeout: float = 60.0) -> TaskRecord:
        return self.lifecycle.wait(task_id, timeout, self.get)

    def workers_total(self) -> int:
        return self.coordination.workers_total(self.pool.total)

    def workers_alive(self) -> int:
        return self.coordination.workers_alive(self.pool.alive())

    def queue_depth(self) -> int:
        return self.pool.depth()

    def running(self) -> int:
        return self.coordination.running(len(self._by_task))

    def signals(self) -> dict[str, StopSignal]:
        """The stop signals of the tasks this process runs now, by task id."""
        with self._lock:
            return dict(self._signals)

    # -- running ---------------------------------------------------------------------------

    def run_item(self, item: QueueItem) -> bool:
        """Claim and run a queued task as a new Dagster run of its plan's job; False when it
        was cancelled, taken or ended while it waited."""
        return self.claim_and_run(
            item.task_id, item.plan, item.project, str(uuid.uuid4()), job_name(item.plan),
            self.backend.execute,
        )  # fmt: skip

    def claim_and_run(
        self,
        task_id: str,
        plan: ExecutionPlan,
        project: ProjectStore | None,
        run_id: str,
        job: str,
        execute: Callable[[TaskExecution], tuple[bool, str | None]],
    ) -> bool:
        """Claim a queued task for the Dagster run ``run_id`` and run it with ``execute``;
        False (nothing ran) when it was cancelled, taken or ended while it waited."""
        signal = StopSignal()
        with self._lock:
            self._signals[task_id] = signal
        try:
            record = self.lifecycle.claim(task_id, run_id, job)
            if record is None:
                return False
            execution = TaskExecution(
                record, plan, project, run_id, signal=signal,
                cache_keys=self.executor.cache_keys(plan, project),
            )  # fmt: skip
            self._track(execution)
            success, dagster_error = execute(execution)
            self._conclude(execution, success, dagster_error)
            return True
        finally:
            with self._lock:
                self._signals.pop(task_id, None)

    def _track(self, execution: TaskExecution) -> None:
        with self._lock:
            self._by_task[execution.task_id] = execution

    def _adopt(self, context: OpExecutionContext, job_plan: ExecutionPlan) -> TaskExecution:
        """A run Dagster started itself (UI launch, re-execution, schedule tick) becomes a new
        running task that executes the graph and values of the run's own config."""
        run = context.run
        adopted = adopted_run(run, job_plan, self.admission.validate, self.state.get)
        error: TakeflowError | None = adopted.error
        if error is None:  # the queue limits hold for every door (this process may not hold
            try:  # the queue: count what is stored)
                self.intake.check_stored(self.state, adopted.record.user, adopted.record.project_id)
            except QueueFullError as exc:
                error = exc
        nodes = [n.node_id for n in adopted.plan.nodes]
        record = self.lifecycle.adopt(adopted.record, context.job_name, nodes)
        self.instance.add_run_tags(run.run_id, adopted.tags)
        project = self.projects.get(record.project_id) if record.project_id else None
        execution = TaskExecution(
            record,
            adopted.plan,
            project,
            context.run_id,
            adopted=True,
            cache_keys=self.executor.cache_keys(adopted.plan, project),
        )
        execution.error = error
        self._track(execution)
        return execution

    def _conclude(self, execution: TaskExecution, success: bool, dagster_error: str | None) -> None:
        try:
            with self.coordination.concluding(execution.task_id):
                self.completion.conclude(execution, success, dagster_error)
            if not execution.adopted:
                self.throughput.observe(time.perf_counter() - execution.started)
        finally:
            with self._lock:
                self._by_task.pop(execution.task_id, None)

    # -- start and stop --------------------------------------------------------------------

    def recover(self) -> None:
        """After a crash or kill: tasks whose process is gone fail (``interrupted``) and their
        Dagster runs are ended as failed; queued tasks are admitted and queued again;
        half-staged takes are discarded and takes that missed their commit committed (only
        when no other live process is running tasks on this home)."""
        orphans = self.lifecycle.orphans()
        others = [r for r in self.state.list(status=TaskStatus.RUNNING) if r not in orphans]
        if others:
            log.warning(
                "%d task(s) run in another live process: projects left as they are", len(others)
            )
        else:
            for project in self.projects.list():
                try:
                    project.discard_staging()
                    project.history.recover()
                except TakeflowError as exc:
                    log.warning("could not tidy project %s after restart: %s", project.id, exc)
        for record in orphans:
            self.interrupt(
                record, "the server stopped while this task ran", "a server stop or crash"
            )
        for record in in_queue_order(self.state.list(status=TaskStatus.QUEUED)):
            try:
                work = self.admission.readmit(record)
            except TakeflowError as exc:
                self.lifecycle.fail_queued(record.task_id, exc.to_dict())
                continue
            self.pool.put(record.task_id, work.plan, work.project, record.priority, record.user)

    def end_expired(
        self,
        expired: Sequence[TaskRecord],
        fence: Callable[[str, dict[str, Any]], TaskRecord | None],
    ) -> int:
        """End tasks whose worker's lease ran out as ``interrupted`` (``fence`` moves the
        stored task and fences its old owner out) and their Dagster runs as failed; how many
        this call ended (another sweeper may be first, or a lease renewed meanwhile)."""
        error = {"code": "interrupted", "message": "the worker running this task stopped"}
        ended = 0
        for record in expired:
            done = self.lifecycle.expire(record.task_id, error, fence)
            if done is not None:
                ended += 1
                self.backend.end_runs(done, "the Takeflow worker running it stopped")
        return ended

    def interrupt(self, record: TaskRecord, message: str, why: str) -> None:
        """End a running task as ``interrupted`` here and its Dagster runs as failed there."""
        ended = self.lifecycle.interrupt(record, message)
        runs = self.backend.end_runs(record, why)
        log.warning(
            "task %s interrupted by %s%s; Dagster run(s) marked failed: %s",
            record.task_id,
            why,
            "" if ended is not None else " (it had already ended)",
            ", ".join(runs) or "none",
        )

    def close(self, grace_s: float | None = None) -> None:
        """Stop taking work, give running tasks ``grace_s`` seconds (default
        ``shutdown_grace_s``) to finish, then end the rest as interrupted."""
        grace = self.shutdown_grace_s if grace_s is None else grace_s
        running = self.running()
        self.pool.stop_taking_work()
        if running:
            log.warning("stopping: %d running task(s) get %g s to finish", running, grace)
        if not self.pool.join(grace):
            with self._lock:
                left = [e for e in self._by_task.values() if not e.adopted]
            for execution in left:
                execution.signal.stop(
                    TaskInterruptedError(
                        "the server stopped before this task finished", task_id=execution.task_id
                    )
                )
            self.pool.join(2.0)  # templates stop at their next progress point
            for execution in left:
                record = self.state.get(execution.task_id) or execution.record
                self.interrupt(
                    replace(record, dagster_run_id=execution.run_id),
                    f"the server stopped before this task finished (grace period {grace:g} s)",
                    f"a server stop (grace period of {grace:g} s ran out)",
                )
        elif running:
            log.warning("stopping: every running task finished within the grace period")
        self.limits.close()
