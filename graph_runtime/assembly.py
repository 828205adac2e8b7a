"""Scene assembly, the pure part: which shots a scene (or a chapter, or a list) holds, the
active take of each and its media file, and the cut's timeline (when each shot starts, how many
frames it gets). ``nodes.assembly`` renders the plan as a task; the server and the CLI submit it.

A cut is a take of the shot ``<chapter>/<scene>/_cut`` (a chapter's: ``<chapter>/_cut/_cut``),
numbered and committed like any take, with ``video.mp4``, ``video_poster.png`` and
``manifest.json`` (each shot's take id, source file and its sha256)."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from fractions import Fraction
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from graph_runtime.canvas import CanvasGraph, LiteralInput
from graph_runtime.errors import TakeflowError
from graph_runtime.projects import ProjectStore
from graph_runtime.takes import Take

CUT = "_cut"
TEMPLATE_ID = "assemble_scene"
RENDERS = "03_Renders"
DEFAULT_SIZE = (512, 512)
DEFAULT_FPS = Fraction(24)
MAX_SHOTS = 500
MAX_CUT_FRAMES = 100_000  # nodes.video.MAX_FRAMES: what one encoded video may hold
_SEGMENT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


class AssemblyError(TakeflowError):
    """An assembly request that cannot be planned; ``field`` names what to fix."""

    code = "invalid_assembly"
    http_status = 422


class UnknownSceneError(AssemblyError):
    code = "unknown_scene"


class UnknownChapterError(AssemblyError):
    code = "unknown_chapter"


class UnknownShotError(AssemblyError):
    code = "unknown_shot"


class NoActiveTakeError(AssemblyError):
    code = "no_active_take"


class NoMediaError(AssemblyError):
    """The shot's active take has no image or video output to cut."""

    code = "no_media"


class NothingToAssembleError(AssemblyError):
    code = "nothing_to_assemble"


class CutTooLongError(AssemblyError):
    code = "cut_too_long"


class CutShotReservedError(TakeflowError):
    """A task that is not the assembler's targets a ``_cut`` shot."""

    code = "cut_shot_reserved"
    http_status = 422


def is_cut_shot(shot: str) -> bool:
    """``ch/sc/_cut`` or ``ch/_cut/_cut``: where cuts live."""
    return shot.rsplit("/", 1)[-1] == CUT


def check_cut_target(shot: str, graph: CanvasGraph) -> None:
    """Only the assembler writes takes into a ``_cut`` shot: a graph of one ``assemble_scene``
    node whose plan (when given as a value) is for that shot. Anything else targeting a cut
    shot raises ``CutShotReservedError`` naming ``shot_id``."""
    if not is_cut_shot(shot):
        return
    nodes = graph.nodes
    if len(nodes) == 1 and nodes[0].template == TEMPLATE_ID:
        value = nodes[0].inputs.get("plan")
        plan = value.value if isinstance(value, LiteralInput) else None
        planned = plan.get("shot") if isinstance(plan, Mapping) else None
        if planned is None or planned == shot:
            return
        raise CutShotReservedError(
            f"shot_id {shot!r} is a cut shot, but the plan is for {planned!r}",
            field="shot_id",
            shot_id=shot,
        )
    raise CutShotReservedError(
        f"shot_id {shot!r} is where the scene's cuts live: only an assembly writes there "
        "(POST .../assemblies or takeflow assemble); render into one of the scene's shots",
        field="shot_id",
        shot_id=shot,
    )


Side = Annotated[int, Field(ge=2, le=4096, multiple_of=2)]


