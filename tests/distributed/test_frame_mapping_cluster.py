"""Per-frame mapping in distributed mode: a canvas run submitted to an API replica is mapped
over the frames by a worker process (real PostgreSQL), and its take holds one PNG per frame."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.distributed.cluster import cluster
from tests.distributed.test_cluster import wait_status
from tests.services import PostgresServer

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


def _lit(value: Any) -> dict[str, Any]:
    return {"kind": "literal", "value": value}


def _link(node: str, output: str) -> dict[str, Any]:
    return {"kind": "link", "node": node, "output": output}


def test_a_worker_maps_an_image_template_over_the_frames(
    tmp_path: Path, pg_server: PostgresServer
) -> None:
    size = {"width": _lit(32), "height": _lit(32)}
    graph = {"name": "worker-frames", "nodes": [
        {"id": "red", "template": "solid_image", "inputs": {**size, "color": _lit("#ff0000")}},
        {"id": "clip", "template": "frames_to_video", "inputs": {
            "images": _link("red", "image"), "frame_count": _lit(4), "fps": _lit(8.0)}},
        {"id": "frames", "template": "video_to_frames",
         "inputs": {"video": _link("clip", "video")}},
        {"id": "small", "template": "resize", "inputs": {
            "image": _link("frames", "images"), "width": _lit(16), "height": _lit(8)}},
    ]}  # fmt: skip
    with cluster(tmp_path, pg_server, None, apis=1, workers=1) as c:
        api = c.apis[0]
        api.ok("POST", "/api/v1/projects", json={"project_id": "film"})
        body = {"graph": graph, "project_id": "film", "shot_id": "ch01/sc01/sh010"}
        task_id = api.ok("POST", "/api/v1/runs", json=body)["task_id"]
        record = wait_status(api, task_id, {"completed", "failed", "cancelled"}, timeout=120)
        assert record["status"] == "completed", record
        [take] = api.ok("GET", "/api/v1/projects/film/takes", params={"task_id": task_id})
        assert sorted(take["outputs"]) == [f"image_{i:03d}" for i in range(4)]
        for output in take["outputs"].values():
            image = Image.open(io.BytesIO(api.http.get(output["url"]).content)).convert("RGB")
            assert image.size == (16, 8) and image.getpixel((8, 4))[0] > 230
        mapped = [e["data"] for e in api.stored_events(task_id)
                  if e["type"] == "task.progress" and e["data"]["node_id"] == "small"]  # fmt: skip
        assert [p["element"] for p in mapped] == [0, 1, 2, 3]
