"""Projects on disk: the studio folder layout, git repository, takes and assets of each
(``Project`` is the real ``graph_runtime.projects.ProjectStore``)."""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, BinaryIO, Literal, cast

import fsspec

from graph_runtime.errors import (
    AssetNotFoundError,
    ProjectError,
    ProjectFileNotFoundError,
    ProjectNotFoundError,
    UnsafePathError,
)
from graph_runtime.history import ProjectHistory
from graph_runtime.projects import (
    ASSET_SCHEME,
    FileInfo,
    ProjectAssets,
    StagedFile,
    asset_relpath,
    check_relpath,
    image_suffix,
    preview_relpath,
)
from graph_runtime.takes import (
    PROJECT_DIRS,
    PROJECT_FILE,
    TakeStore,
    check_project_id,
    project_id_from_name,
)
from stores.git_repo import ProjectRepository
from stores.paths import resolved_inside
from stores.takes import FsspecTakeStore

TakeStoreFactory = Callable[[str, str, fsspec.AbstractFileSystem], FsspecTakeStore]

__all__ = ["ASSET_SCHEME", "Project", "ProjectAssets", "ProjectCatalog", "asset_relpath"]

UPLOAD_STAGING_DIR = "05_Cache/uploads"
WRITE_STAGING_DIR = "05_Cache/tmp"


class _StagedFile:
    """A file written under ``05_Cache/uploads`` and moved into place by ``publish``."""

    def __init__(self, project: Project) -> None:
        self._project = project
        self._staging = project.checked(f"{UPLOAD_STAGING_DIR}/{uuid.uuid4().hex}.part")
        fs = project._fs
        fs.makedirs(self._staging.rsplit("/", 1)[0], exist_ok=True)
        self._handle: IO[bytes] | None = fs.open(self._staging, "wb")

    def write(self, data: bytes) -> None:
        if self._handle is None:
            raise ValueError("the staged file was already published or discarded")
        self._handle.write(data)

    def _close(self) -> None:
        if self._handle is not None:
            handle, self._handle = self._handle, None
            handle.close()

    def publish(self, rel: str) -> None:
        self._close()
        self._project._move_into(self._staging, rel)

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            self._close()
        with contextlib.suppress(OSError):
            if self._project._fs.exists(self._staging):
                self._project._fs.rm(self._staging)


