"""A project's files behind narrow verbs: ``ProjectStore`` is what the runtime, the server and
the ComfyUI layer need from a project (assets, previews, canvases, uploads, takes, history).

``stores.projects.Project`` is the real one (a folder on an fsspec filesystem and a git
repository); ``MemoryProject`` is its in-memory twin for unit tests of the core. Both share one
contract (``tests/stores/test_project_store.py``). Paths are project-relative and every verb
refuses one that leaves the project or touches ``.git`` (``UnsafePathError``, ``unsafe_path``):
as text here (``check_relpath``, ``asset_relpath``), and once resolved on disk in the real
store, so a symlink in a cloned or pulled project cannot lead out of it or into ``.git``. A
symlink that resolves inside the project (not into ``.git``) is followed; the memory twin holds
no symlinks.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO, Literal, Protocol

from graph_runtime.errors import (
    AssetNotFoundError,
    ProjectError,
    ProjectFileNotFoundError,
    TakeNotFoundError,
    UnsafePathError,
)
from graph_runtime.history import MemoryProjectHistory, ProjectHistory
from graph_runtime.takes import (
    ACTIVE_TAKE_FILE,
    PROJECT_FILE,
    TAKE_METADATA_FILE,
    OutputFile,
    StoredOutput,
    Take,
    TakeStore,
    check_project_id,
    check_shot,
    shot_takes_dir,
    take_id,
    take_number,
)

ASSET_SCHEME = "asset://"
ASSETS_DIR = "01_Assets"
PREVIEW_DIR = "05_Cache/previews"
_ASSET_ID_RE = re.compile(
    r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}(/[A-Za-z0-9][A-Za-z0-9._-]{0,127}){0,4}$"
)


def asset_relpath(uri_or_id: str) -> str:
    """``asset://<id>`` (or a bare id) -> project-relative path, refusing anything that escapes."""
    asset_id = uri_or_id.removeprefix(ASSET_SCHEME)
    if not _ASSET_ID_RE.fullmatch(asset_id) or ".." in asset_id.split("/"):
        raise UnsafePathError(
            f"asset reference {uri_or_id!r} is not a valid asset id "
            "(letters, digits, '.', '-', '_' and '/' between segments; no '..')",
            field="asset",
        )
    return f"{ASSETS_DIR}/{asset_id}"


_NOT_TEXT = re.compile(r"[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2066-\u2069\s]+")


def one_line(text: object, limit: int = 200) -> str:
    """``text`` as one line of plain text for a commit message or a display name: control,
    line-breaking and bidirectional-override characters become a space (runs collapsed), at
    most ``limit`` characters (cut with an ellipsis)."""
    line = _NOT_TEXT.sub(" ", str(text)).strip()
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "\u2026"


def check_relpath(rel: str) -> str:
    """``rel`` normalised (no empty or ``.`` segments), refusing paths that leave the project
    (``..``, backslashes) or reach into ``.git``."""
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    if not parts or ".." in parts or ".git" in parts or "\\" in rel:
        raise UnsafePathError(f"path {rel!r} is not a file inside the project", field="path")
    return "/".join(parts)


def preview_relpath(task_id: str, node_id: str, index: int, suffix: str = ".png") -> str:
    """Where the ``index``-th preview of a node of a task is stored."""
    return check_relpath(f"{PREVIEW_DIR}/{task_id}/{node_id}_{index:03d}{suffix}")


def image_suffix(data: bytes) -> str:
    """``.jpg`` for JPEG bytes, else ``.png`` (previews are one or the other)."""
    return ".jpg" if data[:3] == b"\xff\xd8\xff" else ".png"


@dataclass(frozen=True)
class FileInfo:
    """A project file or folder: its project-relative path, kind, size and modified time."""

    path: str
    kind: Literal["file", "directory"]
    size: int
    mtime: float | None

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]


class StagedFile(Protocol):
    """A file being written (an upload as it streams in): invisible until ``publish``."""

    def write(self, data: bytes) -> None: ...

    def publish(self, rel: str) -> None:
        """Put the bytes written so far at ``rel`` in one step (replacing what was there)."""
        ...

    def discard(self) -> None:
        """Drop the bytes written so far (never raises)."""
        ...


