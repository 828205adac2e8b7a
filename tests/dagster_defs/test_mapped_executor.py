"""The node executor's mapping on the in-memory twins (``MemoryProject``, ``MemoryEventLog``,
``MemoryNodeCache``): previews numbered across elements, a time limit per element, an empty
list, and a mapped node's lists served from the cache without running it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from dagster_defs.limits import Limits
from dagster_defs.node_executor import NodeExecutor, TaskExecution
from dagster_defs.observability import RunnerMetrics, TaskTelemetry
from graph_runtime.caching import MemoryNodeCache
from graph_runtime.canvas import CanvasGraph
from graph_runtime.events import EventBus, MemoryEventLog, NodeStateChanged, TaskProgress
from graph_runtime.projects import MemoryProject
from graph_runtime.registry import TemplateRegistry
from graph_runtime.tasks import TaskRecord
from graph_runtime.templates import FunctionTemplate, InputSpec, OutputSpec, PortType
from graph_runtime.validation import validate_graph

T = PortType
CALLS: list[int] = []


def _source(ctx: Any, inputs: Any) -> dict[str, Any]:
    return {"items": list(range(int(inputs["count"])))}


def _work(ctx: Any, inputs: Any) -> dict[str, Any]:
    CALLS.append(inputs["x"])
    time.sleep(float(inputs["sleep"]))
    ctx.progress(0.5, preview=b"\x89PNG %d" % inputs["x"])
    return {"y": inputs["x"] * 10}


TEMPLATES = TemplateRegistry([
    FunctionTemplate(id="source", version="1.0.0", name="Source", category="testing",
                     description="", inputs=(InputSpec("count", T.INTEGER, default=3),),
                     outputs=(OutputSpec("items", T.INTEGER, is_list=True),), fn=_source),
    FunctionTemplate(id="work", version="1.0.0", name="Work", category="testing",
                     description="", inputs=(InputSpec("x", T.INTEGER),
                                             InputSpec("sleep", T.FLOAT, default=0.0)),
                     outputs=(OutputSpec("y", T.INTEGER),), fn=_work, timeout_s=0.6),
])  # fmt: skip


@pytest.fixture
def limits() -> Iterator[Limits]:
    limits = Limits(interval_s=0.05, grace_s=0.5)
    limits.start()
    yield limits
    limits.close()


def _run(
    executor: NodeExecutor, project: MemoryProject, count: int, sleep: float, task_id: str
) -> tuple[dict[str, Any], list[Any]]:
    """Run source -> work (mapped) as the Dagster ops would; the outputs and the events."""
    graph = CanvasGraph.model_validate({"name": "m", "nodes": [
        {"id": "src", "template": "source",
         "inputs": {"count": {"kind": "literal", "value": count}}},
        {"id": "work", "template": "work", "inputs": {
            "x": {"kind": "link", "node": "src", "output": "items"},
            "sleep": {"kind": "literal", "value": sleep}}},
    ]})  # fmt: skip
    plan = validate_graph(graph, TEMPLATES)
    record = TaskRecord(task_id, graph.model_dump(mode="json"), "mem", "a/b/c", "ana")
    execution = TaskExecution(record, plan, project, run_id=f"run-{task_id}")
    execution.cache_keys = executor.cache_keys(plan)
    source = executor.run(execution, plan.node("src"), dict(plan.node("src").literals))
    node = plan.node("work")
    outputs = executor.run(execution, node, {**node.literals, "x": source["items"]})
    return dict(outputs), [e.payload for e in executor.bus.log.read_task(task_id)]


@pytest.fixture
def executor(limits: Limits) -> NodeExecutor:
    bus = EventBus(MemoryEventLog())
    return NodeExecutor(bus, limits, TaskTelemetry(RunnerMetrics()), {}, MemoryNodeCache())


def test_each_element_has_its_own_time_limit_and_previews_count_on(
    executor: NodeExecutor,
) -> None:
    CALLS.clear()
    project = MemoryProject("mem")
    # 4 x 0.25 s = 1 s in the node, over the template's 0.6 s limit, but each element is within
    outputs, events = _run(executor, project, 4, 0.25, "t1")
    assert outputs == {"y": [0, 10, 20, 30]} and CALLS == [0, 1, 2, 3]
    previews = [e.preview_path for e in events if isinstance(e, TaskProgress) and e.preview_path]
    assert previews == [f"05_Cache/previews/t1/work_{i:03d}.png" for i in (1, 2, 3, 4)]
    assert project.read_file(previews[2]) == b"\x89PNG 2"
    progress = [(e.element, e.node_progress) for e in events
                if isinstance(e, TaskProgress) and e.node_id == "work"]  # fmt: skip
    assert progress == [(i // 2, (i + 1) / 8) for i in range(8)]  # mid-element, then its end


def test_an_element_over_the_limit_stops_the_node(executor: NodeExecutor) -> None:
    with pytest.raises(Exception) as caught:
        _run(executor, MemoryProject("mem"), 2, 0.9, "t2")
    assert getattr(caught.value, "code", None) == "template_timeout"


def test_an_empty_list_runs_nothing_and_gives_empty_lists(executor: NodeExecutor) -> None:
    CALLS.clear()
    outputs, events = _run(executor, MemoryProject("mem"), 0, 0.0, "t3")
    assert outputs == {"y": []} and CALLS == []
    done = [e for e in events if isinstance(e, NodeStateChanged) and e.node_id == "work"]
    assert done[-1].state == "completed" and done[-1].outputs == {
        "y": {"kind": "list", "length": 0}
    }


def test_a_mapped_node_is_cached_as_its_list(executor: NodeExecutor) -> None:
    CALLS.clear()
    first, _ = _run(executor, MemoryProject("mem"), 3, 0.0, "t4")
    assert CALLS == [0, 1, 2]
    again, events = _run(executor, MemoryProject("mem"), 3, 0.0, "t5")
    assert again == first == {"y": [0, 10, 20]} and CALLS == [0, 1, 2]  # nothing ran again
    done = [e for e in events if isinstance(e, NodeStateChanged) and e.node_id == "work"]
    assert done[-1].cached and done[-1].outputs == {"y": {"kind": "list", "length": 3, "first": 0}}
