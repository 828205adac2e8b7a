"""Projects on disk: the studio folder layout, git repository, takes and assets of each."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fsspec

from graph_runtime.errors import (
    AssetNotFoundError,
    ProjectError,
    ProjectNotFoundError,
    UnsafePathError,
)
from graph_runtime.takes import (
    PROJECT_DIRS,
    PROJECT_FILE,
    check_project_id,
    project_id_from_name,
)
from stores.git_repo import ProjectRepository
from stores.takes import FsspecTakeStore

TakeStoreFactory = Callable[[str, str, fsspec.AbstractFileSystem], FsspecTakeStore]

ASSET_SCHEME = "asset://"
_ASSET_ID_RE = re.compile(
    r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}(/[A-Za-z0-9][A-Za-z0-9._-]{0,127}){0,4}$"
)


def asset_relpath(uri_or_id: str) -> str:
    """``asset://<id>`` (or a bare id) -> project-relative path, refusing anything that escapes."""
    asset_id = uri_or_id.removeprefix(ASSET_SCHEME)
    if not _ASSET_ID_RE.match(asset_id) or ".." in asset_id.split("/"):
        raise UnsafePathError(
            f"asset reference {uri_or_id!r} is not a valid asset id "
            "(letters, digits, '.', '-', '_' and '/' between segments; no '..')",
            field="asset",
        )
    return f"01_Assets/{asset_id}"


@dataclass
class Project:
    """One project: its folder on an fsspec filesystem, git repository and take store."""

    id: str
    name: str
    path: Path
    fs: fsspec.AbstractFileSystem
    repo: ProjectRepository
    takes: FsspecTakeStore = field(init=False)

    def __post_init__(self) -> None:
        self.takes = FsspecTakeStore(self.id, str(self.path), self.fs)

    def abs(self, rel: str) -> str:
        return f"{self.path}/{rel}"

    def read_asset(self, uri: str) -> bytes:
        rel = asset_relpath(uri)
        try:
            return bytes(self.fs.cat_file(self.abs(rel)))
        except FileNotFoundError:
            raise AssetNotFoundError(
                f"asset {uri!r} is not in project '{self.id}'", asset=uri, project_id=self.id
            ) from None

    def safe_file(self, rel: str) -> str:
        """Absolute path of a project file, refusing paths that leave the project or hit .git."""
        parts = [p for p in rel.split("/") if p not in ("", ".")]
        if not parts or any(p == ".." for p in parts) or parts[0] in (".git",) or "\\" in rel:
            raise UnsafePathError(f"path {rel!r} is not a file inside the project", field="path")
        return self.abs("/".join(parts))

    def info(self) -> dict[str, Any]:
        return {"project_id": self.id, "name": self.name, "path": str(self.path)}


class ProjectAssets:
    """The ``assets`` service templates use to read ``asset://`` references of one project."""

    def __init__(self, project: Project) -> None:
        self._project = project

    def read(self, uri: str) -> bytes:
        return self._project.read_asset(uri)


class ProjectCatalog:
    """Known projects of a Takeflow home (``projects.json``: id -> folder)."""

    def __init__(
        self,
        home: Path,
        fs: fsspec.AbstractFileSystem | None = None,
        take_store: TakeStoreFactory | None = None,
    ) -> None:
        """``take_store`` replaces each project's take store (distributed mode: numbering under
        a database lock)."""
        self.home = home
        self.fs = fs or fsspec.filesystem("file")
        self._take_store = take_store
        self._index = home / "projects.json"
        self._lock = threading.Lock()
        self._open: dict[str, Project] = {}

    def _read_index(self) -> dict[str, str]:
        try:
            return dict(json.loads(self._index.read_text()))
        except FileNotFoundError:
            return {}

    def _write_index(self, index: dict[str, str]) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        tmp = self._index.with_suffix(".tmp")
        tmp.write_text(json.dumps(index, indent=2, sort_keys=True))
        tmp.replace(self._index)

    def create(self, project_id: str, name: str | None = None, path: Path | None = None) -> Project:
        """Lay out a new project folder, make it a git repository and register it."""
        check_project_id(project_id)
        with self._lock:
            index = self._read_index()
            if project_id in index:
                raise ProjectError(f"project '{project_id}' already exists", project_id=project_id)
            folder = (path or self.home / "projects" / project_id).resolve()
            if (folder / PROJECT_FILE).exists():
                raise ProjectError(f"{folder} already holds a project", project_id=project_id)
            for d in PROJECT_DIRS:
                (folder / d).mkdir(parents=True, exist_ok=True)
            for d in ("01_Assets", "02_Source_Creative", "03_Renders", "04_Project_Files"):
                (folder / d / ".gitkeep").touch()
            display_name = name or project_id
            meta = {"project_id": project_id, "name": display_name, "created_at": time.time()}
            (folder / PROJECT_FILE).write_text(json.dumps(meta, indent=2))
            repo = ProjectRepository.create(folder)
            index[project_id] = str(folder)
            self._write_index(index)
            project = self._opened(Project(project_id, display_name, folder, self.fs, repo))
            return project

    def free_id(self, name: str) -> str:
        """An unused project id derived from a display name (``My Film`` -> ``my-film``,
        ``my-film-2`` ...): not in this home, and its default folder holds no project."""
        with self._lock:
            index = self._read_index()

            def taken(candidate: str) -> bool:
                folder = self.home / "projects" / candidate
                return candidate in index or (folder / PROJECT_FILE).exists()

            return project_id_from_name(name, taken)

    def register(self, folder: Path) -> Project:
        """Add an existing project folder (one with ``project.json``) to this home."""
        folder = folder.resolve()
        meta = json.loads((folder / PROJECT_FILE).read_text())
        with self._lock:
            index = self._read_index()
            index[meta["project_id"]] = str(folder)
            self._write_index(index)
        return self.get(meta["project_id"])

    def get(self, project_id: str) -> Project:
        check_project_id(project_id)
        with self._lock:
            if project_id in self._open:
                return self._open[project_id]
            folder = self._read_index().get(project_id)
            if folder is None:
                raise ProjectNotFoundError(
                    f"no project '{project_id}' in this Takeflow home", project_id=project_id
                )
            meta = json.loads((Path(folder) / PROJECT_FILE).read_text())
            repo = ProjectRepository(Path(folder))
            repo.uses_lfs = (Path(folder) / ".git" / "hooks" / "pre-push").exists()
            name = meta.get("name", project_id)
            return self._opened(Project(project_id, name, Path(folder), self.fs, repo))

    def _opened(self, project: Project) -> Project:
        if self._take_store is not None:
            project.takes = self._take_store(project.id, str(project.path), project.fs)
        self._open[project.id] = project
        return project

    def list(self) -> list[Project]:
        return [self.get(pid) for pid in sorted(self._read_index())]

    def find_by_path(self, folder: Path) -> Project | None:
        folder = folder.resolve()
        for pid, path in self._read_index().items():
            if Path(path) == folder:
                return self.get(pid)
        return None