class ProjectStore(Protocol):
    """One project's files, takes and history, through verbs that keep paths inside it."""

    @property
    def id(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def takes(self) -> TakeStore: ...

    @property
    def history(self) -> ProjectHistory: ...

    def info(self) -> dict[str, Any]:
        """``project_id``, ``name`` and ``path`` (where the project lives)."""
        ...

    def location(self, rel: str) -> str:
        """Where a project file lives, for people and tools (a path or URL); not for reading."""
        ...

    def read_asset(self, uri: str) -> bytes:
        """The bytes of an ``asset://`` reference (``AssetNotFoundError`` naming it if absent)."""
        ...

    def has_asset(self, uri: str) -> bool: ...

    def write_preview(self, task_id: str, node_id: str, index: int, png: bytes) -> str:
        """Store a preview image; returns its project-relative path."""
        ...

    def is_file(self, rel: str) -> bool: ...

    def file_info(self, rel: str) -> FileInfo:
        """A file's or folder's info (``ProjectFileNotFoundError`` when there is none)."""
        ...

    def read_file(self, rel: str) -> bytes:
        """A file's bytes (``ProjectFileNotFoundError`` when there is none)."""
        ...

    def open_file(self, rel: str) -> BinaryIO:
        """A file opened for reading in binary (for streaming it out)."""
        ...

    def list_dir(self, rel: str) -> list[FileInfo]:
        """What a folder holds (files and folders, by name); empty when it does not exist."""
        ...

    def write_file(self, rel: str, data: bytes) -> None:
        """Write a file in one step: readers see the old or the new bytes, never a part."""
        ...

    def delete_file(self, rel: str) -> None:
        """Remove a file (``ProjectFileNotFoundError`` when there is none); commit it after."""
        ...

    def stage_file(self) -> StagedFile:
        """Start writing a file whose place is chosen once it is complete (an upload)."""
        ...

    def discard_staging(self) -> int:
        """Remove takes half-written by an interrupted process (at start-up, with no other
        writer); returns how many."""
        ...


class ProjectAssets:
    """The ``assets`` service templates use to read ``asset://`` references of one project."""

    def __init__(self, project: ProjectStore) -> None:
        self._project = project

    def read(self, uri: str) -> bytes:
        return self._project.read_asset(uri)

    def open_file(self, rel: str) -> BinaryIO:
        """A project file (a take's output) opened for streaming reads (scene assembly)."""
        return self._project.open_file(rel)


class MemoryTakeStore:
    """In-memory twin of a project's take store; writes each take's files and ``take.json``
    into the project's working tree (``write``), as the real store does on disk."""

    def __init__(self, project_id: str, write: Callable[[str, bytes], None]) -> None:
        self.project_id = project_id
        self._write = write
        self._records: dict[str, list[dict[str, Any]]] = {}
        self._active: dict[str, str] = {}
        self._lock = threading.Lock()

    def create(self, shot: str, files: Sequence[OutputFile], metadata: Mapping[str, Any]) -> Take:
        takes_dir = shot_takes_dir(shot)
        with self._lock:
            records = self._records.setdefault(shot, [])
            number = len(records) + 1
            tid = take_id(number)
            final_dir = f"{takes_dir}/{tid}"
            outputs = {
                f.name: StoredOutput(
                    f"{final_dir}/{f.name}{f.extension}",
                    len(f.data),
                    f.content_type,
                    hashlib.sha256(f.data).hexdigest(),
                )
                for f in files
            }
            record = {
                "take_id": tid,
                "number": number,
                "project_id": self.project_id,
                "shot_id": shot,
                "created_at": time.time(),
                "outputs": {k: v.to_dict() for k, v in outputs.items()},
                **{k: v for k, v in metadata.items() if k != "outputs"},
            }
            for f in files:
                self._write(outputs[f.name].path, f.data)
            meta = json.dumps(record, indent=2, sort_keys=True, default=str).encode()
            self._write(f"{final_dir}/{TAKE_METADATA_FILE}", meta)
            records.append(record)
            if shot not in self._active:
                self._set_active(shot, tid)
            return self._take(record)

    def _set_active(self, shot: str, tid: str) -> None:
        self._active[shot] = tid
        self._write(
            f"{shot_takes_dir(shot)}/{ACTIVE_TAKE_FILE}", json.dumps({"take_id": tid}).encode()
        )

    def _take(self, record: Mapping[str, Any]) -> Take:
        shot = record["shot_id"]
        outputs = {k: StoredOutput(**v) for k, v in record["outputs"].items()}
        active = self._active.get(shot) == record["take_id"]
        return Take(
            record["take_id"], record["number"], self.project_id, shot, outputs, record, active
        )

    def list(self, shot: str | None = None, task_id: str | None = None) -> list[Take]:
        with self._lock:
            shots = [check_shot(shot)] if shot else list(self._records)
            takes = [self._take(r) for s in shots for r in self._records.get(s, [])]
        if task_id is not None:
            takes = [t for t in takes if t.metadata.get("task_id") == task_id]
        return sorted(takes, key=lambda t: (t.shot, t.number))

    def get(self, shot: str, take_id: str) -> Take:
        number = take_number(take_id)
        check_shot(shot)
        with self._lock:
            records = self._records.get(shot, [])
            if not 1 <= number <= len(records):
                raise TakeNotFoundError(
                    f"shot {shot} has no take {take_id}", shot_id=shot, take_id=take_id
                )
            return self._take(records[number - 1])

    def set_active(self, shot: str, take_id: str) -> Take:
        self.get(shot, take_id)
        with self._lock:
            self._set_active(shot, take_id)
        return self.get(shot, take_id)


class _MemoryStagedFile:
    def __init__(self, project: MemoryProject) -> None:
        self._project = project
        self._buffer = bytearray()

    def write(self, data: bytes) -> None:
        self._buffer += data

    def publish(self, rel: str) -> None:
        self._project.write_file(rel, bytes(self._buffer))

    def discard(self) -> None:
        self._buffer.clear()


class MemoryProject:
    """In-memory twin of a project: a working tree of bytes shared by its files, its takes and
    its history (``MemoryProjectHistory``), so what a take writes can be read and committed."""

    def __init__(self, project_id: str = "memory", name: str | None = None) -> None:
        self.id = check_project_id(project_id)
        self.name = name or project_id
        self._history = MemoryProjectHistory()
        self._mtimes: dict[str, float] = {}
        self._takes = MemoryTakeStore(self.id, self._put)
        meta = {"project_id": self.id, "name": self.name}
        self._put(PROJECT_FILE, json.dumps(meta, indent=2).encode())
        self._history.commit(["."], "Initialise Takeflow project")

    @property
    def takes(self) -> MemoryTakeStore:
        return self._takes

    @property
    def history(self) -> MemoryProjectHistory:
        return self._history

    @property
    def _tree(self) -> dict[str, bytes]:
        return self._history.tree

    def _put(self, rel: str, data: bytes) -> None:
        if self._is_dir(rel):
            raise ProjectError(f"{rel!r} is a folder of project '{self.id}'", path=rel)
        self._history.write(rel, data)
        self._mtimes[rel] = time.time()

    def _is_dir(self, rel: str) -> bool:
        prefix = rel + "/"
        return any(p.startswith(prefix) for p in list(self._tree))

    def info(self) -> dict[str, Any]:
        return {"project_id": self.id, "name": self.name, "path": f"memory://{self.id}"}

    def location(self, rel: str) -> str:
        return f"memory://{self.id}/{check_relpath(rel)}"

    def read_asset(self, uri: str) -> bytes:
        data = self._tree.get(asset_relpath(uri))
        if data is None:
            raise AssetNotFoundError(
                f"asset {uri!r} is not in project '{self.id}'", asset=uri, project_id=self.id
            )
        return data

    def has_asset(self, uri: str) -> bool:
        return asset_relpath(uri) in self._tree

    def write_preview(self, task_id: str, node_id: str, index: int, png: bytes) -> str:
        rel = preview_relpath(task_id, node_id, index, image_suffix(png))
        self._put(rel, png)
        return rel

    def is_file(self, rel: str) -> bool:
        return check_relpath(rel) in self._tree

    def file_info(self, rel: str) -> FileInfo:
        rel = check_relpath(rel)
        data = self._tree.get(rel)
        if data is not None:
            return FileInfo(rel, "file", len(data), self._mtimes.get(rel))
        if self._is_dir(rel):
            return FileInfo(rel, "directory", 0, None)
        raise self._missing(rel)

    def read_file(self, rel: str) -> bytes:
        rel = check_relpath(rel)
        data = self._tree.get(rel)
        if data is None:
            raise self._missing(rel)
        return data

    def open_file(self, rel: str) -> BinaryIO:
        return io.BytesIO(self.read_file(rel))

    def list_dir(self, rel: str) -> list[FileInfo]:
        rel = check_relpath(rel)
        names = {
            p[len(rel) + 1 :].split("/", 1)[0] for p in list(self._tree) if p.startswith(rel + "/")
        }
        return [self.file_info(f"{rel}/{name}") for name in sorted(names)]

    def write_file(self, rel: str, data: bytes) -> None:
        self._put(check_relpath(rel), bytes(data))

    def delete_file(self, rel: str) -> None:
        rel = check_relpath(rel)
        if rel not in self._tree:
            raise self._missing(rel)
        self._history.delete(rel)
        self._mtimes.pop(rel, None)

    def stage_file(self) -> StagedFile:
        return _MemoryStagedFile(self)

    def discard_staging(self) -> int:
        return 0  # memory takes are never half-written

    def _missing(self, rel: str) -> ProjectFileNotFoundError:
        return ProjectFileNotFoundError(
            f"project '{self.id}' has no file {rel!r}", path=rel, project_id=self.id
        )
