"""The one door into the queue: a graph is validated here, once per submission, and comes out as
a ``Submission`` (its ``ExecutionPlan``, the resolved project, shot, user and metadata), which
the runner queues without validating again.

The server (tasks, runs, batches, sweeps), the CLI, health probes and the restart recovery all
admit through ``Admission.admit``. ``validate`` (a plan, no task) serves the code location and
schedules. Each admitted task's trace starts here: its root span, with ``takeflow.validate``.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace

from dagster_defs.observability import TaskTelemetry, trace_id_of, tracer
from graph_runtime.assembly import check_cut_target
from graph_runtime.canvas import CanvasGraph
from graph_runtime.registry import TemplateRegistry
from graph_runtime.tasks import TaskRecord
from graph_runtime.validation import ExecutionPlan, validate_graph
from stores.projects import Project, ProjectCatalog


def new_task_id() -> str:
    return f"task_{uuid.uuid4().hex[:16]}"


@dataclass(frozen=True)
class Submission:
    """An admitted graph, ready to queue: the plan is the proof it passed validation."""

    task_id: str
    plan: ExecutionPlan
    project: Project | None
    shot: str
    user: str
    trace_id: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def project_id(self) -> str | None:
        return self.project.id if self.project is not None else None


class Admission:
    """Validates graphs against the registry and resolves their project."""

    def __init__(
        self,
        registry: TemplateRegistry,
        projects: ProjectCatalog,
        telemetry: TaskTelemetry,
        services: Collection[str] | None = None,
    ) -> None:
        """``services``: the names of the services this runtime provides; a graph whose
        templates require another is refused (``missing_service``). ``None``: not checked."""
        self.registry = registry
        self.projects = projects
        self.telemetry = telemetry
        self.services = services

    def validate(self, graph: CanvasGraph) -> ExecutionPlan:
        """The graph's plan (raises ``GraphValidationError`` with every issue)."""
        return validate_graph(graph, self.registry, available_services=self.services)

    def admit(
        self,
        graph: CanvasGraph,
        *,
        project_id: str | None = None,
        shot: str | None = None,
        user: str | None = None,
        task_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Submission:
        """Validate ``graph`` and resolve its project (arguments win over the graph's context).
        Raises ``GraphValidationError`` or ``ProjectNotFoundError``; nothing is stored."""
        return self._admit(graph, None, project_id, shot, user, task_id, metadata)

    def admit_plan(
        self,
        plan: ExecutionPlan,
        *,
        project_id: str | None = None,
        shot: str | None = None,
        user: str | None = None,
        task_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Submission:
        """Admit a plan that ``validate`` already made (callers that must check a graph before
        they can name its project, e.g. the ComfyUI layer); it is not validated again."""
        return self._admit(plan.graph, plan, project_id, shot, user, task_id, metadata)

    def _admit(
        self,
        graph: CanvasGraph,
        plan: ExecutionPlan | None,
        project_id: str | None,
        shot: str | None,
        user: str | None,
        task_id: str | None,
        metadata: Mapping[str, Any] | None,
    ) -> Submission:
        task_id = task_id or new_task_id()
        span = self.telemetry.start_task(task_id)
        try:
            with (
                trace.use_span(span, end_on_exit=False),
                tracer.start_as_current_span("takeflow.validate"),
            ):
                plan = plan if plan is not None else self.validate(graph)
                check_cut_target(shot or graph.context.shot, graph)  # only cuts write to _cut
                project_id = project_id or graph.context.project
                project = self.projects.get(project_id) if project_id is not None else None
        except Exception as exc:
            span.record_exception(exc)
            span.set_status(trace.StatusCode.ERROR, str(exc))
            self.telemetry.forget(task_id)
            raise
        span.set_attribute("takeflow.project", project_id or "")
        return Submission(
            task_id=task_id,
            plan=plan,
            project=project,
            shot=shot or graph.context.shot,
            user=user or graph.context.user,
            trace_id=trace_id_of(span),
            metadata=dict(metadata or {}),
        )

    def abandon(self, submission: Submission) -> None:
        """Drop an admitted submission that will not be queued (another of its batch failed)."""
        self.telemetry.forget(submission.task_id)

    def readmit(self, record: TaskRecord) -> Submission:
        """A task queued before a restart, validated again (its templates may have changed)."""
        graph = CanvasGraph.model_validate(record.graph)
        plan = self.validate(graph)
        project = self.projects.get(record.project_id) if record.project_id else None
        return Submission(
            record.task_id, plan, project, record.shot, record.user, record.trace_id,
            record.metadata,
        )  # fmt: skip
