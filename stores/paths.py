"""Project paths checked against what they resolve to on disk, so a symlink inside a project
(cloned, pulled or placed there) cannot lead a verb out of the project or into ``.git``."""

from __future__ import annotations

import os

from graph_runtime.errors import UnsafePathError


def resolved_inside(root: str | os.PathLike[str], rel: str) -> str:
    """``root/rel`` resolved (every symlink followed); ``UnsafePathError`` when that leaves
    ``root`` or reaches into a ``.git`` folder. A symlink that stays inside is fine."""
    base = os.path.realpath(root)
    target = os.path.realpath(os.path.join(base, rel))
    inner = os.path.relpath(target, base)
    parts = inner.split(os.sep)
    if parts[0] == ".." or ".git" in parts:
        where = "into .git" if parts[0] != ".." else "out of it"
        raise UnsafePathError(
            f"path {rel!r} is not a file inside the project (a symlink leads {where})",
            field="path",
        )
    return target
