"""One trace per task with a span for every stage; Prometheus metrics for the runner."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import generate_latest

from graph_runtime.events import RecordingSink
from graph_runtime.tasks import TaskStatus
from tests.conftest import load_graph

_EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="module")
def exporter() -> Iterator[InMemorySpanExporter]:
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
    yield _EXPORTER


def test_task_trace_has_a_span_for_every_stage(
    exporter: InMemorySpanExporter, runtime: Any, project: Any
) -> None:
    sink = RecordingSink()
    runtime.runner.add_sink(sink)
    record = runtime.runner.submit(load_graph("poster"), project_id="demo", shot="ch01/sc01/sh010")
    sink.wait_terminal(record.task_id, 60)
    record = runtime.runner.get(record.task_id)
    assert record.status == TaskStatus.COMPLETED and record.trace_id

    spans = [
        s
        for s in exporter.get_finished_spans()
        if format(s.context.trace_id, "032x") == record.trace_id
    ]
    names = {s.name for s in spans}
    nodes = {f"takeflow.node {n.id}" for n in load_graph("poster").nodes}
    assert {
        "takeflow.task",
        "takeflow.validate",
        "takeflow.take.store",
        "takeflow.git.commit",
        "takeflow.event.publish",
    } | nodes <= names
    root = next(s for s in spans if s.name == "takeflow.task")
    assert root.parent is None and root.attributes["takeflow.status"] == "completed"
    for span in spans:
        if span.name.startswith("takeflow.node") or span.name == "takeflow.git.commit":
            assert span.parent.span_id == root.context.span_id

    events = sink.for_task(record.task_id)
    assert {e.data["trace_id"] for e in events} == {record.trace_id}
    take = project.takes.list(task_id=record.task_id)[0]
    assert take.metadata["trace_id"] == record.trace_id


def test_runner_metrics_count_tasks_templates_and_events(runtime: Any, project: Any) -> None:
    record = runtime.runner.submit(load_graph("poster"), project_id="demo", shot="ch01/sc01/sh010")
    assert runtime.runner.wait(record.task_id, 60).status == TaskStatus.COMPLETED
    text = generate_latest(runtime.runner.metrics.registry).decode()
    assert 'takeflow_tasks_finished_total{status="completed"} 1.0' in text
    assert 'takeflow_template_duration_seconds_count{template="resize"} 1.0' in text
    assert 'takeflow_events_published_total{type="task.completed"} 1.0' in text
    assert "takeflow_git_commit_seconds_count 1.0" in text
    assert "takeflow_task_overhead_seconds_count 1.0" in text
    assert "takeflow_queue_depth 0.0" in text
