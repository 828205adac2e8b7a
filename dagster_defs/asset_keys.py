"""Asset keys of a project in the Dagster UI, and which saved canvas a run's graph is.

- an uploaded asset: ``takeflow/<project>/01_Assets/<id path>``;
- a node's outputs: ``takeflow/<project>/<canvas>/<canvas>.<node>`` (the lineage graph draws
  the last part, so a box says ``poster.grain``, not ``grain``);
- a shot's take output: ``takeflow/<project>/<chapter>/<scene>/<shot>/<shot>.<output>``
  (``sh010.image``), one materialization per take.
"""

from __future__ import annotations

import threading
from pathlib import Path

from dagster import AssetKey
from pydantic import ValidationError

from dagster_defs.schedules import SCHEDULES_SUFFIX, canvas_name
from graph_runtime.canvas import CanvasGraph
from graph_runtime.errors import TakeflowError, UnsafePathError
from graph_runtime.projects import FileInfo, ProjectStore
from stores.paths import resolved_inside

SOURCE_DIR = "02_Source_Creative"
API = "/api/v1"


def file_url(project_id: str, rel: str) -> str:
    """The path of a project file in Takeflow's HTTP API (``server`` serves it)."""
    return f"{API}/projects/{project_id}/files/{rel}"


def uploaded_asset_key(project_id: str, uri: str) -> AssetKey:
    return AssetKey(["takeflow", project_id, "01_Assets", *uri.removeprefix("asset://").split("/")])


def node_asset_key(project_id: str, canvas: str, node_id: str) -> AssetKey:
    return AssetKey(["takeflow", project_id, canvas, f"{canvas}.{node_id}"])


def take_asset_key(project_id: str, shot: str, output: str) -> AssetKey:
    """``output``: the take output's name, a ``.`` in it written ``__``."""
    chapter, scene, shot_name = shot.split("/")
    return AssetKey(["takeflow", project_id, chapter, scene, shot_name, f"{shot_name}.{output}"])


# where saved canvases live in a project, and how their files end
CANVAS_FOLDERS = ((SOURCE_DIR, ".json"), (f"{SOURCE_DIR}/canvases", ".takeflow.json"))


def is_canvas_file(name: str, suffix: str) -> bool:
    """A canvas document of a ``CANVAS_FOLDERS`` folder (not a schedules sidecar)."""
    return name.endswith(suffix) and not name.endswith(SCHEDULES_SUFFIX)


def saved_canvas_paths(project_path: Path) -> list[Path]:
    """The canvas documents of a project (not their schedule sidecars): ``02_Source_Creative/
    *.json`` and the server's ``02_Source_Creative/canvases/*.takeflow.json``; a symlink that
    leads out of the project or into ``.git`` is left out (``stores.paths``)."""
    return sorted(
        path
        for folder, suffix in CANVAS_FOLDERS
        for path in (project_path / folder).glob(f"*{suffix}")
        if is_canvas_file(path.name, suffix) and path.is_file() and _inside(project_path, path)
    )


def _inside(project_path: Path, path: Path) -> bool:
    try:
        resolved_inside(project_path, str(path.relative_to(project_path)))
    except UnsafePathError:
        return False
    return True


class SavedCanvasIndex:
    """Which saved canvas of a project a graph is (same name and shape), so that a run of it
    materializes that canvas's node assets. Parsed documents are cached by modification time."""

    def __init__(self) -> None:
        self._parsed: dict[tuple[str, str], tuple[float | None, str, str]] = {}
        self._lock = threading.Lock()

    def canvas_for(self, project: ProjectStore, graph: CanvasGraph) -> str | None:
        """The saved canvas's name (``canvas_name`` of its file), or None."""
        wanted = (graph.name, graph.structure_hash())
        for folder, suffix in CANVAS_FOLDERS:
            for info in project.list_dir(folder):
                found = info.kind == "file" and is_canvas_file(info.name, suffix)
                if found and self._read(project, info) == wanted:
                    return canvas_name(Path(info.name))
        return None

    def _read(self, project: ProjectStore, info: FileInfo) -> tuple[str, str] | None:
        key = (project.id, info.path)
        with self._lock:
            cached = self._parsed.get(key)
        if cached is not None and cached[0] == info.mtime and info.mtime is not None:
            return cached[1], cached[2]
        try:
            graph = CanvasGraph.model_validate_json(project.read_file(info.path))
        except (TakeflowError, OSError, ValidationError, ValueError):
            return None
        with self._lock:
            self._parsed[key] = (info.mtime, graph.name, graph.structure_hash())
        return graph.name, graph.structure_hash()
