"""Test-only server plugin: storage faults injected through an fsspec wrapper.

Load it with ``--plugin tests.server.faults`` (it is never loaded otherwise, and does not ship in
the package). A test switches faults from outside the server process by writing
``<home>/faults.json``: ``{"storage": {"errno": "ENOSPC", "count": 1}}`` makes the next write
(``count`` writes; ``null``: every write until the file is removed) fail like a full disk
(``EACCES``: permission denied).
"""

from __future__ import annotations

import errno
import json
import os
import threading
from pathlib import Path
from typing import Any

from fsspec.implementations.local import LocalFileSystem

FAULTS_FILE = "faults.json"


class FaultyFileSystem(LocalFileSystem):  # type: ignore[misc]
    """The local filesystem, with writes failing while ``<home>/faults.json`` says so."""

    cachable = False

    def __init__(self, control: Path, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.control = control
        self._lock = threading.Lock()
        self.injected = 0

    def _check_write(self, path: str) -> None:
        with self._lock:
            try:
                faults = json.loads(self.control.read_text())
            except (OSError, ValueError):
                return
            storage = faults.get("storage")
            if not storage:
                return
            count = storage.get("count")
            if count is not None:
                if count <= 0:
                    return
                storage["count"] = count - 1
                self.control.write_text(json.dumps(faults))
            self.injected += 1
        code = getattr(errno, storage.get("errno", "ENOSPC"))
        raise OSError(code, f"{os.strerror(code)} (injected by {__name__})", path)

    def pipe_file(self, path: str, value: bytes, **kwargs: Any) -> None:
        self._check_write(path)
        super().pipe_file(path, value, **kwargs)

    def _open(self, path: str, mode: str = "rb", *args: Any, **kwargs: Any) -> Any:
        if any(m in mode for m in "wax+"):
            self._check_write(path)
        return super()._open(path, mode, *args, **kwargs)


def set_storage_fault(home: Path, errno_name: str = "ENOSPC", count: int | None = None) -> None:
    (home / FAULTS_FILE).write_text(json.dumps({"storage": {"errno": errno_name, "count": count}}))


def clear_faults(home: Path) -> None:
    (home / FAULTS_FILE).unlink(missing_ok=True)


def install(runtime: Any) -> None:
    """Keep every project's files (those open now and those opened later) on a
    ``FaultyFileSystem``, through the project catalog."""
    runtime.projects.use_filesystem(FaultyFileSystem(runtime.home.path / FAULTS_FILE))
