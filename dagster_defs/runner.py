"""The task runner: validated graphs become Dagster runs on the persistent instance, their
events a durable, sequenced stream, their terminal outputs takes committed to git.

Runs execute in process on worker threads (no interpreter start-up per run); the instance's
storage is tuned so that its bookkeeping costs milliseconds (see docs/runner-design.md).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import queue
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from importlib import metadata as importlib_metadata
from typing import Any

from dagster import AssetKey, AssetMaterialization, DagsterInstance, MetadataValue
from opentelemetry import context as otel_context
from opentelemetry import trace

from dagster_defs.compiler import JobCompiler, job_name, run_config
from dagster_defs.execution import execute_with_origin
from dagster_defs.observability import RunnerMetrics, trace_id_of, tracer
from graph_runtime.caching import NodeOutputCache, node_cache_keys
from graph_runtime.canvas import CanvasGraph
from graph_runtime.errors import (
    GitError,
    TakeflowError,
    TaskCancelledError,
    TaskNotFoundError,
    TemplateExecutionError,
    TemplateMemoryError,
    TemplateTimeoutError,
)
from graph_runtime.events import EventSink, EventType, TaskEvent
from graph_runtime.registry import TemplateRegistry
from graph_runtime.takes import Take
from graph_runtime.tasks import TaskRecord, TaskStatus
from graph_runtime.templates import Quality
from graph_runtime.validation import ExecutionPlan, PlannedNode, validate_graph
from nodes.values import summarize, thumbnail_markdown, to_output_file
from stores.projects import Project, ProjectAssets, ProjectCatalog
from stores.sqlite_state import SqliteState

log = logging.getLogger(__name__)
_VERSIONED = ("takeflow", "dagster", "torch", "diffusers", "pillow")


def _versions() -> dict[str, str]:
    found = {}
    for dist in _VERSIONED:
        with contextlib.suppress(importlib_metadata.PackageNotFoundError):
            found[dist] = importlib_metadata.version(dist)
    return found


VERSIONS = _versions()


class _TemplateInterrupt(Exception):
    """Raised inside a worker thread whose template ignored its time limit."""


def _raise_in_thread(thread_id: int, exc_type: type[BaseException]) -> None:
    import ctypes

    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(exc_type)
    )


def _rss_bytes() -> int:
    """Resident memory of this process (Linux ``/proc``; 0 where unavailable)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def new_task_id() -> str:
    return f"task_{uuid.uuid4().hex[:16]}"


@dataclass
class _Execution:
    """Live state of one running task, reachable from its ops by Dagster run id."""

    record: TaskRecord
    plan: ExecutionPlan
    project: Project | None
    cancel: threading.Event = field(default_factory=threading.Event)
    node_states: dict[str, str] = field(default_factory=dict)
    node_progress: dict[str, float] = field(default_factory=dict)
    timings_ms: dict[str, float] = field(default_factory=dict)
    error: TakeflowError | None = None
    take: Take | None = None
    started: float = field(default_factory=time.perf_counter)
    cache_keys: dict[str, str | None] = field(default_factory=dict)
    cached_nodes: list[str] = field(default_factory=list)
    adopted: bool = False
    thread_id: int | None = None
    current_node: tuple[PlannedNode, float] | None = None
    rss_at_node_start: int = 0
    stop_error: TakeflowError | None = None  # set by the watchdog (time or memory limit)
    interrupted: bool = False
    seeds: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    node_metadata: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def overall_progress(self) -> float:
        total = len(self.plan.nodes) or 1
        return min(1.0, sum(self.node_progress.values()) / total)


