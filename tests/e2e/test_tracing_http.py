"""One trace from the HTTP request through validation, nodes, take, git and events; /metrics."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from litestar.testing import TestClient
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from graph_runtime.tasks import TaskStatus
from server.app import create_app
from server.config import ServerConfig
from tests.conftest import FIXTURES

pytestmark = pytest.mark.e2e
_EXPORTER = InMemorySpanExporter()
SHOT = "ch01/sc01/sh010"


@pytest.fixture(scope="module")
def exporter() -> Iterator[InMemorySpanExporter]:
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):  # the first test module to trace sets it
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
    yield _EXPORTER


@pytest.fixture
def client(runtime: Any, project: Any) -> Iterator[TestClient[Any]]:
    app = create_app(runtime, ServerConfig(web_dist=None))
    with TestClient(app, timeout=30) as test_client:
        yield test_client


def _hex(trace_id: int) -> str:
    return format(trace_id, "032x")


def test_one_trace_from_http_request_to_git_and_events(
    exporter: InMemorySpanExporter, client: TestClient[Any], runtime: Any
) -> None:
    graph = json.loads((FIXTURES / "graphs" / "poster.json").read_text())
    response = client.post(
        "/api/v1/runs", json={"graph": graph, "project_id": "demo", "shot_id": SHOT}
    )
    assert response.status_code == 200, response.text
    task_id = response.json()["task_id"]
    record = runtime.runner.wait(task_id, 60)
    assert record.status == TaskStatus.COMPLETED and record.trace_id

    spans = [
        s for s in exporter.get_finished_spans() if _hex(s.context.trace_id) == record.trace_id
    ]
    by_name = {s.name: s for s in spans}
    http = by_name["POST /api/v1/runs"]
    assert http.parent is None  # the trace starts at the HTTP request
    assert http.kind == trace.SpanKind.SERVER
    assert http.attributes["http.response.status_code"] == 200
    root = by_name["takeflow.task"]
    assert root.parent is not None and root.parent.span_id == http.context.span_id
    nodes = {f"takeflow.node {n['id']}" for n in graph["nodes"]}
    stages = {"takeflow.validate", "takeflow.take.store", "takeflow.git.commit"}
    assert stages | nodes <= set(by_name)
    published = {
        s.attributes["takeflow.event"] for s in spans if s.name == "takeflow.event.publish"
    }
    assert {"task.submitted", "task.started", "node.state", "task.completed"} <= published
    ids = {s.context.span_id for s in spans}
    for span in spans:  # one tree: every span but the request's hangs off another of this trace
        assert span is http or (span.parent is not None and span.parent.span_id in ids)

    events = client.get(f"/api/v1/runs/{task_id}/events").json()
    assert {e["data"]["trace_id"] for e in events} == {record.trace_id}
    take = client.get("/api/v1/projects/demo/takes", params={"task_id": task_id}).json()[0]
    assert take["metadata"]["trace_id"] == record.trace_id
    status = client.get(f"/api/v1/functions/tasks/{task_id}").json()
    assert status["trace_id"] == record.trace_id


def test_metrics_count_tasks_websocket_clients_and_replayed_events(
    client: TestClient[Any], runtime: Any
) -> None:
    accepted = client.post(
        "/api/v1/functions/tasks",
        json={"template_id": "noise_image", "inputs": {"width": 8, "height": 8},
              "project_id": "demo", "shot_id": SHOT},
    )  # fmt: skip
    task_id = accepted.json()["task_id"]
    assert runtime.runner.wait(task_id, 60).status == TaskStatus.COMPLETED
    stored = client.get(f"/api/v1/runs/{task_id}/events").json()
    with client.websocket_connect("/ws/ana") as ws:
        ws.send_json({"type": "subscribe", "task_ids": [task_id]})
        replayed = [ws.receive_json(timeout=10) for _ in stored]
        assert [e["seq"] for e in replayed] == [e["seq"] for e in stored]
        assert ws.receive_json(timeout=10)["type"] == "subscribed"
        during = client.get("/metrics")
    assert during.status_code == 200
    assert during.headers["content-type"].startswith("text/plain")
    text = during.text
    assert "takeflow_websocket_clients 1.0" in text
    assert f"takeflow_events_replayed_total {float(len(stored))}" in text
    assert 'takeflow_tasks_finished_total{status="completed"} 1.0' in text
    assert 'takeflow_template_duration_seconds_count{template="noise_image"} 1.0' in text
    assert "takeflow_git_commit_seconds_count 1.0" in text
    assert "takeflow_queue_depth 0.0" in text
    deadline = time.monotonic() + 10  # the server notices the close a moment later
    while "takeflow_websocket_clients 0.0" not in client.get("/metrics").text:
        assert time.monotonic() < deadline, "the closed client is still counted"
        time.sleep(0.05)