class Project:
    """One project (a ``ProjectStore``): its folder on an fsspec filesystem, its git repository
    (the project's history) and its take store."""

    def __init__(
        self,
        project_id: str,
        name: str,
        path: Path,
        fs: fsspec.AbstractFileSystem,
        repo: ProjectRepository,
        take_store: TakeStoreFactory | None = None,
    ) -> None:
        self.id = project_id
        self.name = name
        self.path = Path(path)
        self.repo = repo
        self._take_store = take_store or FsspecTakeStore
        self._fs = fs
        self._takes = self._take_store(project_id, str(self.path), fs)

    @property
    def takes(self) -> TakeStore:
        return self._takes

    @property
    def history(self) -> ProjectHistory:
        return self.repo

    def use_filesystem(self, fs: fsspec.AbstractFileSystem) -> None:
        """Keep this project's files (and takes) on ``fs`` from now on (fault injection)."""
        self._fs = fs
        self._takes = self._take_store(self.id, str(self.path), fs)

    def abs(self, rel: str) -> str:
        """Absolute path of a project-relative path (unchecked: callers pass checked paths)."""
        return f"{self.path}/{rel}"

    def checked(self, rel: str) -> str:
        """Absolute path of ``rel``, refusing (``UnsafePathError``) a path that leaves the
        project or touches ``.git``, as text or once its symlinks are resolved; a symlink that
        resolves inside the project (not into ``.git``) is followed."""
        rel = check_relpath(rel)
        resolved_inside(self.path, rel)
        return self.abs(rel)

    def location(self, rel: str) -> str:
        return self.checked(rel)

    def info(self) -> dict[str, Any]:
        return {"project_id": self.id, "name": self.name, "path": str(self.path)}

    # -- assets and previews ----------------------------------------------------------------

    def read_asset(self, uri: str) -> bytes:
        path = self.checked(asset_relpath(uri))
        try:
            return bytes(self._fs.cat_file(path))
        except FileNotFoundError:
            raise AssetNotFoundError(
                f"asset {uri!r} is not in project '{self.id}'", asset=uri, project_id=self.id
            ) from None

    def has_asset(self, uri: str) -> bool:
        return bool(self._fs.isfile(self.checked(asset_relpath(uri))))

    def write_preview(self, task_id: str, node_id: str, index: int, png: bytes) -> str:
        rel = preview_relpath(task_id, node_id, index, image_suffix(png))
        self.write_file(rel, png)
        return rel

    # -- files ------------------------------------------------------------------------------

    def is_file(self, rel: str) -> bool:
        return bool(self._fs.isfile(self.checked(rel)))

    def file_info(self, rel: str) -> FileInfo:
        rel = check_relpath(rel)
        try:
            info = self._fs.info(self.checked(rel))
        except FileNotFoundError:
            raise self._missing(rel) from None
        return self._file_info(rel, info)

    @staticmethod
    def _file_info(rel: str, info: dict[str, Any]) -> FileInfo:
        kind: Literal["file", "directory"] = (
            "directory" if info.get("type") == "directory" else "file"
        )
        mtime = info.get("mtime")
        return FileInfo(rel, kind, int(info.get("size") or 0), float(mtime) if mtime else None)

    def read_file(self, rel: str) -> bytes:
        rel = check_relpath(rel)
        try:
            return bytes(self._fs.cat_file(self.checked(rel)))
        except (FileNotFoundError, IsADirectoryError):
            raise self._missing(rel) from None

    def open_file(self, rel: str) -> BinaryIO:
        rel = check_relpath(rel)
        try:
            return cast(BinaryIO, self._fs.open(self.checked(rel), "rb"))
        except (FileNotFoundError, IsADirectoryError):
            raise self._missing(rel) from None

    def list_dir(self, rel: str) -> list[FileInfo]:
        rel = check_relpath(rel)
        folder = self.checked(rel)
        if not self._fs.isdir(folder):
            return []
        entries = []
        for info in self._fs.ls(folder, detail=True):
            entry = f"{rel}/{info['name'].rstrip('/').rsplit('/', 1)[-1]}"
            with contextlib.suppress(UnsafePathError):  # a symlink out is not listed
                resolved_inside(self.path, entry)
                entries.append(self._file_info(entry, info))
        return sorted(entries, key=lambda e: e.name)

    def write_file(self, rel: str, data: bytes) -> None:
        """Written under ``05_Cache/tmp`` first, then renamed into place."""
        rel = check_relpath(rel)
        self.checked(rel)
        tmp = self.checked(f"{WRITE_STAGING_DIR}/{uuid.uuid4().hex}")
        self._fs.makedirs(tmp.rsplit("/", 1)[0], exist_ok=True)
        try:
            self._fs.pipe_file(tmp, bytes(data))
            self._move_into(tmp, rel)
        except BaseException:
            with contextlib.suppress(OSError):
                if self._fs.exists(tmp):
                    self._fs.rm(tmp)
            raise

    def delete_file(self, rel: str) -> None:
        rel = check_relpath(rel)
        path = self.checked(rel)
        if not self._fs.isfile(path):
            raise self._missing(rel)
        self._fs.rm(path)

    def stage_file(self) -> StagedFile:
        return _StagedFile(self)

    def discard_staging(self) -> int:
        discard = getattr(self._takes, "discard_staging", None)
        return int(discard()) if discard is not None else 0

    def _move_into(self, source: str, rel: str) -> None:
        rel = check_relpath(rel)
        target = self.checked(rel)
        if self._fs.isdir(target):  # a move would put the file inside the folder
            raise ProjectError(f"{rel!r} is a folder of project '{self.id}'", path=rel)
        self._fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
        self._fs.mv(source, target)

    def _missing(self, rel: str) -> ProjectFileNotFoundError:
        return ProjectFileNotFoundError(
            f"project '{self.id}' has no file {rel!r}", path=rel, project_id=self.id
        )


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
            project = self._opened(
                Project(project_id, display_name, folder, self.fs, repo, self._take_store)
            )
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
            return self._opened(
                Project(project_id, name, Path(folder), self.fs, repo, self._take_store)
            )

    def _opened(self, project: Project) -> Project:
        self._open[project.id] = project
        return project

    def use_filesystem(self, fs: fsspec.AbstractFileSystem) -> None:
        """Keep every project's files on ``fs``, those open now and those opened later (the
        test-only fault-injection plugin wraps the local filesystem this way)."""
        with self._lock:
            self.fs = fs
            for project in self._open.values():
                project.use_filesystem(fs)

    def list(self) -> list[Project]:
        return [self.get(pid) for pid in sorted(self._read_index())]

    def find_by_path(self, folder: Path) -> Project | None:
        folder = folder.resolve()
        for pid, path in self._read_index().items():
            if Path(path) == folder:
                return self.get(pid)
        return None
