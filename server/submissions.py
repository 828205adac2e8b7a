"""Turning API requests into validated, queued tasks: one-node tasks, canvas runs and batches.

Everything a request could get wrong (template, inputs, shot, project, ``asset://``
references) is checked before the runner stores anything, so a rejected request leaves no task,
event, take or commit behind.
"""

from __future__ import annotations

import contextlib
import re
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic import ValidationError as PydanticValidationError

from dagster_defs.batches import submit_sweep
from dagster_defs.runtime import Runtime
from graph_runtime.canvas import (
    NODE_ID_PATTERN,
    CanvasGraph,
    LiteralInput,
    RunContext,
    single_node_graph,
)
from graph_runtime.errors import (
    AssetNotFoundError,
    GraphIssue,
    GraphValidationError,
    ProjectError,
    TakeflowError,
)
from graph_runtime.sweeps import Sweep, SweepError
from graph_runtime.takes import check_shot
from graph_runtime.tasks import TaskRecord, TaskStatus
from graph_runtime.templates import Quality
from server.auth import Principal
from server.errors import BatchNotFoundError, RequestError
from server.limits import DEFAULT_MAX_GRAPH_NODES, check_graph_size
from stores.projects import ASSET_SCHEME, asset_relpath

_NODE_ID_RE = re.compile(NODE_ID_PATTERN)


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TaskRequest(_Request):
    """``POST /api/v1/functions/tasks``: run one template as a one-node graph."""

    template_id: Annotated[str, Field(min_length=1, max_length=128)]
    inputs: dict[str, Any] = Field(default_factory=dict)
    project_id: str | None = None
    shot_id: str | None = None
    quality: Quality = Quality.STANDARD
    canvas_node_id: str | None = None
    user_id: Annotated[str, Field(max_length=128)] | None = None
    priority: Annotated[int, Field(ge=-100, le=100)] = 0


class RunRequest(_Request):
    """``POST /api/v1/runs``: run a whole canvas graph (``docs/graph-format.md``)."""

    graph: dict[str, Any]
    project_id: str | None = None
    shot_id: str | None = None
    user_id: Annotated[str, Field(max_length=128)] | None = None
    priority: Annotated[int, Field(ge=-100, le=100)] = 0


class BatchRequest(_Request):
    """``POST /api/v1/functions/batches``: all accepted or none. Either ``tasks`` (one-template
    tasks) or ``graph`` + ``sweep`` (a parameter sweep, ``takeflow.sweep/v1``: lists in a group
    are zipped, groups combined as a product, the whole repeated ``runs`` times)."""

    tasks: Annotated[list[TaskRequest], Field(min_length=1, max_length=1000)] | None = None
    graph: dict[str, Any] | None = None
    sweep: dict[str, Any] | None = None
    runs: Annotated[int, Field(ge=1, le=1000)] | None = None
    project_id: str | None = None
    shot_id: str | None = None
    user_id: Annotated[str, Field(max_length=128)] | None = None
    priority: Annotated[int, Field(ge=-100, le=100)] = 0

    @model_validator(mode="after")
    def _one_form(self) -> BatchRequest:
        if (self.tasks is None) == (self.graph is None):
            raise ValueError("send either `tasks` (one-template tasks) or `graph` with `sweep`")
        if self.graph is not None and self.sweep is None:
            raise ValueError("a graph batch needs a `sweep` (takeflow.sweep/v1)")
        return self


