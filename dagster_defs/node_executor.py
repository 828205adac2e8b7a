"""Running one node of a task: the template call inside an error boundary, with the node cache,
progress reporting, previews, output checks and mapping over lists. Knows nothing of Dagster:
the compiled ops reach it through the ``takeflow`` resource (``dagster_defs.backend``).

``TaskExecution`` is the live state of one running task. Only the thread that runs the task
writes it (its worker, or the Dagster thread of an adopted run: templates run in that thread
too); other threads read ``snapshot()``. Requests to stop arrive through its ``StopSignal``.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.trace import StatusCode

from dagster_defs.limits import Limits, StopSignal
from dagster_defs.observability import RunnerMetrics, TaskTelemetry
from graph_runtime.caching import NodeOutputCache, node_cache_keys
from graph_runtime.errors import (
    ProjectError,
    TakeflowError,
    TaskCancelledError,
    TemplateExecutionError,
)
from graph_runtime.events import EventBus, EventPayload, NodeState, NodeStateChanged, TaskProgress
from graph_runtime.mapping import element_fraction, element_message, map_elements, reports_element
from graph_runtime.projects import ProjectAssets, ProjectStore
from graph_runtime.take_sources import ProjectTakes
from graph_runtime.takes import Take
from graph_runtime.tasks import TaskRecord
from graph_runtime.templates import Quality
from graph_runtime.validation import ExecutionPlan, PlannedNode
from nodes.values import summarize

log = logging.getLogger(__name__)


@dataclass(eq=False)
class TaskExecution:
    """Live state of one running task (see the module docstring for who writes it)."""

    record: TaskRecord
    plan: ExecutionPlan
    project: ProjectStore | None
    run_id: str
    adopted: bool = False
    signal: StopSignal = field(default_factory=StopSignal)
    started: float = field(default_factory=time.perf_counter)
    cache_keys: dict[str, str | None] = field(default_factory=dict)
    node_states: dict[str, NodeState] = field(default_factory=dict)
    node_progress: dict[str, float] = field(default_factory=dict)
    timings_ms: dict[str, float] = field(default_factory=dict)
    cached_nodes: list[str] = field(default_factory=list)
    seeds: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    node_metadata: dict[str, dict[str, Any]] = field(default_factory=dict)
    error: TakeflowError | None = None
    take: Take | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def task_id(self) -> str:
        return self.record.task_id

    @property
    def overall_progress(self) -> float:
        total = len(self.plan.nodes) or 1
        return min(1.0, sum(self.node_progress.values()) / total)

    def set_node(self, node_id: str, state: NodeState, progress: float | None = None) -> None:
        with self._lock:
            self.node_states[node_id] = state
            if progress is not None:
                self.node_progress[node_id] = progress

    def set_progress(self, node_id: str, fraction: float) -> float:
        with self._lock:
            self.node_progress[node_id] = fraction
            return self.overall_progress

    def snapshot(self) -> tuple[dict[str, str], float]:
        """Node states and overall progress, consistent with each other."""
        with self._lock:
            return {k: v.value for k, v in self.node_states.items()}, self.overall_progress

    def emit(self, bus: EventBus, payload: EventPayload) -> None:
        bus.publish(self.record.task_id, self.record.project_id, payload)


class NodeReporter:
    """The ``ProgressReporter`` a template sees while it runs. For one element of a mapped node
    (``for_element``) progress is scaled into the element's share of the node."""

    def __init__(
        self,
        bus: EventBus,
        execution: TaskExecution,
        node: PlannedNode,
        services: Mapping[str, Any],
    ) -> None:
        self._bus = bus
        self._execution = execution
        self.node_id = node.node_id
        self.task_id = execution.task_id
        node_props = execution.plan.graph.node(node.node_id)
        self.quality = node_props.properties.quality if node_props else Quality.STANDARD
        self.services = services
        self._started = time.perf_counter()
        self._previews = itertools.count(1)
        self.element: tuple[int, int] | None = None  # (index, count) of a mapped node's element

    def for_element(self, index: int, count: int) -> NodeReporter:
        """The reporter of element ``index`` of ``count`` (same start time and preview numbers)."""
        copy = type(self).__new__(type(self))
        copy.__dict__.update(self.__dict__)
        copy.element = (index, count)
        return copy

    def check_cancelled(self) -> None:
        self._execution.signal.check(self.node_id)

    def progress(
        self, fraction: float, stage: str = "", message: str = "", preview: bytes | None = None
    ) -> None:
        self.check_cancelled()
        fraction = max(0.0, min(1.0, float(fraction)))
        position: dict[str, Any] = {}  # TaskProgress sends only the fields set
        if self.element is not None:
            index, count = self.element
            fraction = element_fraction(index, count, fraction)
            message = element_message(index, count, message)
            position = {"element": index, "elements": count}
        elapsed = time.perf_counter() - self._started
        eta = elapsed / fraction * (1.0 - fraction) if fraction > 0 else None
        overall = self._execution.set_progress(self.node_id, fraction)
        self._execution.emit(
            self._bus,
            TaskProgress(
                node_id=self.node_id,
                progress=overall,
                node_progress=fraction,
                stage=stage,
                message=message,
                eta=round(eta, 3) if eta is not None else None,
                preview_path=self._store_preview(preview) if preview else None,
                trace_id=self._execution.record.trace_id,
                **position,
            ),
        )

    def _store_preview(self, png: bytes) -> str | None:
        project = self._execution.project
        if project is None:
            return None
        try:
            return project.write_preview(self.task_id, self.node_id, next(self._previews), png)
        except (OSError, ProjectError) as exc:  # a preview is a nicety: never fail the task for it
            log.warning("preview for %s/%s not stored: %s", self.task_id, self.node_id, exc)
            return None

    def record_metadata(self, **data: Any) -> None:
        """Facts for the take's metadata (e.g. the model used), kept per node."""
        self._execution.node_metadata.setdefault(self.node_id, {}).update(data)


