"""Canvases saved in a project: ``02_Source_Creative/canvases/<name>.takeflow.json``, committed.

Mount ``CanvasesController`` with the other controllers. A canvas is stored as graph/v1 (the
editor's own format, ``takeflow.editor/v1``, is accepted and converted by ``ui_bridge``); it
is parsed, not validated against templates, so unfinished work can be saved.
"""

from __future__ import annotations

import json
import re
from typing import Any

from litestar import Controller, delete, get, post, put
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody
from pydantic import BaseModel, ConfigDict, ValidationError

from dagster_defs.runtime import Runtime
from graph_runtime.errors import ProjectFileNotFoundError, UnsafePathError
from graph_runtime.projects import ProjectStore
from server.errors import RequestError, document_issues
from ui_bridge.document import parse_canvas

CANVAS_DIR = "02_Source_Creative/canvases"
SUFFIX = ".takeflow.json"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class CanvasNotFoundError(RequestError):
    code = "canvas_not_found"
    http_status = 404


class InvalidCanvasError(RequestError):
    code = "invalid_canvas"
    http_status = 422


class CanvasExistsError(RequestError):
    code = "canvas_exists"
    http_status = 409


class RenameRequest(BaseModel):
    """The canvas's new name; ``overwrite`` replaces a canvas already saved under it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    to: str
    overwrite: bool = False


def canvas_relpath(name: str, field: str = "name") -> str:
    """Project-relative path of a canvas; names are one safe segment (no ``/`` or ``..``)."""
    if not _NAME_RE.fullmatch(name) or ".." in name:
        raise UnsafePathError(
            f"canvas name {name!r} must be letters, digits, '.', '-' or '_' (at most 64)",
            field=field,
        )
    return f"{CANVAS_DIR}/{name}{SUFFIX}"


class CanvasesController(Controller):
    """List, load, save, rename and delete a project's canvases."""

    path = "/api/v1/projects/{project_id:str}/canvases"
    tags = ["canvases"]

    @get("/", sync_to_thread=True)
    def list_canvases(
        self, project_id: FromPath[str], runtime: NamedDependency[Runtime]
    ) -> list[dict[str, Any]]:
        """Saved canvases, newest first: name, path, modified time."""
        project = runtime.projects.get(project_id)
        out = [
            {
                "name": entry.name.removesuffix(SUFFIX),
                "path": entry.path,
                "modified": entry.mtime,
                "size": entry.size,
            }
            for entry in project.list_dir(CANVAS_DIR)
            if entry.kind == "file" and entry.name.endswith(SUFFIX)
        ]
        return sorted(out, key=lambda c: c["modified"] or 0, reverse=True)

    @get("/{name:str}", sync_to_thread=True)
    def load_canvas(
        self, project_id: FromPath[str], name: FromPath[str], runtime: NamedDependency[Runtime]
    ) -> dict[str, Any]:
        """The saved graph/v1 document."""
        project = runtime.projects.get(project_id)
        rel = canvas_relpath(name)
        result: dict[str, Any] = json.loads(_read(project, project_id, name, rel))
        return result

    @put("/{name:str}", sync_to_thread=True)
    def save_canvas(
        self,
        project_id: FromPath[str],
        name: FromPath[str],
        data: JSONBody[dict[str, Any]],
        runtime: NamedDependency[Runtime],
    ) -> dict[str, Any]:
        """Store a canvas (graph/v1 or editor/v1) as graph/v1 and commit it."""
        project = runtime.projects.get(project_id)
        rel = canvas_relpath(name)
        try:
            graph = parse_canvas(data)
        except ValidationError as exc:
            errors = [i.to_dict() for i in document_issues(exc, data, code="invalid_canvas")]
            raise InvalidCanvasError(
                f"the canvas is not a valid document ({len(errors)} problem(s))", errors=errors
            ) from None
        body = graph.model_dump(mode="json", exclude_none=True)
        project.write_file(rel, (json.dumps(body, indent=2) + "\n").encode())
        commit = runtime.runner.histories.commit(project, [rel], f"Save canvas {name}")
        return {"name": name, "path": rel, "commit": commit, "nodes": len(graph.nodes)}

    @post("/{name:str}/rename", status_code=200, sync_to_thread=True)
    def rename_canvas(
        self,
        project_id: FromPath[str],
        name: FromPath[str],
        data: JSONBody[RenameRequest],
        runtime: NamedDependency[Runtime],
    ) -> dict[str, Any]:
        """Move a canvas to a new name in one commit; the old file is gone (``canvas_exists``
        when the new name is taken, unless ``overwrite``)."""
        project = runtime.projects.get(project_id)
        rel, new_rel = canvas_relpath(name), canvas_relpath(data.to, "to")
        body = json.loads(_read(project, project_id, name, rel))
        if data.to == name:
            raise CanvasExistsError(
                f"canvas '{name}' already has that name", field="to", name=name, to=data.to
            )
        if project.is_file(new_rel) and not data.overwrite:
            raise CanvasExistsError(
                f"project '{project_id}' already has a canvas '{data.to}' (send overwrite: true "
                "to replace it)",
                field="to",
                name=name,
                to=data.to,
            )
        if isinstance(body, dict):
            body["name"] = data.to
        project.write_file(new_rel, (json.dumps(body, indent=2) + "\n").encode())
        project.delete_file(rel)
        message = f"Rename canvas {name} to {data.to}"
        commit = runtime.runner.histories.commit(project, [rel, new_rel], message)
        return {"name": data.to, "from": name, "path": new_rel, "commit": commit}

    @delete("/{name:str}", status_code=200, sync_to_thread=True)
    def delete_canvas(
        self, project_id: FromPath[str], name: FromPath[str], runtime: NamedDependency[Runtime]
    ) -> dict[str, Any]:
        """Remove a canvas and commit its removal (git keeps the old versions)."""
        project = runtime.projects.get(project_id)
        rel = canvas_relpath(name)
        _read(project, project_id, name, rel)
        project.delete_file(rel)
        commit = runtime.runner.histories.commit(project, [rel], f"Delete canvas {name}")
        return {"name": name, "path": rel, "commit": commit}


def _read(project: ProjectStore, project_id: str, name: str, rel: str) -> bytes:
    try:
        data: bytes = project.read_file(rel)
    except ProjectFileNotFoundError:
        raise CanvasNotFoundError(
            f"project '{project_id}' has no canvas '{name}'", project_id=project_id, name=name
        ) from None
    return data