class AssemblyRequest(BaseModel):
    """``POST /api/v1/projects/{id}/assemblies``: exactly one of ``scene``, ``chapter``,
    ``shots``; the still duration and the cut's size and frame rate (defaults: the first video
    shot's, else 512x512 at 24)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scene: Annotated[str, Field(max_length=130)] | None = None
    chapter: Annotated[str, Field(max_length=64)] | None = None
    shots: Annotated[list[str], Field(max_length=MAX_SHOTS)] | None = None
    still_duration: Annotated[float, Field(gt=0, le=600)] = 2.0
    width: Side | None = None
    height: Side | None = None
    fps: Annotated[float, Field(gt=0, le=240)] | None = None

    @model_validator(mode="after")
    def _one_scope(self) -> AssemblyRequest:
        given = [n for n in ("scene", "chapter", "shots") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of 'scene', 'chapter' or 'shots'")
        if (self.width is None) != (self.height is None):
            raise ValueError("give both 'width' and 'height', or neither")
        return self


def cut_shot(scope: str) -> str:
    """Where the cuts of a scene (``ch01/sc01``) or a chapter (``ch01``) are stored."""
    parts = scope.split("/")
    return f"{scope}/{CUT}" if len(parts) == 2 else f"{scope}/{CUT}/{CUT}"


def _segments(value: str, count: int, field: str, error: type[AssemblyError]) -> list[str]:
    parts = value.split("/")
    if len(parts) != count or not all(_SEGMENT_RE.fullmatch(p) for p in parts):
        shape = {1: "'ch01'", 2: "'ch01/sc01'", 3: "'ch01/sc01/sh010'"}[count]
        raise error(f"{field} {value!r} must look like {shape}", field=field)
    return parts


def _folders(project: ProjectStore, rel: str) -> list[str]:
    """Sub-folders of ``rel`` that are chapters, scenes or shots (not ``_cut``), by name."""
    return sorted(
        info.name
        for info in project.list_dir(rel)
        if info.kind == "directory" and _SEGMENT_RE.fullmatch(info.name)
    )


def scene_shots(project: ProjectStore, scene: str, field: str = "scene") -> list[str]:
    """The shots of a scene that have takes, in shot order (by name: sh010, sh020, ...)."""
    _segments(scene, 2, field, UnknownSceneError)
    shots = [
        f"{scene}/{name}"
        for name in _folders(project, f"{RENDERS}/{scene}")
        if project.list_dir(f"{RENDERS}/{scene}/{name}/takes")
    ]
    if not shots:
        raise UnknownSceneError(
            f"project {project.id!r} has no scene {scene!r} with takes", field=field, scene=scene
        )
    return shots


def chapter_shots(project: ProjectStore, chapter: str) -> list[str]:
    _segments(chapter, 1, "chapter", UnknownChapterError)
    shots: list[str] = []
    for scene in _folders(project, f"{RENDERS}/{chapter}"):
        try:
            shots += scene_shots(project, f"{chapter}/{scene}")
        except UnknownSceneError:
            continue
    if not shots:
        raise UnknownChapterError(
            f"project {project.id!r} has no chapter {chapter!r} with takes",
            field="chapter",
            chapter=chapter,
        )
    return shots


def media_output(take: Take) -> tuple[str, str] | None:
    """The take output a cut shows: its video, else its first image; (name, kind)."""
    names = sorted(take.outputs)
    for name in names:
        if take.outputs[name].content_type.startswith("video/"):
            return name, "video"
    for name in names:
        if take.outputs[name].content_type.startswith("image/"):
            return name, "still"
    return None


def _resolve_shot(project: ProjectStore, shot: str, field: str) -> dict[str, Any]:
    takes = project.takes.list(shot=shot)
    if not takes:
        raise UnknownShotError(f"shot {shot!r} has no takes", field=field, shot=shot)
    active = next((t for t in takes if t.active), None)
    if active is None:
        raise NoActiveTakeError(
            f"shot {shot!r} has no active take (choose one: PUT .../takes/active)",
            field=field,
            shot=shot,
        )
    found = media_output(active)
    if found is None:
        raise NoMediaError(
            f"the active take {active.take_id} of shot {shot!r} has no image or video output",
            field=field,
            shot=shot,
            take_id=active.take_id,
        )
    name, kind = found
    stored = active.outputs[name]
    entry: dict[str, Any] = {
        "shot": shot,
        "take_id": active.take_id,
        "kind": kind,
        "output": name,
        "file": stored.path,
        "sha256": stored.sha256,
    }
    facts = (active.metadata.get("media") or {}).get(name)
    if kind == "video" and isinstance(facts, Mapping):
        entry["source"] = {
            "fps_rational": facts.get("fps_rational"),
            "frame_count": facts.get("frame_count"),
            "width": facts.get("width"),
            "height": facts.get("height"),
        }
    return entry


def _scope(project: ProjectStore, req: AssemblyRequest) -> tuple[str, list[tuple[str, str]]]:
    """The cut's scope (a scene or a chapter) and its (shot, field) list."""
    if req.scene is not None:
        return req.scene, [(s, "scene") for s in scene_shots(project, req.scene)]
    if req.chapter is not None:
        return req.chapter, [(s, "chapter") for s in chapter_shots(project, req.chapter)]
    assert req.shots is not None
    if not req.shots:
        raise NothingToAssembleError("'shots' is empty: nothing to assemble", field="shots")
    listed = []
    for i, shot in enumerate(req.shots):
        _segments(shot, 3, f"shots[{i}]", UnknownShotError)
        listed.append((shot, f"shots[{i}]"))
    scenes = {s.rsplit("/", 1)[0] for s, _ in listed}
    chapters = {s.split("/", 1)[0] for s, _ in listed}
    if len(chapters) > 1:
        raise AssemblyError(
            f"the shots span several chapters ({', '.join(sorted(chapters))}); a cut belongs "
            "to one scene or one chapter",
            field="shots",
        )
    return (scenes.pop() if len(scenes) == 1 else chapters.pop()), listed


