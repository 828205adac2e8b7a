"""HTTP controllers: thin adapters from routes to the runtime's services."""

from __future__ import annotations

import asyncio
import logging
import mimetypes
from collections.abc import Callable
from typing import Annotated, Any, cast

from litestar import Controller, Request, get, post, put
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, FromQuery, HeaderParameter, JSONBody, Parameter
from litestar.response import File, Response
from litestar.types import ControllerRouterHandler, FileSystemProtocol
from pydantic import BaseModel, ConfigDict, Field, model_validator

from dagster_defs.runtime import Runtime
from graph_runtime.assembly import is_cut_shot
from graph_runtime.events import AssetUploaded
from graph_runtime.projects import ProjectStore
from graph_runtime.takes import Take
from graph_runtime.tasks import DEFAULT_USER
from server.assemblies import AssembliesController
from server.auth import principal_of
from server.canvases import CanvasesController
from server.config import ServerConfig
from server.errors import FileNotFoundInProjectError, NotCancellableError, ProjectExistsError
from server.health import HealthChecks
from server.media_ranges import ACCEPT_RANGES, ranged
from server.project_files import ProjectFiles
from server.submissions import (
    MAX_TASK_PAGE,
    MAX_WAIT_S,
    BatchRequest,
    RunRequest,
    Submissions,
    TaskListFilters,
    TaskRequest,
    parse_wait,
)
from server.uploads import receive_upload
from server.wire import API, file_url, wire_event

log = logging.getLogger(__name__)
_WAIT_HELP = (
    f"seconds (more than 0, at most {MAX_WAIT_S:g}) to wait for the task's end: 200 with the "
    "finished task (as GET /api/v1/functions/tasks/{id}) if it ends in time, else 202 with the "
    "task id"
)
_KEY_HELP = (
    "a retried submit with the same key (same user, same body, within 24 h) answers the first "
    "task (header Idempotent-Replayed: true); another body with it: 422 idempotency_key_reused"
)
_STILL_GOING = {
    202: ResponseSpec(
        data_container=dict[str, Any],
        description="With `?wait=`: still queued or running when the wait ended (the submit "
        "answer, with the id to follow)",
    )
}
WaitParam = Annotated[str | None, Parameter(description=_WAIT_HELP)]
KeyHeader = Annotated[
    str | None, HeaderParameter(name="Idempotency-Key", required=False, description=_KEY_HELP)
]


async def _client_gone(request: Request[Any, Any, Any]) -> None:
    """Returns once the client disconnects (the request body has been read already)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def submitted(
    request: Request[Any, Any, Any],
    submissions: Submissions,
    kind: str,
    data: TaskRequest | RunRequest,
    wait: str | None,
    key: str | None,
) -> Response[dict[str, Any]]:
    """A task or run submit: at once (200, as always), or with ``wait`` the finished task
    (200) or, when it is still going after ``wait`` seconds, the accepted body (202); with an
    ``Idempotency-Key``, a retry answers the first task (``Idempotent-Replayed: true``)."""
    seconds = parse_wait(wait)
    principal = principal_of(request)

    def submit(before_queue: Callable[[str], None] | None) -> dict[str, Any]:
        if isinstance(data, TaskRequest):
            return submissions.submit_task(data, principal=principal, before_queue=before_queue)
        return submissions.submit_run(data, principal=principal, before_queue=before_queue)

    body, replayed = await asyncio.to_thread(
        submissions.submit_once, kind, data, key, principal, submit
    )
    headers = {"Idempotent-Replayed": "true"} if replayed else None
    if seconds is None:
        return Response(body, status_code=200, headers=headers)
    done = await submissions.finished_within(body["task_id"], seconds, _client_gone(request))
    if done is None:
        return Response(body, status_code=202, headers=headers)
    return Response(done, status_code=200, headers=headers)


_STATUS_HELP = (
    "one or several of pending, queued, running, completed, failed, cancelled "
    "(repeat the parameter, or separate with commas)"
)


class ProjectRequest(BaseModel):
    """A new project: its id, its display name, or both (the id is derived from the name)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    project_id: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    name: Annotated[str, Field(min_length=1, max_length=200)] | None = None

    @model_validator(mode="after")
    def _id_or_name(self) -> ProjectRequest:
        if self.project_id is None and self.name is None:
            raise ValueError("give a 'name' (the id is derived from it) or a 'project_id'")
        return self


