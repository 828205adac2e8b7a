"""Per-frame mapping on a real server: an uploaded video, a canvas saved through the API
(load_video -> video_to_frames -> blend -> frames_to_video), loaded back and run; the take's MP4
holds every frame transformed, and the stored events show element-wise progress."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import av
import pytest

from tests.e2e.test_server_video import _mp4
from tests.server.harness import ServerProcess, running_server

pytestmark = pytest.mark.e2e

FRAMES = 6
TOLERANCE = 16  # two H.264 generations of flat colours, per channel


def _lit(value: Any) -> dict[str, Any]:
    return {"kind": "literal", "value": value}


def _link(node: str, output: str) -> dict[str, Any]:
    return {"kind": "link", "node": node, "output": output}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    home = tmp_path_factory.mktemp("server-framemap") / "home"
    with running_server(home) as srv:
        srv.ok("POST", "/api/v1/projects", json={"project_id": "film"})
        yield srv


def test_a_saved_canvas_maps_an_image_template_over_every_frame(server: ServerProcess) -> None:
    upload = server.http.post(
        "/api/v1/projects/film/assets",
        files={"file": ("clip.mp4", _mp4(frames=FRAMES, fps=12), "video/mp4")},
    )
    assert upload.status_code == 201, upload.text
    canvas = {"name": "invert-clip", "nodes": [
        {"id": "load", "template": "load_video", "inputs": {"asset": _lit(upload.json()["uri"])}},
        {"id": "frames", "template": "video_to_frames",
         "inputs": {"video": _link("load", "video")}},
        {"id": "white", "template": "solid_image", "inputs": {
            "width": _lit(64), "height": _lit(48), "color": _lit("#ffffff")}},
        {"id": "inv", "template": "blend", "inputs": {
            "base": _link("frames", "images"), "overlay": _link("white", "image"),
            "mode": _lit("difference"), "opacity": _lit(1.0)}},
        {"id": "out", "template": "frames_to_video", "inputs": {
            "images": _link("inv", "image"), "fps": _lit(12.0)}},
    ]}  # fmt: skip
    server.ok("PUT", "/api/v1/projects/film/canvases/invert-clip", json=canvas)
    saved = server.ok("GET", "/api/v1/projects/film/canvases/invert-clip")
    run = server.ok(
        "POST",
        "/api/v1/runs",
        json={"graph": saved, "project_id": "film", "shot_id": "ch01/sc01/sh010"},
    )
    task_id = run["task_id"]
    deadline = time.monotonic() + 60
    while (record := server.ok("GET", f"/api/v1/runs/{task_id}"))["status"] not in (
        "completed",
        "failed",
        "cancelled",
    ):
        assert time.monotonic() < deadline, record
        time.sleep(0.1)
    assert record["status"] == "completed", record

    [take] = server.ok("GET", "/api/v1/projects/film/takes", params={"task_id": task_id})
    assert set(take["outputs"]) == {"video", "video_poster"}
    data = server.http.get(take["outputs"]["video"]["url"]).content
    path = server.home.parent / "mapped.mp4"
    path.write_bytes(data)
    with av.open(str(path)) as container:
        frames = [f.to_image().convert("RGB") for f in container.decode(video=0)]
    assert len(frames) == FRAMES
    for i, frame in enumerate(frames):  # the source frame i is (20 i, 80, 200): inverted
        expected = (255 - 20 * i, 255 - 80, 255 - 200)
        got = frame.getpixel((32, 24))
        assert all(abs(a - b) <= TOLERANCE for a, b in zip(got, expected, strict=True)), (i, got)

    events = server.stored_events(task_id)
    progress = [e["data"] for e in events if e["type"] == "task.progress"]
    mapped = [p for p in progress if p["node_id"] == "inv"]
    assert [(p["element"], p["elements"]) for p in mapped] == [(i, FRAMES) for i in range(FRAMES)]
    assert mapped[-1]["node_progress"] == 1.0
