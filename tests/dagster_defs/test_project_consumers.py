"""The runner's project consumers on the in-memory twins (``MemoryProject``, ``MemoryEventLog``):
a node's preview, the take recorder and the commit queue reach the project only through the
``ProjectStore`` verbs."""

from __future__ import annotations

import json

import pytest

from dagster_defs.commits import ProjectHistories
from dagster_defs.node_executor import NodeReporter, TaskExecution
from dagster_defs.observability import RunnerMetrics, TaskTelemetry
from dagster_defs.take_recorder import TakeRecorder
from graph_runtime.canvas import single_node_graph
from graph_runtime.events import EventBus, MemoryEventLog, TakeCreated, TaskProgress
from graph_runtime.projects import MemoryProject
from graph_runtime.registry import TemplateRegistry
from graph_runtime.tasks import TaskRecord
from graph_runtime.validation import validate_graph
from nodes.builtin import TEMPLATES

SHOT = "ch01/sc01/sh010"


@pytest.fixture
def project() -> MemoryProject:
    return MemoryProject("mem")


def _execution(project: MemoryProject | None, task_id: str = "t1") -> TaskExecution:
    graph = single_node_graph("number", {"value": 4})
    plan = validate_graph(graph, TemplateRegistry(list(TEMPLATES)))
    record = TaskRecord(task_id, graph.model_dump(mode="json"), "mem", SHOT, "ana")
    return TaskExecution(record, plan, project, run_id="run-1")


def test_a_preview_is_written_to_the_project_and_sent_as_a_path(project: MemoryProject) -> None:
    bus = EventBus(MemoryEventLog())
    execution = _execution(project)
    node = execution.plan.nodes[0]
    reporter = NodeReporter(bus, execution, node, services={})
    reporter.progress(0.5, stage="denoise", preview=b"\x89PNG one")
    reporter.progress(1.0, preview=b"\x89PNG two")
    events = [e.payload for e in bus.log.read_task("t1")]
    paths = [e.preview_path for e in events if isinstance(e, TaskProgress)]
    assert paths == [
        f"05_Cache/previews/t1/{node.node_id}_001.png",
        f"05_Cache/previews/t1/{node.node_id}_002.png",
    ]
    assert project.read_file(paths[1]) == b"\x89PNG two"


def test_a_failed_preview_write_does_not_fail_the_node() -> None:
    class FullProject(MemoryProject):
        def write_preview(self, task_id: str, node_id: str, index: int, png: bytes) -> str:
            raise OSError(28, "No space left on device")

    bus = EventBus(MemoryEventLog())
    execution = _execution(FullProject("mem"))
    reporter = NodeReporter(bus, execution, execution.plan.nodes[0], services={})
    reporter.progress(0.5, preview=b"\x89PNG")
    (event,) = bus.log.read_task("t1")
    assert isinstance(event.payload, TaskProgress) and event.payload.preview_path is None


def test_terminal_outputs_become_a_take_and_are_committed(project: MemoryProject) -> None:
    bus = EventBus(MemoryEventLog())
    recorder = TakeRecorder(bus, TaskTelemetry(RunnerMetrics()))
    execution = _execution(project)
    node_id = execution.plan.nodes[0].node_id
    recorded = recorder.record(execution, {node_id: {"value": 4.0}})
    take = recorded.take
    assert take.take_id == "take_001" and take.active and execution.take == take
    assert json.loads(project.read_file(take.outputs["value"].path)) == 4.0
    stored = json.loads(project.read_file(f"{take.directory}/take.json"))
    assert stored["task_id"] == "t1" and stored["user_id"] == "ana"
    (event,) = bus.log.read_task("t1")
    assert isinstance(event.payload, TakeCreated) and event.payload.take["take_id"] == "take_001"

    histories = ProjectHistories(RunnerMetrics())
    sha = histories.commit(project, [take.directory], "take_001 of ch01/sc01/sh010")
    newest = project.history.recent_commits(1)[0]
    assert newest.sha == sha
    assert newest.files == sorted([take.outputs["value"].path, f"{take.directory}/take.json"])


def test_a_failed_commit_waits_in_the_backlog_and_goes_with_the_next(
    project: MemoryProject,
) -> None:
    histories = ProjectHistories(RunnerMetrics())
    assert histories.commit(project, ["02_Source_Creative/canvases/a.takeflow.json"], "a") is None
    assert histories.git_error is not None and "did not match any files" in histories.git_error
    assert histories.of(project).backlog == ["02_Source_Creative/canvases/a.takeflow.json"]
    project.write_file("02_Source_Creative/canvases/a.takeflow.json", b"{}")
    project.write_file("02_Source_Creative/canvases/b.takeflow.json", b"{}")
    sha = histories.commit(project, ["02_Source_Creative/canvases/b.takeflow.json"], "b")
    assert sha is not None and histories.git_error is None and histories.of(project).backlog == []
    assert project.history.recent_commits(1)[0].files == [
        "02_Source_Creative/canvases/a.takeflow.json",
        "02_Source_Creative/canvases/b.takeflow.json",
    ]