class TaskPositionRequest(BaseModel):
    """Where to put a queued task among its user's waiting tasks (0: first)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    position: Annotated[int, Field(ge=0, le=1_000_000)]


class ActiveTakeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    shot_id: str
    take_id: str


def take_view(take: Take) -> dict[str, Any]:
    """A take as the API shows it: every output with a URL the browser can load."""
    body = take.to_dict()
    body["outputs"] = {
        name: {**out.to_dict(), "url": file_url(take.project_id, out.path)}
        for name, out in take.outputs.items()
    }
    return body


class FunctionsController(Controller):
    """One-template tasks, batches and the template catalogue."""

    path = f"{API}/functions"
    tags = ["tasks"]

    @post("/tasks", status_code=200, responses=_STILL_GOING)
    async def submit_task(
        self,
        data: JSONBody[TaskRequest],
        submissions: NamedDependency[Submissions],
        request: Request[Any, Any, Any],
        wait: WaitParam = None,
        idempotency_key: KeyHeader = None,
    ) -> Response[dict[str, Any]]:
        """Run one template as a one-node graph; follow it on ``/ws/{user_id}``, or wait for
        its end in this call (``?wait=``)."""
        return await submitted(request, submissions, "task", data, wait, idempotency_key)

    @get("/tasks", sync_to_thread=True)
    def list_tasks(
        self,
        submissions: NamedDependency[Submissions],
        request: Request[Any, Any, Any],
        project_id: FromQuery[str | None] = None,
        shot_id: FromQuery[str | None] = None,
        status: Annotated[list[str] | None, Parameter(description=_STATUS_HELP)] = None,
        user_id: FromQuery[str | None] = None,
        since: Annotated[
            float | None, Parameter(description="created at or after (unix seconds)")
        ] = None,
        batch_id: FromQuery[str | None] = None,
        template_id: FromQuery[str | None] = None,
        limit: Annotated[int, Parameter(description=f"1 to {MAX_TASK_PAGE}")] = 50,
        cursor: Annotated[
            str | None, Parameter(description="the previous page's `next_cursor`")
        ] = None,
    ) -> dict[str, Any]:
        """Tasks, newest first (creation time, then task id), one page at a time.

        Answers ``tasks``, ``limit`` and ``next_cursor`` (``null`` on the last page). Each task
        has its status, project, shot, user, batch, template, times (unix seconds), progress,
        takes, error, and for waiting tasks ``queue_position`` and ``estimated_seconds``. With
        auth on: the caller's projects' tasks and its own project-less ones."""
        filters = TaskListFilters(
            project_id=project_id,
            shot_id=shot_id,
            status=tuple(status or ()),
            user_id=user_id,
            since=since,
            batch_id=batch_id,
            template_id=template_id,
            limit=limit,
            cursor=cursor,
        )
        return submissions.list_tasks(filters, principal=principal_of(request))

    @get("/tasks/{task_id:str}", sync_to_thread=True)
    def task_status(
        self, task_id: FromPath[str], submissions: NamedDependency[Submissions]
    ) -> dict[str, Any]:
        """Status, progress, per-node state, takes and error of a task."""
        return submissions.task_status(task_id)

    @post("/tasks/{task_id:str}/cancel", status_code=200, sync_to_thread=True)
    def cancel_task(
        self, task_id: FromPath[str], runtime: NamedDependency[Runtime]
    ) -> dict[str, Any]:
        """Cancel a queued task at once, or a running one at its next progress point."""
        record = runtime.runner.get(task_id)
        if record.status.terminal:
            raise NotCancellableError(
                f"task '{task_id}' already {record.status.value}",
                task_id=task_id,
                status=record.status.value,
            )
        record = runtime.runner.cancel(task_id)
        status = record.status.value if record.status.terminal else "cancelling"
        return {"task_id": task_id, "status": status}

    @post("/tasks/{task_id:str}/position", status_code=200, sync_to_thread=True)
    def move_task(
        self,
        task_id: FromPath[str],
        data: JSONBody[TaskPositionRequest],
        runtime: NamedDependency[Runtime],
    ) -> dict[str, Any]:
        """Move a queued task to ``position`` (0: first) among its user's waiting tasks; 409
        ``task_not_pending`` once it runs or ended. Answers the user's waiting task ids in
        their new order and the task's ``queue_position`` in the whole queue."""
        order = runtime.runner.move(task_id, data.position)
        position, _ = runtime.runner.estimate(runtime.runner.get(task_id))
        return {"task_id": task_id, "order": order, "queue_position": position}

    @post("/batches", status_code=200, responses=_STILL_GOING)
    async def submit_batch(
        self,
        data: JSONBody[BatchRequest],
        submissions: NamedDependency[Submissions],
        request: Request[Any, Any, Any],
        wait: WaitParam = None,
        idempotency_key: KeyHeader = None,
    ) -> Response[dict[str, Any]]:
        """Queue many one-node tasks together: all of them, or none if any is invalid. With
        ``?wait=``: 200 with the batch's status once every task ended, else 202. With an
        ``Idempotency-Key``, a retry answers the first batch."""
        seconds = parse_wait(wait)
        principal = principal_of(request)

        def submit(before_queue: Callable[[str], None] | None) -> dict[str, Any]:
            return submissions.submit_batch(data, principal=principal, before_queue=before_queue)

        body, replayed = await asyncio.to_thread(
            submissions.submit_once, "batch", data, idempotency_key, principal, submit,
            submissions.batch_replayed,
        )  # fmt: skip
        headers = {"Idempotent-Replayed": "true"} if replayed else None
        if seconds is None:
            return Response(body, headers=headers)
        batch_id = body["batch_id"]
        done = await submissions.batch_finished_within(batch_id, seconds, _client_gone(request))
        if done is None:
            return Response(body, status_code=202, headers=headers)
        return Response(done, headers=headers)

    @get("/batches/{batch_id:str}", sync_to_thread=True)
    def batch_status(
        self, batch_id: FromPath[str], submissions: NamedDependency[Submissions]
    ) -> dict[str, Any]:
        """Counts by status, overall progress and each task of a batch."""
        return submissions.batch_status(batch_id)

    @get("/templates", sync_to_thread=False)
    def templates(self, runtime: NamedDependency[Runtime]) -> list[dict[str, Any]]:
        """Every template (newest version of each) with input and output JSON Schemas."""
        return [t.describe() for t in runtime.registry.latest()]

    @get("/templates/{template_id:str}", sync_to_thread=False)
    def template(
        self, template_id: FromPath[str], runtime: NamedDependency[Runtime]
    ) -> dict[str, Any]:
        """One template: ``id``, ``id@1.2.3`` or ``id@1``."""
        return runtime.registry.get(template_id).describe()


