"""Reading a take of another run into a graph (the ``load_take`` template), the pure part:
which take a shot's ``active`` names now, which of its outputs, that file and its content hash.
``nodes.take_io`` reads the file; the hash goes into the node's cache key (``state_key``), so a
run after the active take moved never reuses a result made from the old one."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from graph_runtime.assembly import NoActiveTakeError, UnknownShotError, media_output
from graph_runtime.canvas import SHOT_PATTERN
from graph_runtime.errors import TakeflowError
from graph_runtime.projects import ProjectStore
from graph_runtime.takes import TAKE_ID_RE, Take

ACTIVE = "active"
TAKE_PATTERN = rf"{ACTIVE}|{TAKE_ID_RE.pattern.removeprefix('^').removesuffix('$')}"
SHOT_INPUT_PATTERN = SHOT_PATTERN.pattern.removeprefix("^").removesuffix("$")


class TakeSourceError(TakeflowError):
    """A ``load_take`` that names no readable take; ``field`` is the input to fix."""

    code = "invalid_take_source"
    http_status = 422


class UnknownTakeError(TakeSourceError):
    code = "unknown_take"


class UnknownTakeOutputError(TakeSourceError):
    code = "unknown_take_output"


@dataclass(frozen=True)
class TakeSource:
    """One output of one take: where its file is and what it holds (``sha256`` of the bytes)."""

    shot: str
    take_id: str
    output: str
    kind: str  # "video" or "image"
    path: str
    content_type: str
    sha256: str

    def provenance(self) -> dict[str, Any]:
        """What a take made from it records (``take.json`` ``source_take``)."""
        return {
            "shot": self.shot,
            "take_id": self.take_id,
            "output": self.output,
            "sha256": self.sha256,
            "file": self.path,
        }

    @property
    def state(self) -> str:
        return f"{self.shot}|{self.take_id}|{self.output}|{self.sha256}"


def _pick(project: ProjectStore, shot: str, take: str) -> Take:
    takes = project.takes.list(shot=shot)
    if not takes:
        raise UnknownShotError(
            f"input 'shot': project {project.id!r} has no takes of shot {shot!r}",
            field="shot",
            shot=shot,
        )
    if take == ACTIVE:
        found = next((t for t in takes if t.active), None)
        if found is None:
            raise NoActiveTakeError(
                f"input 'take': shot {shot!r} has no active take (choose one, or name a take)",
                field="take",
                shot=shot,
            )
        return found
    found = next((t for t in takes if t.take_id == take), None)
    if found is None:
        have = ", ".join(t.take_id for t in takes[-5:])
        raise UnknownTakeError(
            f"input 'take': shot {shot!r} has no {take!r} (it has {have})",
            field="take",
            shot=shot,
            take_id=take,
        )
    return found


def resolve_take(
    project: ProjectStore, shot: str, take: str = ACTIVE, output: str = ""
) -> TakeSource:
    """The take ``take`` (``active`` or ``take_003``) of ``shot`` and its output ``output``
    (``""``: its video, else its first image); an error naming the input otherwise."""
    found = _pick(project, shot, take)
    if output:
        stored = found.outputs.get(output)
        media = ("image/", "video/")
        if stored is None or not stored.content_type.startswith(media):
            usable = sorted(n for n, o in found.outputs.items() if o.content_type.startswith(media))
            raise UnknownTakeOutputError(
                f"input 'output': {found.take_id} of shot {shot!r} has no image or video "
                f"output {output!r} (it has {', '.join(usable) or 'none'})",
                field="output",
                shot=shot,
                take_id=found.take_id,
            )
        name = output
    else:
        picked = media_output(found)
        if picked is None:
            raise UnknownTakeOutputError(
                f"input 'output': {found.take_id} of shot {shot!r} has no image or video output",
                field="output",
                shot=shot,
                take_id=found.take_id,
            )
        name = picked[0]
    stored = found.outputs[name]
    kind = "video" if stored.content_type.startswith("video/") else "image"
    return TakeSource(
        shot, found.take_id, name, kind, stored.path, stored.content_type, stored.sha256
    )


def state_key(project: Any, literals: Mapping[str, Any]) -> str | None:
    """``FunctionTemplate.state_key`` of ``load_take``: the take and content it reads now
    (``None``, not cached, when that cannot be told before it runs)."""
    shot, take, output = (literals.get(n) for n in ("shot", "take", "output"))
    if not isinstance(shot, str) or not isinstance(take, str) or not isinstance(output, str):
        return None  # linked inputs: known only when the node runs
    try:
        return resolve_take(project, shot, take, output).state
    except TakeflowError:
        return None  # the node fails with the error when it runs


class ProjectTakes:
    """The ``takes`` service templates use to read another run's take of the task's project."""

    def __init__(self, project: ProjectStore) -> None:
        self._project = project

    def resolve(self, shot: str, take: str, output: str) -> TakeSource:
        return resolve_take(self._project, shot, take, output)

    def read(self, source: TakeSource) -> bytes:
        """The file's bytes, checked against the hash the take recorded."""
        data = self._project.read_file(source.path)
        digest = hashlib.sha256(data).hexdigest()
        if digest != source.sha256:
            raise TakeSourceError(
                f"input 'take': {source.path} changed since {source.take_id} was stored "
                f"(sha256 {digest[:12]}..., the take recorded {source.sha256[:12]}...)",
                field="take",
                shot=source.shot,
                take_id=source.take_id,
            )
        return data
