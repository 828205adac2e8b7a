"""Terminal outputs become a take: files named by port, metadata that says how they were made,
stored through the project's ``TakeStore``; then a ``take.created`` event. Dagster-free: the
backend turns a recorded take into asset materializations."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from typing import Any

from dagster_defs.node_executor import TaskExecution
from dagster_defs.observability import TaskTelemetry
from graph_runtime.errors import TakeflowError
from graph_runtime.events import EventBus, TakeCreated
from graph_runtime.takes import OutputFile, Take
from graph_runtime.templates import PortType
from graph_runtime.validation import ExecutionPlan
from nodes.png_text import with_takeflow_graph
from nodes.values import media_facts, to_output_files

_VERSIONED = ("takeflow", "dagster", "torch", "diffusers", "pillow")


def _versions() -> dict[str, str]:
    found = {}
    for dist in _VERSIONED:
        with contextlib.suppress(importlib_metadata.PackageNotFoundError):
            found[dist] = importlib_metadata.version(dist)
    return found


VERSIONS = _versions()


def take_output_names(plan: ExecutionPlan) -> dict[str, tuple[str, str]]:
    """Take output name -> (terminal node id, output port): a port name alone when it is unique
    among the terminal nodes, else ``<node>.<port>``."""
    counts: dict[str, int] = {}
    for nid in plan.terminal:
        for out in plan.node(nid).template.outputs:
            counts[out.name] = counts.get(out.name, 0) + 1
    names: dict[str, tuple[str, str]] = {}
    for nid in plan.terminal:
        for out in plan.node(nid).template.outputs:
            names[out.name if counts[out.name] == 1 else f"{nid}.{out.name}"] = (nid, out.name)
    return names


@dataclass(frozen=True)
class RecordedTake:
    take: Take
    files: list[OutputFile]
    seeds: dict[str, Any]


class StorageHealth:
    """The last take that could not be stored (None once one is stored again)."""

    def __init__(self) -> None:
        self.error: str | None = None


class TakeRecorder:
    """Stores a task's terminal outputs as the next take of its shot."""

    def __init__(self, bus: EventBus, telemetry: TaskTelemetry) -> None:
        self.bus = bus
        self.telemetry = telemetry
        self.health = StorageHealth()

    def record(
        self,
        execution: TaskExecution,
        terminal_outputs: Mapping[str, Mapping[str, Any]],
        schedule: str | None = None,
    ) -> RecordedTake:
        project, plan, record = execution.project, execution.plan, execution.record
        assert project is not None
        files = []
        media: dict[str, Any] = {}
        for name, (nid, port) in take_output_names(plan).items():
            spec = plan.node(nid).template.output(port)
            assert spec is not None  # the names come from the template's own outputs
            if spec.type == PortType.VIDEO and terminal_outputs[nid][port] is None:
                continue  # no video (load_take of an image take): no file, not a JSON null
            files.extend(to_output_files(name, spec.type, terminal_outputs[nid][port]))
            if (facts := media_facts(terminal_outputs[nid][port])) is not None:
                media[name] = facts  # a video: fps, frame count, duration, codec
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
            "dagster_run_id": execution.run_id,
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
            "schedule": schedule,
            **recorded,
            **({"media": media} if media else {}),
            "versions": VERSIONS,
            **record.metadata,
        }
        metadata.pop("queue_order", None)  # the queue's bookkeeping, not how the take was made
        metadata["graph"] = plan.graph.model_dump(mode="json")  # recall: the canvas that ran
        files = [self._with_graph(f, metadata) for f in files]
        try:
            with self.telemetry.child(record.task_id, "takeflow.take.store"):
                take = project.takes.create(record.shot, files, metadata)
        except TakeflowError as exc:
            execution.error = exc
            self.health.error = exc.message
            raise
        self.health.error = None
        execution.take = take
        execution.emit(self.bus, TakeCreated(take=take.to_dict(), trace_id=record.trace_id))
        return RecordedTake(take, files, seeds)

    @staticmethod
    def _with_graph(output: OutputFile, metadata: Mapping[str, Any]) -> OutputFile:
        """A PNG output carrying the graph that made it (``nodes.png_text``), before the take
        is stored, so its stored hash is that of the file as kept. Only what the graph says
        (no task id, no run context): the same graph still makes the same bytes."""
        if output.content_type != "image/png":
            return output
        graph = {k: v for k, v in metadata["graph"].items() if k != "context"}
        meta = {
            "graph": graph,
            "graph_hash": metadata.get("graph_hash"),
            "seeds": metadata["seeds"],
        }
        data = with_takeflow_graph(output.data, meta)
        return OutputFile(output.name, data, output.extension, output.content_type)
