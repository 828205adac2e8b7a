"""A project's files as Litestar's read-only ``FileSystemProtocol``, so a ``File`` response
streams a stored file (with its size, modified time and ranges) through the ``ProjectStore``
verbs instead of a raw filesystem."""

from __future__ import annotations

from typing import IO, Any

from graph_runtime.errors import ProjectFileNotFoundError
from graph_runtime.projects import ProjectStore


class ProjectFiles:
    """``info`` and ``open`` over one project's files; paths are project-relative."""

    def __init__(self, project: ProjectStore) -> None:
        self._project = project

    def info(self, path: Any, **kwargs: Any) -> dict[str, Any]:
        try:
            found = self._project.file_info(str(path))
        except ProjectFileNotFoundError as exc:
            raise FileNotFoundError(exc.message) from None
        return {
            "name": found.path,
            "type": found.kind,
            "size": found.size,
            "mtime": found.mtime,
            "islink": False,
        }

    def open(self, file: Any, mode: str = "rb", buffering: int = -1) -> IO[bytes]:
        if mode != "rb":
            raise PermissionError(f"project files are served read-only, not with mode {mode!r}")
        return self._project.open_file(str(file))