class RunsController(Controller):
    path = f"{API}/runs"
    tags = ["tasks"]

    @post("/", status_code=200, responses=_STILL_GOING)
    async def submit_run(
        self,
        data: JSONBody[RunRequest],
        submissions: NamedDependency[Submissions],
        request: Request[Any, Any, Any],
        wait: WaitParam = None,
        idempotency_key: KeyHeader = None,
    ) -> Response[dict[str, Any]]:
        """Run a canvas graph. An invalid graph answers 422 with every error; nothing is queued.
        ``?wait=`` and ``Idempotency-Key`` as for tasks."""
        return await submitted(request, submissions, "run", data, wait, idempotency_key)

    @get("/{task_id:str}", sync_to_thread=True)
    def run_status(
        self, task_id: FromPath[str], submissions: NamedDependency[Submissions]
    ) -> dict[str, Any]:
        """Same as ``GET /api/v1/functions/tasks/{task_id}``."""
        return submissions.task_status(task_id)

    @get("/{task_id:str}/events", sync_to_thread=True)
    def run_events(
        self,
        task_id: FromPath[str],
        runtime: NamedDependency[Runtime],
        after_seq: Annotated[int, Parameter(ge=0)] = 0,
    ) -> list[dict[str, Any]]:
        """The stored events of a task after ``after_seq`` (polling alternative to the socket)."""
        runtime.runner.get(task_id)
        return [wire_event(e) for e in runtime.state.read_task(task_id, after_seq)]