def plan_assembly(project: ProjectStore, req: AssemblyRequest) -> dict[str, Any]:
    """The ``assemble_scene`` task's input: scope, cut shot, size, fps and each shot's active
    take and file; raises an ``AssemblyError`` naming the field (and shot) before anything
    is queued."""
    scope, shots = _scope(project, req)
    if not shots:
        raise NothingToAssembleError("there are no shots to assemble", field="shots")
    entries = [_resolve_shot(project, shot, field) for shot, field in shots]
    first_video = next((e.get("source") for e in entries if e.get("source")), None)
    if req.width is not None and req.height is not None:
        size = (req.width, req.height)
    elif first_video and first_video.get("width") and first_video.get("height"):
        size = (int(first_video["width"]) // 2 * 2, int(first_video["height"]) // 2 * 2)
    else:
        size = DEFAULT_SIZE
    if req.fps is not None:
        fps = Fraction(req.fps).limit_denominator(1001)
    elif first_video and first_video.get("fps_rational"):
        fps = Fraction(str(first_video["fps_rational"]))
    else:
        fps = DEFAULT_FPS
    plan = {
        "scene": scope,
        "shot": cut_shot(scope),
        "width": size[0],
        "height": size[1],
        "fps_rational": f"{fps.numerator}/{fps.denominator}",
        "still_duration": req.still_duration,
        "shots": entries,
    }
    frames = sum(c or 0 for c in planned_counts(plan))
    if frames > MAX_CUT_FRAMES:
        raise CutTooLongError(
            f"the cut would hold {frames} frames, more than {MAX_CUT_FRAMES} (a shorter "
            "still_duration, a lower fps, or fewer shots)",
            field="still_duration" if req.still_duration > 60 else "shots",
            frame_count=frames,
        )
    return plan


def still_frames(still_duration: float, fps: Fraction) -> int:
    return max(1, round(still_duration * fps))


def video_frames(source_count: int, source_fps: Fraction, fps: Fraction) -> int:
    """Frames a source clip gets at the cut's rate (same duration; as ``set_fps`` resample)."""
    return max(1, math.floor(source_count * fps / source_fps))


def layout(plan: Mapping[str, Any], counts: Sequence[int | None]) -> dict[str, Any]:
    """The manifest of a plan: each shot's start and length in frames and seconds, given the
    frames each shot gets (None: not known yet, e.g. a video without recorded facts)."""
    fps = Fraction(str(plan["fps_rational"]))
    frame = 0
    shots = []
    for entry, count in zip(plan["shots"], counts, strict=True):
        shot = {k: v for k, v in entry.items() if k != "source"}
        shot["start_frame"] = frame
        shot["start"] = round(float(frame / fps), 6)
        shot["frame_count"] = count
        shot["duration"] = None if count is None else round(float(count / fps), 6)
        shots.append(shot)
        frame += count or 0
    return {
        "scene": plan["scene"],
        "shot": plan["shot"],
        "width": plan["width"],
        "height": plan["height"],
        "fps": float(fps),
        "fps_rational": plan["fps_rational"],
        "still_duration": plan["still_duration"],
        "frame_count": frame,
        "duration": round(float(frame / fps), 6),
        "shots": shots,
    }


def planned_counts(plan: Mapping[str, Any]) -> list[int | None]:
    """Frames per shot from the plan alone (takes' recorded facts)."""
    fps = Fraction(str(plan["fps_rational"]))
    counts: list[int | None] = []
    for entry in plan["shots"]:
        source = entry.get("source") or {}
        if entry["kind"] == "still":
            counts.append(still_frames(float(plan["still_duration"]), fps))
        elif source.get("frame_count") and source.get("fps_rational"):
            rate = Fraction(str(source["fps_rational"]))
            counts.append(video_frames(int(source["frame_count"]), rate, fps))
        else:
            counts.append(None)
    return counts
