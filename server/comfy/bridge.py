"""The one place the ComfyUI layer touches Takeflow: tasks, events, models, project files.

Everything else in ``server.comfy`` talks to ``TakeflowBridge`` only, so a change in the
runner, the event model or the model registry is absorbed here. What it uses of Takeflow:

- ``runtime.runner``: ``plan`` (validation), ``submit`` (with our own task id), ``cancel``,
  ``get``, ``histories.commit`` (the commit queue: in distributed mode under the project's
  cross-process git lock);
- ``runtime.events``: every stored event once, in order (the runner's bus embedded, the
  replica's feed of every process's events distributed);
- ``runtime.state``: ``get`` (task records, their results) and ``read_task`` (the durable
  event log of one task); in distributed mode its PostgreSQL pool holds the prompt store
  (``server.comfy.store.open_tables``);
- ``runtime.projects``: ``get``/``create``, a project's files;
- ``runtime.runner.services["diffusion"].cache``: its loaded pipelines (``/free`` unloads
  them);
- ``runtime.registry``: input specs of the ``image_generation`` / ``image_to_image`` templates;
- ``nodes.diffusion.models.ModelRegistry``: the model names a checkpoint loader may name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dagster_defs.admission import new_task_id
from dagster_defs.runtime import Runtime
from graph_runtime.canvas import CanvasGraph
from graph_runtime.errors import (
    GraphIssue,
    GraphValidationError,
    ProjectNotFoundError,
    TakeflowError,
)
from graph_runtime.events import TaskEvent
from graph_runtime.validation import ExecutionPlan
from server.auth import Principal
from server.wire import wire_event

TERMINAL_EVENTS = frozenset({"task.completed", "task.failed", "task.cancelled"})


@dataclass(frozen=True)
class Event:
    """A stored Takeflow task event, as the ComfyUI layer reads it."""

    type: str
    task_id: str
    seq: int
    id: int
    timestamp: float
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def terminal(self) -> bool:
        return self.type in TERMINAL_EVENTS


@dataclass(frozen=True)
class TaskInfo:
    """What the ComfyUI layer needs of a task record."""

    task_id: str
    status: str  # queued, running, completed, failed, cancelled
    project_id: str | None
    user: str
    created_at: float
    error: dict[str, Any] | None
    finished_at: float | None = None

    @property
    def finished(self) -> bool:
        return self.status in ("completed", "failed", "cancelled")


@dataclass(frozen=True)
class Limits:
    """Range of a Takeflow template input (what its validation enforces)."""

    default: Any = None
    minimum: float | None = None
    maximum: float | None = None
    multiple_of: int | None = None


def _event(raw: TaskEvent) -> Event:
    body = wire_event(raw)  # as HTTP/WS clients see it (previews as file URLs)
    data = dict(body.get("data") or {})
    task_id = str(data.pop("task_id", body.get("task_id", "")))
    return Event(
        type=str(body["type"]),
        task_id=task_id,
        seq=int(body["seq"]),
        id=int(body["id"]),
        timestamp=float(body["timestamp"]),
        data=data,
    )


class _Sink:
    """Adapts the runner's event sink protocol to a callback taking ``Event``."""

    def __init__(self, callback: Callable[[Event], None]) -> None:
        self.callback = callback

    def emit(self, event: Any) -> None:
        self.callback(_event(event))


