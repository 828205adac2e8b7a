"""``load_take``: a take of another run (a shot's active take, or a numbered one) read into a
graph, so shot continuity is a link on the canvas: ``load_take`` (the previous shot) ->
``extract_frame`` (last) -> ``image_to_video``. The take it read is recorded in the new take's
``take.json`` (``source_take``) and its content hash is in the node's cache key."""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

from PIL import Image

from graph_runtime.take_sources import (
    ACTIVE,
    SHOT_INPUT_PATTERN,
    TAKE_PATTERN,
    ProjectTakes,
    state_key,
)
from graph_runtime.templates import (
    FunctionTemplate,
    InputSpec,
    OutputSpec,
    PortType,
    ProgressReporter,
)
from nodes.video import check_decodes, new_video_path, probe

T = PortType
_SUFFIX = {"video/mp4": ".mp4", "video/webm": ".webm", "video/quicktime": ".mov"}


def load_take(ctx: ProgressReporter, inputs: Mapping[str, Any]) -> dict[str, Any]:
    takes = ctx.services.get("takes")
    if not isinstance(takes, ProjectTakes):
        raise RuntimeError("no project is set for this run: load_take reads a project's takes")
    source = takes.resolve(
        str(inputs["shot"]), str(inputs["take"] or ACTIVE), inputs["output"] or ""
    )
    data = takes.read(source)
    ctx.record_metadata(source_take=source.provenance())
    label = f"{source.shot} {source.take_id} {source.output}"
    if source.kind == "image":
        with Image.open(io.BytesIO(data)) as image:
            picture = image.convert("RGB")
        return {"video": None, "image": picture, "take_id": source.take_id}
    path = new_video_path().with_suffix(_SUFFIX.get(source.content_type, ".mp4"))
    path.write_bytes(data)
    video = probe(path, label)
    check_decodes(video, label)
    first = next(iter(video.frames(0, 1)))  # the poster: the clip's first frame
    return {"video": video, "image": first, "take_id": source.take_id}


TEMPLATES: tuple[FunctionTemplate, ...] = (
    FunctionTemplate(
        id="load_take",
        version="1.0.0",
        name="Load take",
        category="video",
        description="A take of a shot (its active take, or a numbered one) read into the graph: "
        "its video, and an image (the take's image, or the video's first frame). Link "
        "extract_frame (last) to image_to_video to continue the previous shot.",
        inputs=(
            InputSpec("shot", T.TEXT, "a shot: chapter/scene/shot, e.g. ch01/sc01/sh010",
                      required=True, pattern=SHOT_INPUT_PATTERN),
            InputSpec("take", T.TEXT, "'active' (the shot's active take when the run starts) "
                      "or a take id such as take_003", default=ACTIVE, pattern=TAKE_PATTERN),
            InputSpec("output", T.TEXT, "which output of the take; empty: its video, else its "
                      "first image", default=""),
        ),
        outputs=(
            OutputSpec("video", T.VIDEO, "the take's video (none when the output is an image)"),
            OutputSpec("image", T.IMAGE, "the take's image, or the video's first frame"),
            OutputSpec("take_id", T.TEXT, "the take read (active resolved), e.g. take_002"),
        ),
        fn=load_take,
        state_key=state_key,
    ),
)  # fmt: skip
