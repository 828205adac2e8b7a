"""A project's history: commits of paths of its folder, newest first, and recovery after a crash.

``ProjectHistory`` is what the runtime needs from version control (``stores.git_repo`` is the
git implementation); ``MemoryProjectHistory`` is its in-memory twin, with its own working tree,
for unit tests of the core. Both share one contract (``tests/stores/test_history.py``).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from graph_runtime.errors import GitError

RENDERS_DIR = "03_Renders"
RECOVERY_TRAILER = "Takeflow-Recovery: yes"


@dataclass(frozen=True)
class CommitInfo:
    sha: str
    message: str
    time: float
    files: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"sha": self.sha, "message": self.message, "time": self.time, "files": self.files}


class ProjectHistory(Protocol):
    def commit(self, paths: Sequence[str], message: str) -> str:
        """Commit the current content of ``paths`` (files or folders, relative to the project)
        and return the commit's sha; with nothing changed, the sha of the latest commit.
        Callers arriving together may share one commit (its message holds each message).
        A path that names no file is a ``GitError``."""
        ...

    def recent_commits(self, limit: int = 20) -> list[CommitInfo]:
        """The newest ``limit`` commits, newest first, with the files each changed."""
        ...

    def recover(self) -> str | None:
        """Commit takes under ``03_Renders`` stored but never committed (after a crash); the
        new commit's sha, or ``None`` when there was nothing to commit."""
        ...


def _under(path: str, prefixes: Sequence[str]) -> bool:
    return any(
        p in (".", "") or path == p or path.startswith(p.rstrip("/") + "/") for p in prefixes
    )


class MemoryProjectHistory:
    """In-memory twin of a project's history, over an in-memory working tree (``write``)."""

    def __init__(self) -> None:
        self.tree: dict[str, bytes] = {}
        self._committed: dict[str, bytes] = {}
        self._commits: list[CommitInfo] = []
        self._lock = threading.Lock()

    def write(self, path: str, data: bytes) -> None:
        """Change a file of the working tree (what a take or a saved canvas does on disk)."""
        with self._lock:
            self.tree[path] = data

    def delete(self, path: str) -> None:
        """Remove a file of the working tree (a deleted or renamed canvas)."""
        with self._lock:
            self.tree.pop(path, None)

    def commit(self, paths: Sequence[str], message: str) -> str:
        with self._lock:
            known = set(self.tree) | set(self._committed)
            for path in paths:
                if not any(_under(k, [path]) for k in known):
                    raise GitError(f"git add failed: pathspec {path!r} did not match any files")
            changed = sorted(
                p
                for p in set(self.tree) | set(self._committed)
                if _under(p, paths) and self.tree.get(p) != self._committed.get(p)
            )
            if not changed:
                if not self._commits:
                    raise ValueError("nothing to commit in an empty history")
                return self._commits[-1].sha
            for p in changed:
                if p in self.tree:
                    self._committed[p] = self.tree[p]
                else:
                    del self._committed[p]
            parent = self._commits[-1].sha if self._commits else ""
            sha = hashlib.sha1(f"{parent}\n{message}\n{changed}".encode()).hexdigest()
            self._commits.append(CommitInfo(sha, message.strip(), time.time(), changed))
            return sha

    def recent_commits(self, limit: int = 20) -> list[CommitInfo]:
        with self._lock:
            return list(reversed(self._commits[-limit:])) if limit > 0 else []

    def recover(self) -> str | None:
        with self._lock:
            pending = any(
                _under(p, [RENDERS_DIR]) and self.tree.get(p) != self._committed.get(p)
                for p in set(self.tree) | set(self._committed)
            )
        if not pending:
            return None
        return self.commit(
            [RENDERS_DIR], f"Recover takes stored before an interruption\n\n{RECOVERY_TRAILER}\n"
        )
