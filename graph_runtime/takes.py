"""Takes: numbered, immutable versions of a shot's result, and the project folder layout."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from graph_runtime.canvas import validate_shot
from graph_runtime.errors import UnsafePathError

PROJECT_DIRS = (
    "01_Assets",
    "02_Source_Creative",
    "03_Renders",
    "04_Project_Files",
    "05_Cache",
    "06_Exports",
)
GIT_IGNORED_DIRS = ("05_Cache", "06_Exports")
PROJECT_FILE = "project.json"
TAKE_METADATA_FILE = "take.json"
ACTIVE_TAKE_FILE = "active.json"
PROJECT_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
TAKE_ID_RE = re.compile(r"^take_(\d{3,})$")


def check_project_id(project_id: str) -> str:
    if not PROJECT_ID_RE.fullmatch(project_id):
        raise UnsafePathError(
            f"project id {project_id!r} must be lower-case letters, digits, '-' or '_' "
            "(at most 64, starting with a letter or digit)",
            field="project_id",
        )
    return project_id


def project_id_from_name(name: str, taken: Callable[[str], bool] = lambda _: False) -> str:
    """A safe project id for a display name: ``"My Film"`` -> ``my-film``, or ``my-film-2``
    (``-3`` ...) while ``taken(candidate)`` says the id is in use. Accents are folded to ASCII;
    a name with no letter or digit gives ``project``."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9_]+", "-", ascii_name.lower()).strip("-_") or "project"
    candidate, n = slug[:64], 1
    while taken(candidate):
        n += 1
        suffix = f"-{n}"
        candidate = slug[: 64 - len(suffix)].rstrip("-_") + suffix
    return check_project_id(candidate)


def check_shot(shot: str) -> str:
    try:
        return validate_shot(shot)
    except ValueError as exc:
        raise UnsafePathError(str(exc), field="shot_id") from None


def shot_takes_dir(shot: str) -> str:
    """Project-relative folder that holds a shot's takes."""
    return f"03_Renders/{check_shot(shot)}/takes"


def take_id(number: int) -> str:
    return f"take_{number:03d}"


def take_number(take_id_: str) -> int:
    match = TAKE_ID_RE.fullmatch(take_id_)
    if not match:
        raise UnsafePathError(f"take id {take_id_!r} must look like 'take_001'", field="take_id")
    return int(match.group(1))


@dataclass(frozen=True)
class OutputFile:
    """One output to store in a take: bytes plus how to name and serve them."""

    name: str
    data: bytes
    extension: str
    content_type: str


@dataclass(frozen=True)
class StoredOutput:
    path: str
    size: int
    content_type: str
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "size": self.size,
            "content_type": self.content_type,
            "sha256": self.sha256,
        }


@dataclass(frozen=True)
class Take:
    take_id: str
    number: int
    project_id: str
    shot: str
    outputs: Mapping[str, StoredOutput]
    metadata: Mapping[str, Any] = field(default_factory=dict)
    active: bool = False

    @property
    def directory(self) -> str:
        return f"{shot_takes_dir(self.shot)}/{self.take_id}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "take_id": self.take_id,
            "number": self.number,
            "project_id": self.project_id,
            "shot_id": self.shot,
            "path": self.directory,
            "active": self.active,
            "outputs": {k: v.to_dict() for k, v in self.outputs.items()},
            "metadata": dict(self.metadata),
        }


class TakeStore(Protocol):
    """Stores takes of one project. Numbering has no gaps or duplicates; writes are atomic."""

    project_id: str

    def create(
        self, shot: str, files: Sequence[OutputFile], metadata: Mapping[str, Any]
    ) -> Take: ...

    def list(self, shot: str | None = None, task_id: str | None = None) -> list[Take]: ...

    def get(self, shot: str, take_id: str) -> Take: ...

    def set_active(self, shot: str, take_id: str) -> Take: ...