def asset_references(value: Any) -> Iterator[str]:
    """Every ``asset://`` string in a value, however deeply nested in dicts and lists."""
    if isinstance(value, str):
        if value.startswith(ASSET_SCHEME):
            yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from asset_references(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from asset_references(item)


def _graph_issues(exc: PydanticValidationError, graph: dict[str, Any]) -> list[GraphIssue]:
    """Pydantic's errors on a canvas document, pinned to node ids and ports where possible."""
    raw_nodes = graph.get("nodes")
    nodes: list[Any] = raw_nodes if isinstance(raw_nodes, list) else []
    issues = []
    for err in exc.errors(include_url=False):
        loc = list(err["loc"])
        node_id = port = None
        if len(loc) >= 2 and loc[0] == "nodes" and isinstance(loc[1], int) and loc[1] < len(nodes):
            raw = nodes[loc[1]]
            node_id = (
                raw.get("id") if isinstance(raw, dict) and isinstance(raw.get("id"), str) else None
            )
            if len(loc) >= 4 and loc[2] == "inputs":
                port = str(loc[3])
        where = ".".join(str(p) for p in loc)
        issues.append(
            GraphIssue("invalid_document", f"{where}: {err['msg']}", node_id=node_id, port=port)
        )
    return issues


class Submissions:
    """Validates and queues API requests on the runtime's runner."""

    def __init__(
        self,
        runtime: Runtime,
        max_batch_size: int = 1000,
        max_graph_nodes: int = DEFAULT_MAX_GRAPH_NODES,
    ) -> None:
        self.runtime = runtime
        self.max_batch_size = max_batch_size
        self.max_graph_nodes = max_graph_nodes

    # -- building graphs ------------------------------------------------------------------

    def _context(
        self,
        project_id: str | None,
        shot_id: str | None,
        user_id: str | None,
        principal: Principal | None = None,
    ) -> RunContext:
        """The run context; with auth on, the caller's user and one of its projects (or none)."""
        if shot_id is not None:
            check_shot(shot_id)
        if principal is not None:
            user_id = principal.user
            if project_id is not None:
                principal.require(project_id)
        if project_id is not None:
            self.runtime.projects.get(project_id)
        return RunContext(
            project=project_id, shot=shot_id or "main/main/main", user=user_id or "api"
        )

    def check_assets(self, project_id: str | None, value: Any) -> None:
        """Refuse ``asset://`` references that are unsafe or name no file of the project."""
        refs = list(asset_references(value))
        if not refs:
            return
        if project_id is None:
            raise ProjectError(
                f"input references {refs[0]!r}, but asset references need a project_id",
                field="project_id",
            )
        project = self.runtime.projects.get(project_id)
        paths = [asset_relpath(ref) for ref in refs]  # every unsafe reference before any lookup
        for ref, rel in zip(refs, paths, strict=True):
            if not project.fs.isfile(project.abs(rel)):
                raise AssetNotFoundError(
                    f"asset {ref!r} is not in project '{project_id}' (upload it first)",
                    asset=ref,
                    project_id=project_id,
                )

    def task_graph(self, req: TaskRequest, principal: Principal | None = None) -> CanvasGraph:
        template = self.runtime.registry.get(req.template_id)  # unknown_template, with a hint
        inputs, quality = dict(req.inputs), req.quality
        if "quality" in inputs and template.input("quality") is None:
            # STORY-051's harness sends the preset among the inputs; it is a node property.
            raw = inputs.pop("quality")
            try:
                quality = Quality(raw)
            except ValueError:
                choices = ", ".join(q.value for q in Quality)
                raise RequestError(
                    f"inputs.quality {raw!r} must be one of {choices}", field="inputs.quality"
                ) from None
        node_id = req.canvas_node_id or "node"
        if not _NODE_ID_RE.match(node_id):
            raise RequestError(
                f"canvas_node_id {node_id!r} must match {NODE_ID_PATTERN}", field="canvas_node_id"
            )
        context = self._context(req.project_id, req.shot_id, req.user_id, principal)
        self.check_assets(req.project_id, inputs)
        return single_node_graph(req.template_id, inputs, quality, node_id=node_id, context=context)

    def run_graph(self, req: RunRequest, principal: Principal | None = None) -> CanvasGraph:
        check_graph_size(req.graph, self.max_graph_nodes)
        try:
            graph = CanvasGraph.model_validate(req.graph)
        except PydanticValidationError as exc:
            raise GraphValidationError(_graph_issues(exc, req.graph)) from None
        context = self._context(
            req.project_id or graph.context.project,
            req.shot_id or graph.context.shot,
            req.user_id or graph.context.user,
            principal,
        )
        literals = [
            v.value for n in graph.nodes for v in n.inputs.values() if isinstance(v, LiteralInput)
        ]
        self.runtime.runner.plan(graph)  # every graph error before any asset error
        self.check_assets(context.project, literals)
        return graph.model_copy(update={"context": context})

    # -- submitting -----------------------------------------------------------------------

    def _accepted(self, record: TaskRecord, tracking_id: str) -> dict[str, Any]:
        estimate = self.runtime.runner.estimate_seconds(len(record.node_states))
        return {
            "task_id": record.task_id,
            "tracking_id": tracking_id,
            "status": "submitted",
            "estimated_seconds": round(estimate, 3),
            "estimated_completion": datetime.fromtimestamp(time.time() + estimate, UTC).isoformat(),
        }

    def submit_sweep(self, req: BatchRequest, principal: Principal | None = None) -> dict[str, Any]:
        """One task per combination of the sweep's values, as one batch."""
        assert req.graph is not None and req.sweep is not None
        graph = self.run_graph(
            RunRequest(
                graph=req.graph,
                project_id=req.project_id,
                shot_id=req.shot_id,
                user_id=req.user_id,
                priority=req.priority,
            ),
            principal,
        )
        try:
            sweep = Sweep.model_validate(req.sweep)
        except PydanticValidationError as exc:
            raise SweepError(f"the sweep is malformed: {exc.errors()[0]['msg']}") from None
        batch_id, task_ids = submit_sweep(
            self.runtime.runner,
            graph,
            sweep,
            req.runs,
            project_id=graph.context.project,
            shot=graph.context.shot,
            user=graph.context.user,
            priority=req.priority,
        )
        return {
            "batch_id": batch_id,
            "task_ids": task_ids,
            "total": len(task_ids),
            "status": "submitted",
        }

    def submit_task(
        self, req: TaskRequest, batch_id: str | None = None, principal: Principal | None = None
    ) -> dict[str, Any]:
        graph = self.task_graph(req, principal)
        return self._submit(
            graph,
            req.priority,
            batch_id,
            {
                "template_id": req.template_id,
                "canvas_node_id": req.canvas_node_id,
                "source": "api.functions",
            },
        )

    def submit_run(self, req: RunRequest, principal: Principal | None = None) -> dict[str, Any]:
        graph = self.run_graph(req, principal)
        return self._submit(graph, req.priority, None, {"source": "api.runs"})

    def _submit(
        self, graph: CanvasGraph, priority: int, batch_id: str | None, meta: dict[str, Any]
    ) -> dict[str, Any]:
        tracking_id = f"trk_{uuid.uuid4().hex[:16]}"
        record = self.runtime.runner.submit(
            graph,
            project_id=graph.context.project,
            shot=graph.context.shot,
            user=graph.context.user,
            priority=priority,
            batch_id=batch_id,
            extra_metadata={"tracking_id": tracking_id, **{k: v for k, v in meta.items() if v}},
        )
        return self._accepted(record, tracking_id)

    def submit_batch(self, req: BatchRequest, principal: Principal | None = None) -> dict[str, Any]:
        """Check every task first; queue them all only if all are valid."""
        if req.tasks is None:
            return self.submit_sweep(req, principal)
        if len(req.tasks) > self.max_batch_size:
            raise RequestError(
                f"a batch holds at most {self.max_batch_size} tasks, got {len(req.tasks)}",
                field="tasks",
            )
        if principal is not None:  # another project's task refuses the batch as forbidden
            for task in req.tasks:
                if task.project_id is not None:
                    principal.require(task.project_id)
        graphs: list[CanvasGraph] = []
        errors: list[dict[str, Any]] = []
        for index, task in enumerate(req.tasks):
            try:
                graph = self.task_graph(task, principal)
                self.runtime.runner.plan(graph)
                graphs.append(graph)
            except TakeflowError as exc:
                errors.append({"index": index, **exc.to_dict()})
        if errors:
            raise RequestError(
                f"{len(errors)} of {len(req.tasks)} tasks are invalid; nothing was queued",
                errors=errors,
            )
        batch_id = f"batch_{uuid.uuid4().hex[:16]}"
        # distributed mode: one transaction for the whole batch (all queued or none)
        with getattr(self.runtime.runner, "batch", contextlib.nullcontext)():
            accepted = self._submit_all(graphs, req, batch_id)
        return {
            "batch_id": batch_id,
            "task_ids": [a["task_id"] for a in accepted],
            "tracking_ids": [a["tracking_id"] for a in accepted],
            "status": "submitted",
        }

    def _submit_all(
        self, graphs: list[CanvasGraph], req: BatchRequest, batch_id: str
    ) -> list[dict[str, Any]]:
        return [
            self._submit(
                graph,
                task.priority,
                batch_id,
                {
                    "template_id": task.template_id,
                    "canvas_node_id": task.canvas_node_id,
                    "source": "api.batches",
                },
            )
            for graph, task in zip(graphs, req.tasks or [], strict=True)
        ]

    # -- reading --------------------------------------------------------------------------

    def task_status(self, task_id: str) -> dict[str, Any]:
        record = self.runtime.runner.get(task_id)
        body = record.to_dict()
        body.pop("graph", None)
        events = self.runtime.state.read_task(task_id) if record.status.terminal else []
        terminal = events[-1] if events else None
        body["last_seq"] = terminal.seq if terminal else None
        if terminal is not None and record.status == TaskStatus.COMPLETED:
            body["outputs"] = terminal.data.get("outputs", {})
            body["take"] = terminal.data.get("take")
            body["commit"] = terminal.data.get("commit")
            body["execution_time"] = terminal.data.get("execution_time")
        meta = record.graph.get("x-metadata", {})
        body["tracking_id"] = meta.get("tracking_id")
        body["graph_name"] = record.graph.get("name")
        return body

    def batch_status(self, batch_id: str) -> dict[str, Any]:
        records = self.runtime.state.list(batch_id=batch_id)
        if not records:
            raise BatchNotFoundError(f"no batch '{batch_id}'", batch_id=batch_id)
        counts = Counter(r.status.value for r in records)
        done = sum(counts[s.value] for s in TaskStatus if s.terminal)
        progress = sum(1.0 if r.status.terminal else r.progress for r in records) / len(records)
        return {
            "batch_id": batch_id,
            "total": len(records),
            "counts": {s.value: counts.get(s.value, 0) for s in TaskStatus},
            "finished": done == len(records),
            "progress": round(progress, 4),
            "tasks": [
                {"task_id": r.task_id, "status": r.status.value, "takes": r.takes, "error": r.error}
                for r in records
            ],
        }
