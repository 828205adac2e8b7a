"""Scene assembly on a real server: a still, a generated video (frames_to_video through a task)
and an uploaded video of another size and frame rate (load_video through a task) cut into one
MP4 (decoded: frame count, size, the letterbox's padding, each shot's colour), committed with its
manifest (LFS pointer for the video); a changed active take gives take_002 of the cut; progress
arrives over the WebSocket; bad requests are refused with stable codes and nothing stored."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import pytest
from PIL import Image

from tests.e2e.test_server_bad_input import snapshot
from tests.server.harness import EventClient, ServerProcess, running_server

pytestmark = pytest.mark.e2e

SCENE = "ch01/sc01"
STILL, GENERATED, UPLOADED = (f"{SCENE}/sh010", f"{SCENE}/sh020", f"{SCENE}/sh030")
RED, GREEN, BLUE, YELLOW = (220, 30, 30), (30, 200, 40), (40, 60, 220), (230, 220, 20)


def _uploaded_mp4() -> bytes:
    """6 blue frames, 32x48 at 12 fps (0.5 s): another size and rate than the cut's."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=12)
        stream.width, stream.height, stream.pix_fmt = 32, 48, "yuv420p"
        for _ in range(6):
            frame = av.VideoFrame.from_image(Image.new("RGB", (32, 48), BLUE))
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return buf.getvalue()


