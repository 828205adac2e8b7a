"""Tracing (OpenTelemetry) and metrics (Prometheus) for the runner and the server.

One trace per task: its root span starts at submission (as a child of the HTTP request's span
when there is one) and ends with the task; validation, each node, take storage, the git commit
and each published event are child spans. With no tracer provider configured the API is a
no-op and costs next to nothing.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

tracer = trace.get_tracer("takeflow")

_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


def trace_id_of(span: trace.Span) -> str | None:
    context = span.get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


class RunnerMetrics:
    """Prometheus metrics of one runtime, in a registry of its own (several may share a process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.tasks_submitted = Counter(
            "takeflow_tasks_submitted", "Tasks accepted for running", registry=r
        )
        self.tasks_finished = Counter(
            "takeflow_tasks_finished", "Tasks that ended, by final status", ["status"], registry=r
        )
        self.queue_depth = Gauge("takeflow_queue_depth", "Tasks waiting for a worker", registry=r)
        self.running = Gauge("takeflow_tasks_running", "Tasks running now", registry=r)
        self.template_seconds = Histogram(
            "takeflow_template_duration_seconds", "Time inside a template, by template",
            ["template"], buckets=_DURATION_BUCKETS, registry=r,
        )  # fmt: skip
        self.overhead_seconds = Histogram(
            "takeflow_task_overhead_seconds",
            "End-to-end task time minus the templates' own time",
            buckets=_DURATION_BUCKETS, registry=r,
        )  # fmt: skip
        self.events_published = Counter(
            "takeflow_events_published", "Events stored and fanned out, by type", ["type"],
            registry=r,
        )  # fmt: skip
        self.events_replayed = Counter(
            "takeflow_events_replayed", "Events sent to clients from the durable log", registry=r
        )
        self.websocket_clients = Gauge(
            "takeflow_websocket_clients", "Connected WebSocket clients", registry=r
        )
        self.git_commit_seconds = Histogram(
            "takeflow_git_commit_seconds", "Time to commit takes to a project's repository",
            buckets=_DURATION_BUCKETS, registry=r,
        )  # fmt: skip

    def watch(self, queue_depth: Callable[[], float], running: Callable[[], float]) -> None:
        self.queue_depth.set_function(queue_depth)
        self.running.set_function(running)


class TaskTelemetry:
    """One trace per task and the runner's metrics, kept out of the task logic: it starts and
    ends each task's root span, opens child spans on request, and is the event bus's publish
    hook (a span per stored event, except frequent progress; a counter per event type)."""

    def __init__(self, metrics: RunnerMetrics) -> None:
        self.metrics = metrics
        self._spans: dict[str, trace.Span] = {}
        self._lock = threading.Lock()

    def start_task(self, task_id: str) -> trace.Span:
        """The task's root span, a child of the caller's current span if any."""
        span = tracer.start_span("takeflow.task", attributes={"takeflow.task_id": task_id})
        with self._lock:
            self._spans[task_id] = span
        return span

    def forget(self, task_id: str) -> None:
        with self._lock:
            span = self._spans.pop(task_id, None)
        if span is not None:
            span.end()

    def end_task(self, task_id: str, status: str, failed_message: str | None) -> None:
        with self._lock:
            span = self._spans.pop(task_id, None)
        if span is None:
            return
        span.set_attribute("takeflow.status", status)
        if failed_message is not None:
            span.set_status(trace.StatusCode.ERROR, failed_message)
        span.end()

    def context(self, task_id: str) -> otel_context.Context | None:
        span = self._spans.get(task_id)
        return trace.set_span_in_context(span) if span is not None else None

    def task_span(self, task_id: str) -> AbstractContextManager[Any]:
        """Make the task's root span current (a no-op context when the task has none)."""
        span = self._spans.get(task_id)
        if span is None:
            return contextlib.nullcontext()
        return trace.use_span(span, end_on_exit=False)

    def child(
        self, task_id: str, name: str, record_errors: bool = True, **attributes: Any
    ) -> AbstractContextManager[Any]:
        """A child span of the task's root span, current while the block runs (with
        ``record_errors=False`` the caller decides what an exception means for the span)."""
        return tracer.start_as_current_span(
            name,
            context=self.context(task_id),
            attributes=attributes or None,
            record_exception=record_errors,
            set_status_on_exception=record_errors,
        )

    # -- EventBus publish hook -------------------------------------------------------------

    @contextlib.contextmanager
    def publishing(self, type_: str, task_id: str) -> Iterator[None]:
        if type_ == "task.progress":  # frequent: no span of its own
            yield
            return
        with (
            self.task_span(task_id),
            tracer.start_as_current_span(
                "takeflow.event.publish", attributes={"takeflow.event": type_}
            ),
        ):
            yield

    def published(self, event: Any) -> None:
        self.metrics.events_published.labels(event.type).inc()
