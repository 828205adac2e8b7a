"""Tracing (OpenTelemetry) and metrics (Prometheus) for the runner and the server.

One trace per task: its root span starts at submission (as a child of the HTTP request's span
when there is one) and ends with the task; validation, each node, take storage, the git commit
and each published event are child spans. With no tracer provider configured the API is a
no-op and costs next to nothing.
"""

from __future__ import annotations

from collections.abc import Callable

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
