"""The typed events keep the wire contract: each model serializes to the dict the runner used to
build inline, and covers the fields docs/integration.md documents."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from graph_runtime.events import (
    PAYLOADS,
    AssetUploaded,
    EventBus,
    MemoryEventLog,
    NodeState,
    NodeStateChanged,
    RecordingSink,
    TakeCreated,
    TaskCancelled,
    TaskCompleted,
    TaskFailed,
    TaskProgress,
    TaskStarted,
    TaskSubmitted,
    parse_payload,
)

DOCS = Path(__file__).resolve().parents[2] / "docs" / "integration.md"
TAKE = {"take_id": "take_001", "number": 1, "shot_id": "a/b/c", "outputs": {}}

# (payload as emitters build it, the dict the runner built inline before the models)
CASES: list[tuple[Any, dict[str, Any]]] = [
    (
        TaskSubmitted(shot_id="a/b/c", nodes=["n"], estimated_time=0.04, batch_id=None,
                      batch_size=None),
        {"status": "queued", "shot_id": "a/b/c", "nodes": ["n"], "estimated_time": 0.04,
         "batch_id": None, "batch_size": None},
    ),
    (
        TaskStarted(dagster_run_id="r", job_name="j", trace_id="t" * 32),
        {"status": "running", "dagster_run_id": "r", "job_name": "j", "trace_id": "t" * 32},
    ),
    (
        TaskStarted(dagster_run_id="r", adopted=True, job_name="j"),
        {"status": "running", "dagster_run_id": "r", "adopted": True, "job_name": "j"},
    ),
    (
        TaskProgress(node_id="n", progress=0.5, node_progress=1.0, stage="s", message="",
                     eta=None, preview_path=None),
        {"node_id": "n", "progress": 0.5, "node_progress": 1.0, "stage": "s", "message": "",
         "eta": None, "preview_path": None},
    ),
    (
        NodeStateChanged(node_id="n", state=NodeState.RUNNING, template="number@1.0.0"),
        {"node_id": "n", "state": "running", "template": "number@1.0.0"},
    ),
    (
        NodeStateChanged(node_id="n", state=NodeState.COMPLETED, cached=True, duration_ms=0.0,
                         outputs={"value": 1}),
        {"node_id": "n", "state": "completed", "cached": True, "duration_ms": 0.0,
         "outputs": {"value": 1}},
    ),
    (
        NodeStateChanged(node_id="n", state=NodeState.COMPLETED, duration_ms=2.5,
                         outputs={"value": 1}),
        {"node_id": "n", "state": "completed", "duration_ms": 2.5, "outputs": {"value": 1}},
    ),
    (
        NodeStateChanged(node_id="n", state=NodeState.FAILED,
                         error={"code": "template_failed", "message": "m"}),
        {"node_id": "n", "state": "failed", "error": {"code": "template_failed", "message": "m"}},
    ),
    (
        NodeStateChanged(node_id="n", state=NodeState.CANCELLED),
        {"node_id": "n", "state": "cancelled"},
    ),
    (TakeCreated(take=TAKE), {"take": TAKE}),
    (
        TaskCompleted(execution_time=0.1, takes=["take_001"], outputs={}, take=TAKE,
                      commit=None, timings_ms={"n": 1.0}),
        {"status": "completed", "execution_time": 0.1, "takes": ["take_001"], "outputs": {},
         "take": TAKE, "commit": None, "timings_ms": {"n": 1.0}},
    ),
    (
        TaskFailed.of({"code": "template_failed", "message": "m", "node_id": "n",
                       "template_id": "fail"}),
        {"code": "template_failed", "message": "m", "node_id": "n", "template_id": "fail"},
    ),
    (TaskCancelled(), {"status": "cancelled"}),
    (TaskCancelled(node_id=None), {"status": "cancelled", "node_id": None}),
    (
        AssetUploaded(asset_id="u/a.png", uri="asset://u/a.png", path="01_Assets/u/a.png",
                      size=3, sha256="abc", filename="a.png", commit=None,
                      content_type="image/png"),
        {"asset_id": "u/a.png", "uri": "asset://u/a.png", "path": "01_Assets/u/a.png", "size": 3,
         "sha256": "abc", "filename": "a.png", "commit": None, "content_type": "image/png"},
    ),
]  # fmt: skip


@pytest.mark.parametrize(("payload", "old"), CASES, ids=lambda v: getattr(v, "type", ""))
def test_each_payload_serializes_to_the_old_dict_and_parses_back(
    payload: Any, old: dict[str, Any]
) -> None:
    data = payload.to_data()
    assert data == old and list(data) == list(old)  # same keys, same order
    assert parse_payload(payload.type, data) == payload
    assert parse_payload(payload.type, data).to_data() == old


def _documented() -> dict[str, set[str]]:
    table = DOCS.read_text().split("| type | `data` (besides `task_id`) |", 1)[1]
    rows: dict[str, set[str]] = {}
    for line in table.splitlines()[2:]:
        if not line.startswith("| `"):
            break
        type_, fields = line.split("|")[1:3]
        if type_.strip(" `") == "node.state":
            states = re.search(r"\(([^)]*)\)", fields)
            assert states is not None
            listed = set(re.findall(r"`([^`]+)`", states.group(1)))
            assert listed == {s.value for s in NodeState} - {"queued"}
        fields = re.sub(r"\([^)]*\)", "", fields)  # examples and notes in parentheses
        names = {re.split(r"[:\s]", n)[0] for n in re.findall(r"`([^`]+)`", fields)}
        rows[type_.strip(" `")] = names
    return rows


def test_every_documented_event_field_is_a_model_field() -> None:
    documented = _documented()
    by_type = {p.model_fields["type"].default: p for p in PAYLOADS}
    assert set(documented) == set(by_type)
    for type_, names in documented.items():
        fields = set(by_type[type_].model_fields) - {"type"}
        if type_ == "task.progress":
            fields |= {"preview_url"}  # sent for the stored preview_path (server.wire)
        if type_ == "task.failed":
            fields |= {"node_id", "template_id"}  # the error's own details
        assert names <= fields, (type_, names - fields)


def test_the_bus_stores_then_fans_out_typed_events_to_every_sink() -> None:
    log = MemoryEventLog()
    bus = EventBus(log)
    sink, broken = RecordingSink(), RecordingSink()
    broken.emit = lambda event: 1 / 0  # type: ignore[method-assign]
    bus.add_sink(broken)
    bus.add_sink(sink)
    event = bus.publish("t1", "demo", TaskCancelled(node_id="n"))
    assert log.read_task("t1") == [event] == sink.events  # the broken sink stopped nothing
    assert isinstance(sink.events[0].payload, TaskCancelled)
    assert log.read_task("t1")[0].to_dict()["data"] == {
        "task_id": "t1",
        "status": "cancelled",
        "node_id": "n",
    }