class _NodeReporter:
    """The ``ProgressReporter`` a template sees while it runs inside its op."""

    def __init__(
        self,
        runner: TaskRunner,
        execution: _Execution,
        node: PlannedNode,
        services: Mapping[str, Any],
    ) -> None:
        self._runner = runner
        self._execution = execution
        self.node_id = node.node_id
        self.task_id = execution.record.task_id
        node_props = execution.plan.graph.node(node.node_id)
        self.quality = node_props.properties.quality if node_props else Quality.STANDARD
        self.services = services
        self._started = time.perf_counter()
        self._previews = itertools.count(1)

    def check_cancelled(self) -> None:
        if self._execution.stop_error is not None:
            raise self._execution.stop_error
        if self._execution.cancel.is_set():
            raise TaskCancelledError("task was cancelled", node_id=self.node_id)

    def progress(
        self, fraction: float, stage: str = "", message: str = "", preview: bytes | None = None
    ) -> None:
        self.check_cancelled()
        fraction = max(0.0, min(1.0, float(fraction)))
        elapsed = time.perf_counter() - self._started
        eta = elapsed / fraction * (1.0 - fraction) if fraction > 0 else None
        self._execution.node_progress[self.node_id] = fraction
        data: dict[str, Any] = {
            "node_id": self.node_id,
            "progress": self._execution.overall_progress,
            "node_progress": fraction,
            "stage": stage,
            "message": message,
            "eta": round(eta, 3) if eta is not None else None,
            "preview_url": self._store_preview(preview) if preview else None,
        }
        self._runner._emit(self._execution, EventType.TASK_PROGRESS, data)

    def _store_preview(self, png: bytes) -> str | None:
        project = self._execution.project
        if project is None:
            return None
        folder = f"05_Cache/previews/{self.task_id}"
        rel = f"{folder}/{self.node_id}_{next(self._previews):03d}.png"
        try:
            project.fs.makedirs(project.abs(folder), exist_ok=True)
            project.fs.pipe_file(project.abs(rel), png)
        except OSError as exc:  # a preview is a nicety: never fail the task for it
            log.warning("preview for %s/%s not stored: %s", self.task_id, self.node_id, exc)
            return None
        return f"/api/v1/projects/{project.id}/files/{rel}"

    def record_metadata(self, **data: Any) -> None:
        """Facts for the take's metadata (e.g. the model used), kept per node."""
        self._execution.node_metadata.setdefault(self.node_id, {}).update(data)