class NodeExecutor:
    """Runs templates for tasks: cache lookup, services, reporter, limits, error boundary."""

    def __init__(
        self,
        bus: EventBus,
        limits: Limits,
        telemetry: TaskTelemetry,
        services: dict[str, Any],
        node_cache: NodeOutputCache | None = None,
    ) -> None:
        self.bus = bus
        self.limits = limits
        self.telemetry = telemetry
        self.services = services
        self.node_cache = node_cache

    @property
    def metrics(self) -> RunnerMetrics:
        return self.telemetry.metrics

    def cache_keys(
        self, plan: ExecutionPlan, project: ProjectStore | None = None
    ) -> dict[str, str | None]:
        if self.node_cache is None:
            return {}
        quality = {n.id: n.properties.quality.value for n in plan.graph.nodes}
        return node_cache_keys(plan, quality, project)

    def _node_state(
        self, execution: TaskExecution, node_id: str, state: NodeState, **data: Any
    ) -> None:
        execution.set_node(node_id, state, 1.0 if state == NodeState.COMPLETED else None)
        execution.emit(
            self.bus,
            NodeStateChanged(
                node_id=node_id, state=state, trace_id=execution.record.trace_id, **data
            ),
        )

    def run(
        self, execution: TaskExecution, node: PlannedNode, values: dict[str, Any]
    ) -> Mapping[str, Any]:
        """Outputs of ``node`` for ``values``; raises a ``TakeflowError`` naming the node."""
        # The literal values this run used (run config may differ from the saved graph).
        execution.inputs[node.node_id] = {k: v for k, v in values.items() if k not in node.links}
        if execution.signal.cancel.is_set():
            execution.error = TaskCancelledError("task was cancelled", node_id=node.node_id)
            raise execution.error
        key = execution.cache_keys.get(node.node_id)
        cached = self._cached(execution, node, key)
        if cached is not None:
            return cached
        services = dict(self.services)
        if execution.project is not None:
            services["assets"] = ProjectAssets(execution.project)
            services["takes"] = ProjectTakes(execution.project)
        reporter = NodeReporter(self.bus, execution, node, services)
        self._node_state(execution, node.node_id, NodeState.RUNNING, template=node.template.ref)
        started = time.perf_counter()
        if node.mapped:  # once per element of the mapped lists (graph_runtime/mapping.py)
            outputs = map_elements(
                node.template,
                values,
                node.mapped,
                lambda index, count, element: self._call(
                    execution, node, reporter.for_element(index, count), element
                ),
            )
        else:
            outputs = self._call(execution, node, reporter, values)
        duration = (time.perf_counter() - started) * 1000
        execution.timings_ms[node.node_id] = round(duration, 3)
        if "seed" in outputs:
            execution.seeds[node.node_id] = outputs["seed"]
        if key is not None and node.template.state_key is not None:
            key = self._state_held(execution, node, key)
        if key is not None and self.node_cache is not None:
            self.node_cache.put(key, outputs)
        self._node_state(
            execution,
            node.node_id,
            NodeState.COMPLETED,
            duration_ms=round(duration, 3),
            outputs={k: summarize(v) for k, v in outputs.items()},
        )
        return outputs

    def _state_held(self, execution: TaskExecution, node: PlannedNode, key: str) -> str | None:
        """``key`` if the outside state the node read (``FunctionTemplate.state_key``: e.g. the
        active take) is still the one its key was made with; else None, and the keys of the
        nodes below it are dropped too, so no result is cached under a state it was not made
        from (the active take moved while the task ran)."""
        if self.cache_keys(execution.plan, execution.project).get(node.node_id) == key:
            return key
        dropped = {node.node_id}
        for planned in execution.plan.nodes:
            if dropped.intersection(planned.upstream):
                dropped.add(planned.node_id)
        for node_id in dropped:
            execution.cache_keys[node_id] = None
        return None

    def _cached(
        self, execution: TaskExecution, node: PlannedNode, key: str | None
    ) -> Mapping[str, Any] | None:
        if key is None or self.node_cache is None:
            return None
        cached = self.node_cache.get(key)
        if cached is None:
            return None
        execution.cached_nodes.append(node.node_id)
        if "seed" in cached:
            execution.seeds[node.node_id] = cached["seed"]
        self._node_state(
            execution,
            node.node_id,
            NodeState.COMPLETED,
            cached=True,
            duration_ms=0.0,
            outputs={k: summarize(v) for k, v in cached.items()},
        )
        return cached

    def _call(
        self,
        execution: TaskExecution,
        node: PlannedNode,
        reporter: NodeReporter,
        values: dict[str, Any],
    ) -> dict[str, Any]:
        """The error boundary around template code (one element of a mapped node: its time
        limit, its cancel check first): every failure becomes a TakeflowError. The
        template-time metric counts each successful call (each element of a mapped node)."""
        element = reporter.element
        handle = self.limits.node_started(
            node.node_id, node.template.id, node.template.timeout_s, execution.signal
        )
        task_id = execution.task_id
        try:
            with self.telemetry.child(
                task_id,
                f"takeflow.node {node.node_id}",
                record_errors=False,
                **{"takeflow.node": node.node_id, "takeflow.template": node.template.ref},
                **({"takeflow.element": element[0]} if element is not None else {}),
            ) as span:
                try:
                    if element is not None:
                        reporter.check_cancelled()  # cancel stops between elements
                    started = time.perf_counter()
                    outputs = dict(node.template.fn(reporter, values))
                    missing = [o.name for o in node.template.outputs if o.name not in outputs]
                    if missing:
                        raise ValueError(f"returned no value for {missing}")
                    self.metrics.template_seconds.labels(node.template.id).observe(
                        time.perf_counter() - started
                    )
                    if element is not None and reports_element(*element):
                        reporter.progress(1.0)
                    return outputs
                except TaskCancelledError as exc:
                    execution.error = exc
                    self._node_state(execution, node.node_id, NodeState.CANCELLED)
                    raise
                except Exception as exc:
                    error = self._error_of(execution, node, exc)
                    if element is not None:
                        error = error.with_defaults(element=element[0], elements=element[1])
                    self._fail(execution, node, error)
                    span.set_status(StatusCode.ERROR, error.message)
                    raise error from exc
        finally:
            self.limits.node_ended(handle)

    @staticmethod
    def _error_of(execution: TaskExecution, node: PlannedNode, exc: Exception) -> TakeflowError:
        stopped = execution.signal.error
        if stopped is not None:
            return stopped
        if isinstance(exc, TakeflowError):  # keep its stable code (e.g. model_not_found)
            return exc.with_defaults(node_id=node.node_id, template_id=node.template.id)
        return TemplateExecutionError(node.node_id, node.template.id, exc)

    def _fail(self, execution: TaskExecution, node: PlannedNode, error: TakeflowError) -> None:
        execution.error = error
        self._node_state(execution, node.node_id, NodeState.FAILED, error=error.to_dict())
