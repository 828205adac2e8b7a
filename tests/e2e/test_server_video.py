"""Video over HTTP on a real server: uploads probed (a corrupt or unsupported one refused, nothing
stored), and files served with range requests (206, 416) on the file route and ComfyUI's /view."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import httpx
import pytest
from PIL import Image

from tests.comfy.conftest import wait_compat
from tests.e2e.test_server_bad_input import snapshot
from tests.server.harness import ServerProcess, free_port, running_server

pytestmark = pytest.mark.e2e


def _mp4(frames: int = 12, fps: int = 24, size: tuple[int, int] = (64, 48)) -> bytes:
    """An H.264 MP4 written with PyAV directly (independent of nodes.video)."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for i in range(frames):
            image = Image.new("RGB", size, (i * 20, 80, 200))
            out.mux(stream.encode(av.VideoFrame.from_image(image)))
        out.mux(stream.encode())
    return buf.getvalue()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    home = tmp_path_factory.mktemp("server-video") / "home"
    with running_server(home) as srv:
        srv.ok("POST", "/api/v1/projects", json={"project_id": "film"})
        task_id = srv.submit("solid_image", {"width": 8, "height": 8}, project_id="film")
        deadline = 30.0  # a finished task first, so the snapshot below is stable
        while srv.ok("GET", f"/api/v1/functions/tasks/{task_id}")["status"] != "completed":
            deadline -= 0.05
            assert deadline > 0
            asyncio.run(asyncio.sleep(0.05))
        yield srv


def test_video_upload_is_probed_and_served_with_ranges(server: ServerProcess) -> None:
    data = _mp4(frames=12, fps=24)
    upload = server.http.post(
        "/api/v1/projects/film/assets", files={"file": ("clip.mp4", data, "video/mp4")}
    )
    assert upload.status_code == 201, upload.text
    body = upload.json()
    assert body["video"]["frame_count"] == 12 and body["video"]["fps"] == 24.0
    assert body["video"]["duration"] == 0.5
    assert (body["video"]["width"], body["video"]["height"]) == (64, 48)
    url = f"/api/v1/projects/film/files/{body['path']}"

    whole = server.http.get(url)
    assert whole.status_code == 200 and whole.content == data
    assert whole.headers["content-type"] == "video/mp4"
    assert whole.headers["accept-ranges"] == "bytes"

    part = server.http.get(url, headers={"Range": "bytes=100-299"})
    assert part.status_code == 206 and part.content == data[100:300]
    assert part.headers["content-range"] == f"bytes 100-299/{len(data)}"
    assert part.headers["content-length"] == "200"
    assert part.headers["content-type"] == "video/mp4"
    tail = server.http.get(url, headers={"Range": "bytes=-64"})
    assert tail.status_code == 206 and tail.content == data[-64:]
    open_end = server.http.get(url, headers={"Range": f"bytes={len(data) - 10}-"})
    assert open_end.status_code == 206 and open_end.content == data[-10:]

    for bad in (f"bytes={len(data)}-", "bytes=50-10", "bytes=x-y"):
        refused = server.http.get(url, headers={"Range": bad})
        assert refused.status_code == 416, bad
        assert refused.headers["content-range"] == f"bytes */{len(data)}"
        assert refused.json()["code"] == "range_not_satisfiable"


@pytest.mark.parametrize(
    ("filename", "payload", "status", "code"),
    [
        ("broken.mp4", "truncated", 422, "invalid_video"),
        ("noise.webm", "noise", 422, "invalid_video"),
        ("clip.avi", "valid", 415, "unsupported_video"),
    ],
)
def test_corrupt_or_unsupported_video_is_refused_and_nothing_stored(
    server: ServerProcess, filename: str, payload: str, status: int, code: str
) -> None:
    data = _mp4()
    content = {"truncated": data[: len(data) // 2], "noise": b"\x1aE\xdf\xa3" + b"\x00" * 500}
    before = snapshot(server)
    response = server.http.post(
        "/api/v1/projects/film/assets",
        files={"file": (filename, content.get(payload, data), "application/octet-stream")},
    )
    assert response.status_code == status, response.text
    assert response.json()["code"] == code and response.json()["field"] == "file"
    assert snapshot(server) == before
    assert not list((server.home / "projects/film/05_Cache/uploads").glob("*"))


def test_comfy_view_serves_video_with_ranges(tmp_path: Path) -> None:
    data = _mp4(frames=6)
    port = free_port()
    with running_server(tmp_path / "home", "--comfy-port", str(port)):
        base = f"http://127.0.0.1:{port}"
        wait_compat(base)
        with httpx.Client(base_url=base, timeout=30) as comfy:
            _view_ranges(comfy, data)


def _view_ranges(server: httpx.Client, data: bytes) -> None:
    stored = server.post(
        "/upload/image", files={"image": ("shot.mp4", data, "video/mp4")}, data={"type": "input"}
    )
    assert stored.status_code == 200, stored.text
    query: dict[str, Any] = {"filename": stored.json()["name"], "type": "input"}
    whole = server.get("/view", params=query)
    assert whole.status_code == 200 and whole.content == data
    assert whole.headers["content-type"] == "video/mp4"
    assert whole.headers["accept-ranges"] == "bytes"
    part = server.get("/view", params=query, headers={"Range": "bytes=0-31"})
    assert part.status_code == 206 and part.content == data[:32]
    assert part.headers["content-range"] == f"bytes 0-31/{len(data)}"
    refused = server.get("/view", params=query, headers={"Range": f"bytes={len(data)}-"})
    assert refused.status_code == 416
