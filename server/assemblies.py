"""``/api/v1/projects/{id}/assemblies``: cut a scene's active takes into one MP4 as a task
(``assemble_scene``), and list a scene's cuts. The plan is resolved and checked here, before
anything is queued; the task, its progress events, the numbered take under ``<scene>/_cut``,
the commit and the Dagster run are the runtime's usual machinery."""

from __future__ import annotations

import json
from typing import Any

from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody

from dagster_defs.runtime import Runtime
from graph_runtime.assembly import (
    TEMPLATE_ID,
    AssemblyRequest,
    UnknownSceneError,
    cut_shot,
    layout,
    plan_assembly,
    planned_counts,
)
from graph_runtime.errors import TakeflowError
from graph_runtime.projects import ProjectStore
from graph_runtime.takes import Take
from server.auth import principal_of
from server.submissions import Submissions, TaskRequest
from server.wire import API


def cut_view(project: ProjectStore, take: Take, scene: str) -> dict[str, Any]:
    """A cut as ``GET .../assemblies`` shows it: the take plus its manifest."""
    manifest: dict[str, Any] | None = None
    if "manifest" in take.outputs:
        try:
            manifest = json.loads(project.read_file(take.outputs["manifest"].path))
        except (TakeflowError, OSError, ValueError):
            manifest = None
    video = take.outputs.get("video")
    poster = take.outputs.get("video_poster")
    return {
        "take_id": take.take_id,
        "scene": scene,
        "shot": take.shot,
        "task_id": take.metadata.get("task_id"),
        "active": take.active,
        "created_at": take.metadata.get("created_at"),
        "video": video.path if video else None,
        "poster": poster.path if poster else None,
        "manifest": manifest,
    }


class AssembliesController(Controller):
    """Scene cuts: submit one (a task), list a scene's."""

    path = f"{API}/projects/{{project_id:str}}/assemblies"
    tags = ["projects"]

    @post("/", status_code=202, sync_to_thread=True)
    def assemble(
        self,
        project_id: FromPath[str],
        data: JSONBody[AssemblyRequest],
        runtime: NamedDependency[Runtime],
        submissions: NamedDependency[Submissions],
        request: Request[Any, Any, Any],
    ) -> dict[str, Any]:
        """Cut the active take of each shot of a scene (a chapter, or a list of shots) into
        one MP4: a task whose take is the next cut of ``<chapter>/<scene>/_cut``. 422 naming
        the field and shot for an unknown scene or shot, a shot without an active take or
        without an image or video, nothing to assemble; nothing is queued then."""
        principal = principal_of(request)
        if principal is not None:
            principal.require(project_id)
        project = runtime.projects.get(project_id)
        plan = plan_assembly(project, data)
        body = submissions.submit_task(
            TaskRequest(
                template_id=TEMPLATE_ID,
                inputs={"plan": plan},
                project_id=project_id,
                shot_id=plan["shot"],
            ),
            principal=principal,
        )
        planned = layout(plan, planned_counts(plan))
        return {**body, "scene": plan["scene"], "shot": plan["shot"], "shots": planned["shots"]}

    @get("/", sync_to_thread=True)
    def cuts(
        self,
        project_id: FromPath[str],
        runtime: NamedDependency[Runtime],
        scene: FromQuery[str],
    ) -> list[dict[str, Any]]:
        """A scene's cuts (``scene=ch01/sc01``; a chapter's: ``scene=ch01``), oldest first,
        each with its video, poster and manifest paths (served by ``.../files/{path}``)."""
        project = runtime.projects.get(project_id)
        parts = scene.split("/")
        if len(parts) not in (1, 2):
            raise UnknownSceneError(
                f"scene {scene!r} must look like 'ch01/sc01' (or a chapter, 'ch01')",
                field="scene",
            )
        try:
            shot = cut_shot(scene)
            takes = project.takes.list(shot=shot)
        except TakeflowError as exc:  # an unsafe name
            raise UnknownSceneError(exc.message, field="scene") from None
        return [cut_view(project, t, scene) for t in takes]