class TakeflowBridge:
    """Submit, cancel and read tasks; read events; list models; read and write project files."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._sinks: dict[Callable[[Event], None], _Sink] = {}

    @property
    def home(self) -> Path:
        return Path(self.runtime.home.path)

    def config(self) -> dict[str, Any]:
        """The home's ``config.json`` (the ``comfyui`` table configures this layer)."""
        return self.runtime.home.config()

    # -- tasks ------------------------------------------------------------------------------

    def validate(
        self, graph: dict[str, Any], *, project_id: str, shot: str, user: str
    ) -> ExecutionPlan | list[GraphIssue]:
        """Takeflow's own validation of a canvas graph (once per prompt): its plan, or every
        issue."""
        canvas = CanvasGraph.model_validate(
            {**graph, "context": {"project": project_id, "shot": shot, "user": user}}
        )
        try:
            return self.runtime.runner.admission.validate(canvas)
        except GraphValidationError as exc:
            return list(exc.issues)

    def cache_hits(self, plan: ExecutionPlan) -> set[str]:
        """The Takeflow nodes of ``plan`` whose outputs this process's node cache holds now
        (none in distributed mode: the workers' caches are not visible from an API replica)."""
        runner = self.runtime.runner
        cache = runner.node_cache
        if cache is None or self.runtime.cluster is not None:
            return set()
        keys = runner.executor.cache_keys(plan)
        return {node for node, key in keys.items() if key is not None and cache.contains(key)}

    def new_task_id(self) -> str:
        return new_task_id()

    def submit(
        self,
        task_id: str,
        plan: ExecutionPlan,
        *,
        project_id: str,
        shot: str,
        user: str,
        priority: int,
        metadata: dict[str, Any],
    ) -> None:
        """Queue a validated plan as a task with a task id chosen by the caller."""
        submission = self.runtime.runner.admission.admit_plan(
            plan, project_id=project_id, shot=shot, user=user, task_id=task_id, metadata=metadata
        )
        self.runtime.runner.submit(submission, priority=priority)

    def cancel(self, task_id: str) -> None:
        """Cancel a queued task at once, a running one at its next progress point."""
        record = self.runtime.runner.get(task_id)
        if not record.status.terminal:
            self.runtime.runner.cancel(task_id)

    def task(self, task_id: str) -> TaskInfo | None:
        record = self.runtime.state.get(task_id)
        if record is None:
            return None
        return TaskInfo(
            task_id=record.task_id,
            status=record.status.value,
            project_id=record.project_id,
            user=record.user,
            created_at=record.created_at,
            error=record.error,
            finished_at=record.finished_at,
        )

    # -- events -----------------------------------------------------------------------------

    def events(self, task_id: str, after_seq: int = 0) -> list[Event]:
        """The task's stored events after ``after_seq``, in order (the durable log)."""
        return [_event(e) for e in self.runtime.state.read_task(task_id, after_seq)]

    def listen(self, callback: Callable[[Event], None]) -> None:
        """Call ``callback`` (from runner or feed threads) with every event of every process
        once it is stored, in order; starts the event source if the main app has not."""
        sink = _Sink(callback)
        self._sinks[callback] = sink
        self.runtime.events.add_sink(sink)
        self.runtime.events.start()  # idempotent

    def unlisten(self, callback: Callable[[Event], None]) -> None:
        sink = self._sinks.pop(callback, None)
        if sink is not None:
            self.runtime.events.remove_sink(sink)

    # -- models and templates ---------------------------------------------------------------

    def model_names(self) -> list[str]:
        """Names a checkpoint loader may use: the diffusion service's model registry (its
        entries and every checkpoint of ``checkpoints_dir`` by relative path); none without
        the diffusion service."""
        service = self.runtime.runner.services.get("diffusion")
        models = getattr(service, "models", None)
        return sorted(models.names()) if models is not None else []

    def folder_names(self, kind: str) -> list[str]:
        """The files of a model part folder (``upscale_models``, ``loras``, ...) by relative
        path; none without the diffusion service."""
        models = getattr(self.runtime.runner.services.get("diffusion"), "models", None)
        return models.folders.names(kind) if models is not None else []

    def loaded_models(self) -> list[str]:
        """Models whose pipelines this process holds loaded (none without the diffusion
        service, e.g. on an API replica of the distributed mode)."""
        cache = getattr(self.runtime.runner.services.get("diffusion"), "cache", None)
        return sorted({e.spec.name for e in cache.loaded()}) if cache is not None else []

    def unload_models(self) -> list[str]:
        """Unload the diffusion service's pipelines in this process; the names unloaded."""
        cache = getattr(self.runtime.runner.services.get("diffusion"), "cache", None)
        return list(cache.unload()) if cache is not None else []

    def takes_input(self, template: str, port: str) -> bool:
        """Whether the template has an input of that name."""
        try:
            return self.runtime.registry.get(template).input(port) is not None
        except TakeflowError:
            return False

    def limits(self, template: str, port: str) -> Limits:
        """Default and range of a template input, as Takeflow's validation enforces them."""
        try:
            spec = self.runtime.registry.get(template).input(port)
        except TakeflowError:
            spec = None
        if spec is None:
            return Limits()
        return Limits(spec.default, spec.minimum, spec.maximum, spec.multiple_of)

    # -- projects and files -----------------------------------------------------------------

    def require_project(
        self, project_id: str, principal: Principal | None, create: bool = False
    ) -> None:
        """Refuse a project the caller may not use; create the default project on first use."""
        if principal is not None:
            principal.require(project_id)
        try:
            self.runtime.projects.get(project_id)
        except ProjectNotFoundError:
            if not create:
                raise
            self.runtime.projects.create(project_id, "ComfyUI prompts")

    def has_file(self, project_id: str, rel: str) -> bool:
        return self.runtime.projects.get(project_id).is_file(rel)

    def read_file(self, project_id: str, rel: str) -> bytes | None:
        """A project file's bytes, ``None`` when it is gone."""
        try:
            return self.runtime.projects.get(project_id).read_file(rel)
        except (TakeflowError, OSError):
            return None

    def store_file(self, project_id: str, rel: str, data: bytes, message: str) -> None:
        """Write a project file and commit it through the runtime's commit queue (one git
        writer per project, across processes in distributed mode); a failed commit is logged
        and kept in the queue's backlog for the next commit, not raised."""
        project = self.runtime.projects.get(project_id)
        project.write_file(rel, data)
        self.runtime.runner.histories.commit(project, [rel], message)

    def take_outputs(self, task_id: str) -> dict[str, str]:
        """A completed task's take outputs: output key -> project-relative path (read from the
        task record's result, written before the task's terminal event)."""
        record = self.runtime.state.get(task_id)
        if record is None or record.result is None:
            return {}
        outputs = record.result.outputs
        return {
            k: str(v["path"]) for k, v in outputs.items() if isinstance(v, dict) and "path" in v
        }
