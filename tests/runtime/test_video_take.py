"""A video made from frames on the canvas becomes a take: video.mp4 (decoded back), a poster PNG,
its facts in take.json, the MP4 committed as an LFS pointer; the last frame feeds an image node."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
from PIL import Image, ImageChops

from graph_runtime.canvas import CanvasGraph
from graph_runtime.tasks import TaskStatus
from tests.runtime.test_runner import run

SHOT = "ch01/sc02/sh020"


def _lit(value: Any) -> dict[str, Any]:
    return {"kind": "literal", "value": value}


def _link(node: str, output: str) -> dict[str, Any]:
    return {"kind": "link", "node": node, "output": output}


def _graph(*extra: dict[str, Any]) -> CanvasGraph:
    size = {"width": _lit(64), "height": _lit(48)}
    red, blue = {**size, "color": _lit("#ff0000")}, {**size, "color": _lit("#0000ff")}
    return CanvasGraph.model_validate(
        {
            "name": "fade",
            "nodes": [
                {"id": "red", "template": "solid_image", "inputs": red},
                {"id": "blue", "template": "solid_image", "inputs": blue},
                {"id": "clip", "template": "frames_to_video", "inputs": {
                    "images": _link("red", "image"), "end_image": _link("blue", "image"),
                    "frame_count": _lit(12), "fps": _lit(12.0)}},
                *extra,
            ],
        }
    )  # fmt: skip


def test_video_from_frames_is_a_take_with_mp4_poster_facts_and_lfs_pointer(
    runtime: Any, project: Any
) -> None:
    record, _ = run(runtime, _graph(), project_id="demo", shot=SHOT)
    assert record.status == TaskStatus.COMPLETED, record.error
    take = project.takes.list(SHOT)[0]
    assert set(take.outputs) == {"video", "video_poster"}
    mp4 = take.outputs["video"]
    assert mp4.path.endswith("take_001/video.mp4") and mp4.content_type == "video/mp4"
    with av.open(str(project.abs(mp4.path))) as container:
        stream = container.streams.video[0]
        frames = [f.to_image() for f in container.decode(stream)]
        assert (len(frames), Fraction(stream.average_rate)) == (12, Fraction(12))
        assert (stream.width, stream.height, stream.codec_context.name) == (64, 48, "h264")
    poster = Image.open(project.abs(take.outputs["video_poster"].path))
    assert poster.size == (64, 48) and poster.convert("RGB").getpixel((8, 8))[0] > 240

    stored = json.loads(Path(project.abs(f"{take.directory}/take.json")).read_text())
    facts = stored["media"]["video"]
    assert (facts["fps"], facts["frame_count"], facts["codec"]) == (12.0, 12, "h264")
    assert facts["duration"] == 1.0 and (facts["width"], facts["height"]) == (64, 48)
    assert project.repo.is_lfs_pointer(mp4.path)
    assert project.repo.is_lfs_pointer(take.outputs["video_poster"].path)


def test_last_frame_of_a_take_feeds_an_image_node(runtime: Any, project: Any) -> None:
    graph = _graph(
        {"id": "last", "template": "extract_frame",
         "inputs": {"video": _link("clip", "video"), "mode": _lit("last")}},
        {"id": "still", "template": "resize",
         "inputs": {"image": _link("last", "image"), "width": _lit(64), "height": _lit(48),
                    "resample": _lit("nearest")}},
    )  # fmt: skip
    record, _ = run(runtime, graph, project_id="demo", shot=SHOT)
    assert record.status == TaskStatus.COMPLETED, record.error
    take = project.takes.list(SHOT)[0]
    still = Image.open(project.abs(take.outputs["image"].path)).convert("RGB")
    blue = Image.new("RGB", (64, 48), "#0000ff")
    extrema = ImageChops.difference(still, blue).getextrema()
    assert max(hi for _, hi in extrema) <= 8  # type: ignore[union-attr]