def _finished(server: ServerProcess, task_id: str, timeout: float = 120.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status = server.ok("GET", f"/api/v1/functions/tasks/{task_id}")
        if status["status"] in ("completed", "failed", "cancelled"):
            assert status["status"] == "completed", status
            return status  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, status
        time.sleep(0.1)


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def _still(server: ServerProcess, shot: str, colour: tuple[int, int, int]) -> None:
    """A wide still (64x24): letterboxed in the 64x48 cut (black bars above and below)."""
    task = server.submit(
        "solid_image",
        {"width": 64, "height": 24, "color": _hex(colour)},
        project_id="film",
        shot_id=shot,
    )
    _finished(server, task)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    home = tmp_path_factory.mktemp("server-assembly") / "home"
    with running_server(home) as srv:
        srv.ok("POST", "/api/v1/projects", json={"project_id": "film"})
        _still(srv, STILL, RED)
        graph = {
            "name": "green-clip",
            "nodes": [
                {"id": "plate", "template": "solid_image",
                 "inputs": {"width": {"kind": "literal", "value": 64},
                            "height": {"kind": "literal", "value": 48},
                            "color": {"kind": "literal", "value": _hex(GREEN)}}},
                {"id": "clip", "template": "frames_to_video",
                 "inputs": {"images": {"kind": "link", "node": "plate", "output": "image"},
                            "frame_count": {"kind": "literal", "value": 12},
                            "fps": {"kind": "literal", "value": 24.0}}},
            ],
        }  # fmt: skip
        body = {"graph": graph, "project_id": "film", "shot_id": GENERATED}
        run = srv.ok("POST", "/api/v1/runs", json=body)
        _finished(srv, run["task_id"])
        upload = srv.http.post(
            "/api/v1/projects/film/assets",
            files={"file": ("blue.mp4", _uploaded_mp4(), "video/mp4")},
        )
        assert upload.status_code == 201, upload.text
        assert upload.json()["video"]["fps"] == 12.0
        loaded = srv.submit(
            "load_video", {"asset": upload.json()["uri"]}, project_id="film", shot_id=UPLOADED
        )
        _finished(srv, loaded)
        yield srv


def _assemble(server: ServerProcess, body: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """POST an assembly while subscribed; returns the accepted body and the task's event types."""

    async def scenario() -> tuple[dict[str, Any], list[str]]:
        async with EventClient(f"{server.ws_base}/ws/default") as client:
            response = server.http.post("/api/v1/projects/film/assemblies", json=body)
            assert response.status_code == 202, response.text
            accepted = response.json()
            await client.subscribe(task_ids=[accepted["task_id"]])
            done = await client.until_terminal(accepted["task_id"], timeout=120)
            assert done["type"] == "task.completed", done
            return accepted, [e["type"] for e in client.for_task(accepted["task_id"])]

    return asyncio.run(scenario())


def _frames(data: bytes) -> tuple[list[Image.Image], float]:
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        rate = float(stream.average_rate or 0)
        return [f.to_image() for f in container.decode(stream)], rate


def _near(pixel: Any, colour: tuple[int, int, int], tol: int = 12) -> bool:
    return all(abs(int(a) - b) <= tol for a, b in zip(pixel[:3], colour, strict=True))


def _git(root: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=root, check=True, capture_output=True, text=True
    ).stdout


def test_three_shots_cut_into_one_mp4_committed_with_manifest_then_take_002(
    server: ServerProcess,
) -> None:
    accepted, events = _assemble(server, {"scene": SCENE, "still_duration": 0.5})
    assert accepted["scene"] == SCENE and accepted["shot"] == f"{SCENE}/_cut"
    assert [s["shot"] for s in accepted["shots"]] == [STILL, GENERATED, UPLOADED]
    assert [s["kind"] for s in accepted["shots"]] == ["still", "video", "video"]
    assert [s["frame_count"] for s in accepted["shots"]] == [12, 12, 12]
    assert "task.progress" in events and "take.created" in events

    cuts = server.ok("GET", "/api/v1/projects/film/assemblies", params={"scene": SCENE})
    assert [c["take_id"] for c in cuts] == ["take_001"]
    cut = cuts[0]
    assert cut["task_id"] == accepted["task_id"] and cut["active"] is True
    manifest = cut["manifest"]
    assert (manifest["width"], manifest["height"], manifest["fps_rational"]) == (64, 48, "24/1")
    assert manifest["frame_count"] == 36 and manifest["duration"] == 1.5
    assert [s["start_frame"] for s in manifest["shots"]] == [0, 12, 24]
    assert [s["take_id"] for s in manifest["shots"]] == ["take_001"] * 3
    root = server.home / "projects" / "film"
    for shot in manifest["shots"]:  # each source named by its content hash
        assert hashlib.sha256((root / shot["file"]).read_bytes()).hexdigest() == shot["sha256"]

    video = server.http.get(f"/api/v1/projects/film/files/{cut['video']}")
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
    frames, rate = _frames(video.content)
    assert len(frames) == 36 and rate == 24.0 and frames[0].size == (64, 48)
    still, generated, uploaded = frames[5], frames[18], frames[30]
    assert _near(still.getpixel((32, 24)), RED) and _near(still.getpixel((32, 3)), (0, 0, 0))
    assert _near(generated.getpixel((32, 24)), GREEN) and _near(generated.getpixel((2, 2)), GREEN)
    assert _near(uploaded.getpixel((32, 24)), BLUE) and _near(uploaded.getpixel((3, 24)), (0, 0, 0))

    cut_dir = f"03_Renders/{SCENE}/_cut/takes/take_001"
    assert _git(root, "status", "--porcelain", "--", "03_Renders") == ""
    pointer = _git(root, "show", f"HEAD:{cut_dir}/video.mp4")
    assert pointer.startswith("version https://git-lfs.github.com/spec/v1")
    committed = json.loads(_git(root, "show", f"HEAD:{cut_dir}/manifest.json"))
    assert committed == manifest

    # another take of the still, made active, then a second cut: take_002 with it in place
    _still(server, STILL, YELLOW)
    server.ok(
        "PUT", "/api/v1/projects/film/takes/active", json={"shot_id": STILL, "take_id": "take_002"}
    )
    _assemble(server, {"scene": SCENE, "still_duration": 0.5})
    cuts = server.ok("GET", "/api/v1/projects/film/assemblies", params={"scene": SCENE})
    assert [c["take_id"] for c in cuts] == ["take_001", "take_002"]
    second = cuts[1]["manifest"]
    assert [s["take_id"] for s in second["shots"]] == ["take_002", "take_001", "take_001"]
    assert second["shots"][0]["sha256"] != manifest["shots"][0]["sha256"]
    frames, _ = _frames(server.http.get(f"/api/v1/projects/film/files/{cuts[1]['video']}").content)
    assert len(frames) == 36
    assert _near(frames[5].getpixel((32, 24)), YELLOW)
    assert _near(frames[30].getpixel((32, 24)), BLUE)


def test_an_uploaded_clip_with_sound_keeps_it_in_the_cut(
    server: ServerProcess, tmp_path: Path
) -> None:
    """A still then an uploaded 0.5 s clip with a 440 Hz sine (load_video's take): the cut has
    one AAC track, silent over the still, the sine over the clip; the manifest says which."""
    import numpy as np

    from tests.nodes.test_assembly import SINE_AMP, _clip_with_sine, _cut_audio

    scene = "ch03/sc01"
    _still(server, f"{scene}/sh010", RED)
    _clip_with_sine(tmp_path / "sine.mp4", 12, 24, (64, 48))
    upload = server.http.post(
        "/api/v1/projects/film/assets",
        files={"file": ("sine.mp4", (tmp_path / "sine.mp4").read_bytes(), "video/mp4")},
    )
    assert upload.status_code == 201 and upload.json()["video"]["audio"] is True, upload.text
    loaded = server.submit(
        "load_video", {"asset": upload.json()["uri"]}, project_id="film", shot_id=f"{scene}/sh020"
    )
    _finished(server, loaded)
    _assemble(server, {"scene": scene, "still_duration": 0.5})
    (cut,) = server.ok("GET", "/api/v1/projects/film/assemblies", params={"scene": scene})
    manifest = cut["manifest"]
    assert manifest["audio"] is True and [s["audio"] for s in manifest["shots"]] == [False, True]
    data = server.http.get(f"/api/v1/projects/film/files/{cut['video']}").content
    (tmp_path / "cut.mp4").write_bytes(data)
    samples, rate = _cut_audio(tmp_path / "cut.mp4")
    assert rate == 48_000 and abs(samples.shape[1] - manifest["duration"] * rate) <= 1024

    def rms(start: float, end: float) -> float:
        part = samples[:, round(start * rate) : round(end * rate)].astype(np.float64)
        return float(np.sqrt(np.mean(part**2)))

    assert rms(0, 0.48) < 0.01
    assert rms(0.52, 0.98) == pytest.approx(SINE_AMP / np.sqrt(2), rel=0.1)


def test_cuts_are_listed_by_assemblies_not_among_the_project_takes(server: ServerProcess) -> None:
    """The editor's shot lists come from ``GET .../takes``: a cut shot is not one to render
    into, so without a filter the cuts are left out; the cut shot as ``shot_id`` lists them."""
    if not server.ok("GET", "/api/v1/projects/film/assemblies", params={"scene": SCENE}):
        _assemble(server, {"scene": SCENE, "still_duration": 0.5})
    listed = server.ok("GET", "/api/v1/projects/film/takes")
    assert listed and not [t for t in listed if t["shot_id"].endswith("/_cut")]
    cuts = server.ok("GET", "/api/v1/projects/film/takes", params={"shot_id": f"{SCENE}/_cut"})
    assert cuts and {t["shot_id"] for t in cuts} == {f"{SCENE}/_cut"}
    by_task = server.ok(
        "GET", "/api/v1/projects/film/takes", params={"task_id": cuts[0]["metadata"]["task_id"]}
    )
    assert [t["take_id"] for t in by_task] == [cuts[0]["take_id"]]


def test_a_cut_rebuilt_from_its_plan_is_still_allowed_into_the_cut_shot(
    server: ServerProcess,
) -> None:
    """The guard on ``_cut`` shots lets the assembler's own task through: the plan in a cut's
    take.json, posted as an ``assemble_scene`` task into that cut shot, renders the same bytes."""
    shot = f"{SCENE}/_cut"
    if not server.ok("GET", "/api/v1/projects/film/assemblies", params={"scene": SCENE}):
        _assemble(server, {"scene": SCENE, "still_duration": 0.5})
    first = server.ok("GET", "/api/v1/projects/film/takes", params={"shot_id": shot})[0]
    plan = first["metadata"]["inputs"]["node"]["plan"]
    task = server.submit("assemble_scene", {"plan": plan}, project_id="film", shot_id=shot)
    _finished(server, task)
    (rebuilt,) = server.ok("GET", "/api/v1/projects/film/takes", params={"task_id": task})
    assert rebuilt["shot_id"] == shot and rebuilt["take_id"] != first["take_id"]
    files = [server.http.get(t["outputs"]["video"]["url"]).content for t in (first, rebuilt)]
    assert files[0] == files[1]


@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        ({"scene": "ch01/sc09"}, 422, "unknown_scene", "scene"),
        ({"scene": "ch01"}, 422, "unknown_scene", "scene"),
        ({"chapter": "ch07"}, 422, "unknown_chapter", "chapter"),
        ({"shots": ["ch01/sc01/sh999"]}, 422, "unknown_shot", "shots[0]"),
        ({"shots": []}, 422, "nothing_to_assemble", "shots"),
        ({"shots": [STILL, "ch02/sc01/sh010"]}, 422, "invalid_assembly", "shots"),
        ({"scene": "ch01/sc01/../x"}, 422, "unknown_scene", "scene"),
        ({}, 422, "invalid_request", None),
        ({"scene": SCENE, "chapter": "ch01"}, 422, "invalid_request", None),
        ({"scene": SCENE, "width": 63, "height": 48}, 422, "invalid_request", None),
        ({"scene": SCENE, "still_duration": 0}, 422, "invalid_request", None),
    ],
)
def test_bad_assembly_requests_are_refused_and_nothing_stored(
    server: ServerProcess, body: dict[str, Any], status: int, code: str, field: str | None
) -> None:
    before = snapshot(server)
    response = server.http.post("/api/v1/projects/film/assemblies", json=body)
    assert response.status_code == status, response.text
    assert response.json()["code"] == code and response.json().get("field") == field
    assert snapshot(server) == before


def test_shot_without_active_take_or_media_is_named(server: ServerProcess) -> None:
    task = server.submit("number", {"value": 3.0}, project_id="film", shot_id="ch02/sc01/sh010")
    _finished(server, task)
    _still(server, "ch02/sc02/sh010", RED)
    active = server.home / "projects/film/03_Renders/ch02/sc02/sh010/takes/active.json"
    active.unlink()
    before = snapshot(server)
    for scene, code in (("ch02/sc01", "no_media"), ("ch02/sc02", "no_active_take")):
        response = server.http.post("/api/v1/projects/film/assemblies", json={"scene": scene})
        assert response.status_code == 422, response.text
        assert response.json()["code"] == code
        assert response.json()["shot"] == f"{scene}/sh010" and response.json()["field"] == "scene"
    missing = server.http.post("/api/v1/projects/nope/assemblies", json={"scene": SCENE})
    assert missing.status_code == 404 and missing.json()["code"] == "project_not_found"
    assert snapshot(server) == before