class TaskRunner:
    """Queues, runs, cancels and reports tasks. Thread-safe; ``workers`` runs at once."""

    def __init__(
        self,
        registry: TemplateRegistry,
        projects: ProjectCatalog,
        state: SqliteState,
        instance: DagsterInstance,
        workers: int = 2,
        services: Mapping[str, Any] | None = None,
        node_cache: NodeOutputCache | None = None,
        node_timeout_s: float = 3600.0,
        metrics: RunnerMetrics | None = None,
        recover: bool | None = None,
        memory_limit_mb: float | None = None,
    ) -> None:
        """``recover`` (default: when there are workers) tidies after a crash on start-up. A
        runner without workers (the Dagster code location, loaded by the webserver, daemon and
        each launched run) must not: it would fail the live server's running tasks."""
        self.registry = registry
        self.projects = projects
        self.state = state
        self.instance = instance
        self.services = dict(services or {})
        self.node_cache = node_cache
        self.node_timeout_s = node_timeout_s
        self.memory_limit_mb = memory_limit_mb
        self._memory_tripped = False
        self.metrics = metrics or RunnerMetrics()
        self._spans: dict[str, trace.Span] = {}
        self.compiler = JobCompiler(self._run_node, self._make_take)
        self._sinks: list[EventSink] = []
        self._queue: queue.PriorityQueue[tuple[int, int, str]] = queue.PriorityQueue()
        self._order = itertools.count()
        self._plans: dict[str, ExecutionPlan] = {}
        self._active: dict[str, _Execution] = {}  # by Dagster run id
        self._by_task: dict[str, _Execution] = {}
        self._lock = threading.RLock()
        self._done = threading.Condition(self._lock)
        self._uncommitted: dict[str, set[str]] = {}
        self.git_error: str | None = None
        self.storage_error: str | None = None
        self._closed = False
        self._workers = [
            threading.Thread(target=self._work, name=f"takeflow-worker-{i}", daemon=True)
            for i in range(workers)
        ]
        self.metrics.watch(self.queue_depth, self.running)
        if recover if recover is not None else workers > 0:
            self._recover()
        for w in self._workers:
            w.start()
        if workers:
            threading.Thread(target=self._watchdog, name="takeflow-watchdog", daemon=True).start()

    # -- public API ------------------------------------------------------------------------

    def add_sink(self, sink: EventSink) -> None:
        with self._lock:
            self._sinks = [*self._sinks, sink]

    def remove_sink(self, sink: EventSink) -> None:
        with self._lock:
            self._sinks = [s for s in self._sinks if s is not sink]

    def plan(self, graph: CanvasGraph) -> ExecutionPlan:
        """Validate a graph (raises ``GraphValidationError`` with every issue)."""
        return validate_graph(graph, self.registry, available_services=self.services.keys())

    def submit(
        self,
        graph: CanvasGraph,
        *,
        project_id: str | None = None,
        shot: str | None = None,
        user: str | None = None,
        priority: int = 0,
        batch_id: str | None = None,
        batch_size: int | None = None,
        task_id: str | None = None,
        extra_metadata: Mapping[str, Any] | None = None,
    ) -> TaskRecord:
        """Validate and queue a graph. Nothing is stored when validation fails.

        The task's trace starts here, as a child of the caller's current span if any."""
        task_id = task_id or new_task_id()
        span = tracer.start_span("takeflow.task", attributes={"takeflow.task_id": task_id})
        try:
            with (
                trace.use_span(span, end_on_exit=False),
                tracer.start_as_current_span("takeflow.validate"),
            ):
                plan = self.plan(graph)
                project_id = project_id or graph.context.project
                if project_id is not None:
                    self.projects.get(project_id)  # raises for unknown or unsafe ids
        except Exception as exc:
            span.record_exception(exc)
            span.set_status(trace.StatusCode.ERROR, str(exc))
            span.end()
            raise
        record = TaskRecord(
            task_id=task_id,
            graph=graph.model_dump(mode="json"),
            project_id=project_id,
            shot=shot or graph.context.shot,
            user=user or graph.context.user,
            priority=priority,
            batch_id=batch_id,
            node_states={n.node_id: "queued" for n in plan.nodes},
            trace_id=trace_id_of(span),
        )
        span.set_attribute("takeflow.project", project_id or "")
        if extra_metadata:
            record.graph["x-metadata"] = dict(extra_metadata)
        with self._lock:
            self.state.save(record)
            self._spans[record.task_id] = span
            self.metrics.tasks_submitted.inc()
            self._plans[record.task_id] = plan
            self._emit_raw(
                record,
                EventType.TASK_SUBMITTED,
                {
                    "status": "queued",
                    "shot_id": record.shot,
                    "nodes": [n.node_id for n in plan.nodes],
                    "estimated_time": self.estimate_seconds(len(plan.nodes)),
                    "batch_id": batch_id,
                    "batch_size": batch_size,
                },
            )
            self._queue.put((-priority, next(self._order), record.task_id))
        return record

    def estimate_seconds(self, nodes: int) -> float:
        """A rough estimate for ``estimated_completion``: queue length times a small per-op cost."""
        return round(0.02 * max(nodes, 1) + 0.02 * self._queue.qsize(), 3)

    def get(self, task_id: str) -> TaskRecord:
        record = self.state.get(task_id)
        if record is None:
            raise TaskNotFoundError(f"no task '{task_id}'", task_id=task_id)
        live = self._by_task.get(task_id)
        if live is not None and not record.status.terminal:
            record = replace(
                record, node_states=dict(live.node_states), progress=live.overall_progress
            )
        return record

    def cancel(self, task_id: str) -> TaskRecord:
        """Cancel a queued task at once, or a running one at its template's next progress point."""
        with self._lock:
            record = self.get(task_id)
            if record.status == TaskStatus.QUEUED:
                record = self.state.update(
                    task_id, status=TaskStatus.CANCELLED, finished_at=time.time()
                )
                self._emit_raw(record, EventType.TASK_CANCELLED, {"status": "cancelled"})
                self._done.notify_all()
            elif record.status == TaskStatus.RUNNING and task_id in self._by_task:
                self._by_task[task_id].cancel.set()
            return record

    def wait(self, task_id: str, timeout: float = 60.0) -> TaskRecord:
        deadline = time.monotonic() + timeout
        with self._done:
            while True:
                record = self.get(task_id)
                if record.status.terminal:
                    return record
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"task {task_id} still {record.status} after {timeout}s")
                self._done.wait(remaining)

    def workers_total(self) -> int:
        return len(self._workers)

    def workers_alive(self) -> int:
        return sum(1 for w in self._workers if w.is_alive())

    def queue_depth(self) -> int:
        return self._queue.qsize()

    def running(self) -> int:
        return len(self._by_task)

    def close(self) -> None:
        self._closed = True
        for _ in self._workers:
            self._queue.put((10**9, next(self._order), ""))
        for w in self._workers:
            w.join(timeout=10)

    # -- events ----------------------------------------------------------------------------

    def _emit_raw(self, record: TaskRecord, type_: EventType, data: dict[str, Any]) -> TaskEvent:
        if record.trace_id:
            data = {**data, "trace_id": record.trace_id}
        if type_ == EventType.TASK_PROGRESS:  # frequent: no span of its own
            event = self._publish(record, type_, data)
        else:
            with (
                self._task_span(record.task_id),
                tracer.start_as_current_span(
                    "takeflow.event.publish", attributes={"takeflow.event": type_.value}
                ),
            ):
                event = self._publish(record, type_, data)
        self.metrics.events_published.labels(type_.value).inc()
        return event

    def _publish(self, record: TaskRecord, type_: EventType, data: dict[str, Any]) -> TaskEvent:
        event = self.state.append(type_.value, record.task_id, record.project_id, data)
        for sink in self._sinks:
            try:
                sink.emit(event)
            except Exception:  # a broken sink must not break the run
                log.exception("event sink %r failed", sink)
        return event

    def _span_context(self, task_id: str) -> otel_context.Context | None:
        span = self._spans.get(task_id)
        return trace.set_span_in_context(span) if span is not None else None

    def _task_span(self, task_id: str) -> Any:
        """Make the task's root span current (a no-op context when the task has none)."""
        span = self._spans.get(task_id)
        if span is None:
            return contextlib.nullcontext()
        return trace.use_span(span, end_on_exit=False)

    def _emit(self, execution: _Execution, type_: EventType, data: dict[str, Any]) -> TaskEvent:
        return self._emit_raw(execution.record, type_, data)

    def _node_state(self, execution: _Execution, node_id: str, state: str, **data: Any) -> None:
        execution.node_states[node_id] = state
        self._emit(execution, EventType.NODE_STATE, {"node_id": node_id, "state": state, **data})

    # -- execution -------------------------------------------------------------------------

    def _recover(self) -> None:
        """After a restart: running tasks failed (``interrupted``), queued tasks queued again,
        half-staged takes discarded, takes that missed their commit committed."""
        for project in self.projects.list():
            try:
                project.takes.discard_staging()
                project.repo.recover()
            except TakeflowError as exc:
                log.warning("could not tidy project %s after restart: %s", project.id, exc)
        for record in self.state.list(status=TaskStatus.RUNNING):
            record = self.state.update(
                record.task_id,
                status=TaskStatus.FAILED,
                finished_at=time.time(),
                error={"code": "interrupted", "message": "the server stopped while it ran"},
            )
            self._emit_raw(
                record,
                EventType.TASK_FAILED,
                {"code": "interrupted", "message": "the server stopped while this task ran"},
            )
        for record in self.state.list(status=TaskStatus.QUEUED):
            try:
                self._plans[record.task_id] = self.plan(
                    CanvasGraph.model_validate(
                        {k: v for k, v in record.graph.items() if k != "x-metadata"}
                    )
                )
            except TakeflowError as exc:
                record = self.state.update(
                    record.task_id, status=TaskStatus.FAILED, error=exc.to_dict()
                )
                self._emit_raw(record, EventType.TASK_FAILED, exc.to_dict())
                continue
            self._queue.put((-record.priority, next(self._order), record.task_id))

    def _work(self) -> None:
        while True:
            _, _, task_id = self._queue.get()
            if self._closed or not task_id:
                return
            try:
                self._execute(task_id)
            except Exception:
                log.exception("task %s crashed the worker loop", task_id)

    def _claim(self, task_id: str) -> _Execution | None:
        with self._lock:
            record = self.state.get(task_id)
            plan = self._plans.pop(task_id, None)
            if record is None or record.status != TaskStatus.QUEUED or plan is None:
                return None
            record = self.state.update(task_id, status=TaskStatus.RUNNING, started_at=time.time())
            project = self.projects.get(record.project_id) if record.project_id else None
            execution = _Execution(record, plan, project, cache_keys=self._cache_keys(plan))
            self._by_task[task_id] = execution
            return execution

    def _cache_keys(self, plan: ExecutionPlan) -> dict[str, str | None]:
        if self.node_cache is None:
            return {}
        quality = {n.id: n.properties.quality.value for n in plan.graph.nodes}
        return node_cache_keys(plan, quality)

    def _execution_for(self, context: Any) -> _Execution:
        """The live task of a Dagster run; runs Dagster started itself (schedule ticks, UI
        re-execution) are adopted as new tasks on first sight."""
        execution = self._active.get(context.run_id)
        if execution is not None:
            return execution
        with self._lock:
            execution = self._active.get(context.run_id)
            if execution is None:
                execution = self._adopt(context)
            return execution

    def _adopt(self, context: Any) -> _Execution:
        plan = self.compiler.plan_for_job(context.job_name)
        if plan is None:
            raise RuntimeError(
                f"job {context.job_name!r} is not a Takeflow graph this code location knows"
            )
        tags = dict(context.run.tags)
        task_id = tags.get("takeflow/task_id") or ""
        if not task_id or self.state.get(task_id) is not None:
            task_id = f"task_{context.run_id.replace('-', '')[:16]}"
        project_id = tags.get("takeflow/project") or plan.graph.context.project
        record = TaskRecord(
            task_id=task_id,
            graph=plan.graph.model_dump(mode="json"),
            project_id=project_id,
            shot=tags.get("takeflow/shot") or plan.graph.context.shot,
            user=tags.get("takeflow/user") or "dagster",
            status=TaskStatus.RUNNING,
            started_at=time.time(),
            node_states={n.node_id: "queued" for n in plan.nodes},
            dagster_run_id=context.run_id,
        )
        self.state.save(record)
        project = self.projects.get(project_id) if project_id else None
        execution = _Execution(
            record, plan, project, cache_keys=self._cache_keys(plan), adopted=True
        )
        self._active[context.run_id] = execution
        self._by_task[task_id] = execution
        self._emit(
            execution,
            EventType.TASK_STARTED,
            {
                "status": "running",
                "dagster_run_id": context.run_id,
                "adopted": True,
                "job_name": context.job_name,
            },
        )
        return execution

    def _finish_adopted(self, execution: _Execution, run_id: str) -> None:
        self._active.pop(run_id, None)
        elapsed = time.perf_counter() - execution.started
        if execution.error is None:
            self._complete(execution, run_id, elapsed)
        else:
            error = execution.error.to_dict()
            self._finish(execution, TaskStatus.FAILED, EventType.TASK_FAILED, error, run_id, error)

    def _execute(self, task_id: str) -> None:
        execution = self._claim(task_id)
        if execution is None:
            return
        record, plan = execution.record, execution.plan
        run_id = str(uuid.uuid4())
        self._emit(
            execution,
            EventType.TASK_STARTED,
            {"status": "running", "dagster_run_id": run_id, "job_name": job_name(plan)},
        )
        execution.thread_id = threading.get_ident()
        self._active[run_id] = execution
        dagster_error: str | None = None
        try:
            job = self.compiler.job_for(plan, with_takes=execution.project is not None)
            success = execute_with_origin(
                job, run_config(plan), self.instance, run_id, self._tags(record, plan)
            )
        except Exception as exc:  # Dagster itself failed (config, storage)
            log.exception("dagster failed to run task %s", task_id)
            success, dagster_error = False, f"{type(exc).__name__}: {exc}"
        finally:
            self._active.pop(run_id, None)
        elapsed = time.perf_counter() - execution.started
        if success:
            self._complete(execution, run_id, elapsed)
        elif execution.stop_error is None and (
            execution.cancel.is_set() or isinstance(execution.error, TaskCancelledError)
        ):
            self._finish(
                execution,
                TaskStatus.CANCELLED,
                EventType.TASK_CANCELLED,
                {
                    "status": "cancelled",
                    "node_id": getattr(execution.error, "details", {}).get("node_id"),
                },
                run_id,
            )
        else:
            error = (
                execution.error.to_dict()
                if execution.error
                else {"code": "internal_error", "message": dagster_error or "the run failed"}
            )
            self._finish(execution, TaskStatus.FAILED, EventType.TASK_FAILED, error, run_id, error)

    def _tags(self, record: TaskRecord, plan: ExecutionPlan) -> dict[str, str]:
        tags = {
            "takeflow/task_id": record.task_id,
            "takeflow/shot": record.shot,
            "takeflow/graph_hash": plan.content_hash,
            "takeflow/user": record.user,
        }
        if record.project_id:
            tags["takeflow/project"] = record.project_id
        if record.batch_id:
            tags["takeflow/batch_id"] = record.batch_id
        return tags

    def _complete(self, execution: _Execution, run_id: str, elapsed: float) -> None:
        take = execution.take
        commit: str | None = None
        if take is not None and execution.project is not None:
            commit = self._commit(execution.project, take, execution.record)
        data: dict[str, Any] = {
            "status": "completed",
            "execution_time": round(elapsed, 4),
            "takes": [take.take_id] if take else [],
            "outputs": {k: v.to_dict() for k, v in take.outputs.items()} if take else {},
            "take": take.to_dict() if take else None,
            "commit": commit,
            "timings_ms": execution.timings_ms,
        }
        self._finish(execution, TaskStatus.COMPLETED, EventType.TASK_COMPLETED, data, run_id)

    def _commit(self, project: Project, take: Take, record: TaskRecord) -> str | None:
        pending = self._uncommitted.setdefault(project.id, set())
        paths = sorted({take.directory, *pending})
        message = (
            f"{take.take_id} of {take.shot} ({record.graph.get('name', 'graph')})\n\n"
            f"Takeflow-Task: {record.task_id}\n"
        )
        started = time.perf_counter()
        try:
            with tracer.start_as_current_span(
                "takeflow.git.commit",
                context=self._span_context(record.task_id),
                attributes={"takeflow.project": project.id},
            ):
                sha = project.repo.commit(paths, message)
            self.metrics.git_commit_seconds.observe(time.perf_counter() - started)
        except GitError as exc:
            log.warning("git commit failed in project %s: %s", project.id, exc.message)
            pending.add(take.directory)
            self.git_error = exc.message
            return None
        pending.clear()
        self.git_error = None
        return sha

    def _finish(
        self,
        execution: _Execution,
        status: TaskStatus,
        event: EventType,
        data: dict[str, Any],
        run_id: str,
        error: dict[str, Any] | None = None,
    ) -> None:
        with self._lock:
            record = self.state.update(
                execution.record.task_id,
                status=status,
                finished_at=time.time(),
                node_states=dict(execution.node_states),
                progress=1.0 if status == TaskStatus.COMPLETED else execution.overall_progress,
                takes=[execution.take.take_id] if execution.take else [],
                error=error,
                dagster_run_id=run_id,
            )
            self._by_task.pop(record.task_id, None)
            self._emit_raw(record, event, data)
            self._done.notify_all()
        self.metrics.tasks_finished.labels(status.value).inc()
        if status == TaskStatus.COMPLETED and record.started_at:
            template_s = sum(execution.timings_ms.values()) / 1000
            elapsed = time.perf_counter() - execution.started
            self.metrics.overhead_seconds.observe(max(0.0, elapsed - template_s))
        log.info("task %s %s trace_id=%s", record.task_id, status.value, record.trace_id or "-")
        span = self._spans.pop(record.task_id, None)
        if span is not None:
            span.set_attribute("takeflow.status", status.value)
            if status != TaskStatus.COMPLETED:
                span.set_status(trace.StatusCode.ERROR, (error or {}).get("message", status.value))
            span.end()

    def _watchdog(self, interval: float = 0.25, grace_s: float = 2.0) -> None:
        """Stops templates that outlive their time limit: first at their next progress call,
        then, after a grace period, by raising inside the worker thread (between Python
        calls; a template blocked inside one C call stops when it returns). Also stops the
        template that grew the process most when memory goes over the limit."""
        while not self._closed:
            time.sleep(interval)
            if self.memory_limit_mb:
                self._check_memory(self.memory_limit_mb)
            now = time.monotonic()
            for execution in list(self._by_task.values()):
                current = execution.current_node
                if current is None:
                    continue
                node, since = current
                limit = node.template.timeout_s or self.node_timeout_s
                if now - since <= limit:
                    continue
                if execution.stop_error is None:
                    execution.stop_error = TemplateTimeoutError(
                        node.node_id, node.template.id, limit
                    )
                    execution.cancel.set()
                elif (
                    now - since > limit + grace_s
                    and execution.thread_id is not None
                    and not execution.interrupted
                ):
                    execution.interrupted = True
                    _raise_in_thread(execution.thread_id, _TemplateInterrupt)

    def _check_memory(self, limit_mb: float) -> None:
        rss = _rss_bytes()
        if rss <= limit_mb * 2**20:
            self._memory_tripped = False
            return
        if self._memory_tripped:  # already stopped one; wait for memory to come back
            return
        running = [
            e for e in list(self._by_task.values()) if e.current_node and e.stop_error is None
        ]
        if not running:
            return
        culprit = max(running, key=lambda e: rss - e.rss_at_node_start)
        node = culprit.current_node[0]  # type: ignore[index]
        culprit.stop_error = TemplateMemoryError(
            node.node_id, node.template.id, rss / 2**20, limit_mb
        )
        culprit.cancel.set()
        self._memory_tripped = True
        if culprit.thread_id is not None and not culprit.interrupted:
            culprit.interrupted = True
            _raise_in_thread(culprit.thread_id, _TemplateInterrupt)

    # -- called from inside Dagster ops ----------------------------------------------------

    def _run_node(
        self, context: Any, node: PlannedNode, values: dict[str, Any]
    ) -> Mapping[str, Any]:
        execution = self._execution_for(context)
        try:
            outputs = self._call_template(execution, node, values)
        except Exception:
            if execution.adopted:
                self._finish_adopted(execution, context.run_id)
            raise
        if execution.adopted and execution.project is None and node is execution.plan.nodes[-1]:
            self._finish_adopted(execution, context.run_id)
        return outputs

    def _call_template(
        self, execution: _Execution, node: PlannedNode, values: dict[str, Any]
    ) -> Mapping[str, Any]:
        # The literal values this run used (run config may differ from the saved graph).
        execution.inputs[node.node_id] = {k: v for k, v in values.items() if k not in node.links}
        if execution.cancel.is_set():
            self._raise_cancel(execution, node)
        key = execution.cache_keys.get(node.node_id)
        if key is not None and self.node_cache is not None:
            cached = self.node_cache.get(key)
            if cached is not None:
                execution.node_progress[node.node_id] = 1.0
                execution.cached_nodes.append(node.node_id)
                if "seed" in cached:
                    execution.seeds[node.node_id] = cached["seed"]
                self._node_state(
                    execution,
                    node.node_id,
                    "completed",
                    cached=True,
                    duration_ms=0.0,
                    outputs={k: summarize(v) for k, v in cached.items()},
                )
                return cached
        services = dict(self.services)
        if execution.project is not None:
            services["assets"] = ProjectAssets(execution.project)
        reporter = _NodeReporter(self, execution, node, services)
        self._node_state(execution, node.node_id, "running", template=node.template.ref)
        started = time.perf_counter()
        execution.current_node = (node, time.monotonic())
        execution.rss_at_node_start = _rss_bytes()
        node_span = tracer.start_span(
            f"takeflow.node {node.node_id}",
            context=self._span_context(execution.record.task_id),
            attributes={"takeflow.node": node.node_id, "takeflow.template": node.template.ref},
        )
        token = otel_context.attach(trace.set_span_in_context(node_span))
        try:
            outputs = dict(node.template.fn(reporter, values))
        except TaskCancelledError as exc:
            execution.error = exc
            self._node_state(execution, node.node_id, "cancelled")
            raise
        except Exception as exc:
            error: TakeflowError
            if execution.stop_error is not None:
                error = execution.stop_error
            elif isinstance(exc, TakeflowError):  # keep its stable code (e.g. model_not_found)
                error = exc
                error.details.setdefault("node_id", node.node_id)
                error.details.setdefault("template_id", node.template.id)
            else:
                error = TemplateExecutionError(node.node_id, node.template.id, exc)
            execution.error = error
            self._node_state(execution, node.node_id, "failed", error=error.to_dict())
            node_span.set_status(trace.StatusCode.ERROR, error.message)
            raise error from exc
        finally:
            execution.current_node = None
            otel_context.detach(token)
            node_span.end()
        duration = (time.perf_counter() - started) * 1000
        self.metrics.template_seconds.labels(node.template.id).observe(duration / 1000)
        missing = [o.name for o in node.template.outputs if o.name not in outputs]
        if missing:
            error = TemplateExecutionError(
                node.node_id, node.template.id, ValueError(f"returned no value for {missing}")
            )
            execution.error = error
            self._node_state(execution, node.node_id, "failed", error=error.to_dict())
            raise error
        execution.timings_ms[node.node_id] = round(duration, 3)
        execution.node_progress[node.node_id] = 1.0
        if "seed" in outputs:
            execution.seeds[node.node_id] = outputs["seed"]
        if key is not None and self.node_cache is not None:
            self.node_cache.put(key, outputs)
        self._node_state(
            execution,
            node.node_id,
            "completed",
            duration_ms=round(duration, 3),
            outputs={k: summarize(v) for k, v in outputs.items()},
        )
        return outputs

    def _raise_cancel(self, execution: _Execution, node: PlannedNode) -> None:
        execution.error = TaskCancelledError("task was cancelled", node_id=node.node_id)
        raise execution.error

    def _make_take(
        self, context: Any, terminal_outputs: dict[str, Mapping[str, Any]]
    ) -> Iterator[AssetMaterialization]:
        execution = self._execution_for(context)
        project, plan, record = execution.project, execution.plan, execution.record
        assert project is not None
        port_counts: dict[str, int] = {}
        for nid in plan.terminal:
            for out in plan.node(nid).template.outputs:
                port_counts[out.name] = port_counts.get(out.name, 0) + 1
        files = []
        for nid in plan.terminal:
            for out in plan.node(nid).template.outputs:
                key = out.name if port_counts[out.name] == 1 else f"{nid}.{out.name}"
                files.append(to_output_file(key, out.type, terminal_outputs[nid][out.name]))
        inputs = {n.node_id: execution.inputs.get(n.node_id, dict(n.literals)) for n in plan.nodes}
        seeds = {nid: v["seed"] for nid, v in inputs.items() if v.get("seed") is not None}
        seeds.update(execution.seeds)  # the seeds actually used, reported by the templates
        recorded: dict[str, Any] = {}
        for facts in execution.node_metadata.values():
            recorded.update(facts)
        metadata = {
            "task_id": record.task_id,
            "user_id": record.user,
            "graph_name": plan.graph.name,
            "graph_hash": plan.content_hash,
            "dagster_run_id": context.run_id,
            "templates": [
                {"node_id": n.node_id, "template": n.template.id, "version": n.template.version}
                for n in plan.nodes
            ],
            "inputs": inputs,
            "quality": {n.id: n.properties.quality.value for n in plan.graph.nodes},
            "seed": next(iter(seeds.values())) if len(set(seeds.values())) == 1 else None,
            "seeds": seeds,
            "timings_ms": dict(execution.timings_ms),
            "cached_nodes": list(execution.cached_nodes),
            "trace_id": record.trace_id,
            "node_metadata": execution.node_metadata,
            "schedule": context.run.tags.get("dagster/schedule_name"),
            **recorded,
            "versions": VERSIONS,
            **record.graph.get("x-metadata", {}),
        }
        try:
            with tracer.start_as_current_span(
                "takeflow.take.store", context=self._span_context(record.task_id)
            ):
                take = project.takes.create(record.shot, files, metadata)
        except TakeflowError as exc:
            execution.error = exc
            self.storage_error = exc.message
            if execution.adopted:
                self._finish_adopted(execution, context.run_id)
            raise
        self.storage_error = None
        execution.take = take
        self._emit(execution, EventType.TAKE_CREATED, {"take": take.to_dict()})
        chapter, scene, shot = record.shot.split("/")
        previews = {f.name: thumbnail_markdown(f) for f in files}
        for name, stored in take.outputs.items():
            preview = previews.get(name)
            extra = {"preview": MetadataValue.md(preview)} if preview else {}
            yield AssetMaterialization(
                asset_key=AssetKey(
                    ["takeflow", project.id, chapter, scene, shot, name.replace(".", "__")]
                ),
                description=f"{take.take_id} of {record.shot}",
                metadata={
                    "take_id": take.take_id,
                    "take_number": take.number,
                    "path": MetadataValue.path(project.abs(stored.path)),
                    "task_id": record.task_id,
                    "content_type": stored.content_type,
                    "size": stored.size,
                    "seed": MetadataValue.json(seeds),
                    **extra,
                },
            )
        if execution.adopted:
            self._finish_adopted(execution, context.run_id)