def _public_info(info: dict[str, Any]) -> dict[str, Any]:
    """A project as the API shows it: without ``path``, where it lives on the server (a
    client names project files by project-relative paths)."""
    return {k: v for k, v in info.items() if k != "path"}


class ProjectsController(Controller):
    path = f"{API}/projects"
    tags = ["projects"]

    @post("/", status_code=201, sync_to_thread=True)
    def create_project(
        self,
        data: JSONBody[ProjectRequest],
        runtime: NamedDependency[Runtime],
        request: Request[Any, Any, Any],
    ) -> dict[str, Any]:
        """Create a project folder with the studio layout, a git repository and LFS.

        Without ``project_id`` the id is derived from ``name``: ``My Film`` -> ``my-film``, or
        ``my-film-2`` when that one is taken."""
        project_id = data.project_id
        if project_id is None:
            assert data.name is not None  # the request model requires one of them
            project_id = runtime.projects.free_id(data.name)
        principal = principal_of(request)
        if principal is not None:
            principal.require(project_id)
        if project_id in {p.id for p in runtime.projects.list()}:
            raise ProjectExistsError(
                f"project '{project_id}' already exists", project_id=project_id
            )
        return _public_info(runtime.projects.create(project_id, data.name).info())

    @get("/", sync_to_thread=True)
    def list_projects(
        self, runtime: NamedDependency[Runtime], request: Request[Any, Any, Any]
    ) -> list[dict[str, Any]]:
        """Projects (with auth on: the caller's)."""
        principal = principal_of(request)
        return [
            _public_info(p.info())
            for p in runtime.projects.list()
            if principal is None or principal.allows(p.id)
        ]

    @get("/{project_id:str}", sync_to_thread=True)
    def project(
        self, project_id: FromPath[str], runtime: NamedDependency[Runtime]
    ) -> dict[str, Any]:
        return _public_info(runtime.projects.get(project_id).info())

    @get("/{project_id:str}/takes", sync_to_thread=True)
    def takes(
        self,
        project_id: FromPath[str],
        runtime: NamedDependency[Runtime],
        shot_id: FromQuery[str | None] = None,
        task_id: FromQuery[str | None] = None,
    ) -> list[dict[str, Any]]:
        """Takes of a project, of one shot, or made by one task, with output URLs. Without a
        filter a scene's cuts (``_cut`` shots) are left out: ``GET .../assemblies`` lists them
        (as do ``shot_id=<the cut shot>`` and ``task_id``)."""
        project = runtime.projects.get(project_id)
        takes = project.takes.list(shot=shot_id, task_id=task_id)
        if shot_id is None and task_id is None:
            takes = [t for t in takes if not is_cut_shot(t.shot)]
        return [take_view(t) for t in takes]

    @put("/{project_id:str}/takes/active", sync_to_thread=True)
    def set_active(
        self,
        project_id: FromPath[str],
        data: JSONBody[ActiveTakeRequest],
        runtime: NamedDependency[Runtime],
    ) -> dict[str, Any]:
        """Make a take the shot's active one (and commit that choice)."""
        project = runtime.projects.get(project_id)
        take = project.takes.set_active(data.shot_id, data.take_id)
        body = take_view(take)
        body["commit"] = runtime.runner.histories.commit(
            project,
            [take.directory.rsplit("/", 1)[0]],
            f"Set {take.take_id} active for {take.shot}",
        )
        return body

    @get("/{project_id:str}/commits", sync_to_thread=True)
    def commits(
        self,
        project_id: FromPath[str],
        runtime: NamedDependency[Runtime],
        limit: Annotated[int, Parameter(ge=1, le=500)] = 20,
    ) -> list[dict[str, Any]]:
        """Newest commits first: sha, message, time, files."""
        project = runtime.projects.get(project_id)
        return [c.to_dict() for c in project.history.recent_commits(limit)]

    @get("/{project_id:str}/files/{path:path}", sync_to_thread=True)
    def file(
        self,
        project_id: FromPath[str],
        path: FromPath[str],
        runtime: NamedDependency[Runtime],
        request: Request[Any, Any, Any],
    ) -> Response[Any] | File:
        """A stored project file (take outputs, previews, assets); never ``..`` or ``.git``.
        A ``Range: bytes=`` header gets 206 with those bytes (video seeking), or 416."""
        project = runtime.projects.get(project_id)
        rel = path.lstrip("/")
        if not project.is_file(rel):  # refuses '..' and '.git' (unsafe_path)
            raise FileNotFoundInProjectError(
                f"project '{project_id}' has no file {rel!r}", path=path
            )
        media_type = mimetypes.guess_type(rel)[0] or "application/octet-stream"
        partial = ranged(
            request.headers.get("range"),
            project.file_info(rel).size,
            lambda: project.open_file(rel),
            media_type,
        )
        if partial is not None:
            return partial
        return File(
            rel,
            file_system=cast(
                "FileSystemProtocol", ProjectFiles(project)
            ),  # info + open (read-only)
            media_type=media_type,
            content_disposition_type="inline",
            headers=ACCEPT_RANGES,
        )

    @post("/{project_id:str}/assets", status_code=201, request_max_body_size=None)
    async def upload(
        self,
        project_id: FromPath[str],
        request: Request[Any, Any, Any],
        runtime: NamedDependency[Runtime],
        config: NamedDependency[ServerConfig],
    ) -> dict[str, Any]:
        """Upload a file (multipart field ``file``) into ``01_Assets``; answers its ``asset://``."""
        project: ProjectStore = await asyncio.to_thread(runtime.projects.get, project_id)
        length = request.headers.get("content-length")
        stored = await receive_upload(
            project,
            request.headers.get("content-type", ""),
            request.stream(),
            config.max_upload_bytes,
            int(length) if length and length.isdigit() else None,
        )
        body = stored.to_dict()
        body["commit"] = await asyncio.to_thread(
            runtime.runner.histories.commit,
            project,
            [stored.path],
            f"Upload {stored.filename} as {body['uri']}",
        )
        uploaded = AssetUploaded.model_validate(body)
        event = await asyncio.to_thread(
            runtime.runner.bus.publish, f"project:{project_id}", project_id, uploaded
        )
        body["event_id"] = event.id
        return body


@get(f"{API}/auth/me", tags=["auth"], sync_to_thread=False)
def whoami(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """The caller: its user id, its projects (``null``: every project) and whether auth is on.

    The editor uses ``user_id`` for its WebSocket path (``/ws/{user_id}``), which under auth
    must be the token's user.
    """
    principal = principal_of(request)
    if principal is None:
        return {"user_id": DEFAULT_USER, "projects": None, "auth": False}
    projects = None if principal.all_projects else sorted(principal.projects)
    return {"user_id": principal.user, "projects": projects, "auth": True}


@get("/health", tags=["health"])
async def health(health_checks: NamedDependency[HealthChecks]) -> Response[dict[str, Any]]:
    """One check per service plus a probe task through the pipeline; 503 when unhealthy."""
    report = await health_checks.report()
    return Response(report, status_code=503 if report["status"] == "unhealthy" else 200)


CONTROLLERS: list[ControllerRouterHandler] = [
    FunctionsController,
    RunsController,
    ProjectsController,
    CanvasesController,
    AssembliesController,
    whoami,
    health,
]
