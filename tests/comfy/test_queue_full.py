"""A full queue answers ComfyUI's ``POST /prompt`` with 429, ``Retry-After`` and ComfyUI's error
body; the refused prompt is not stored (not in the queue, no history)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx

from tests.comfy.client import txt2img
from tests.comfy.conftest import comfy_server


def test_a_full_queue_answers_429_with_retry_after(tmp_path: Path) -> None:
    config = {"admission": {"max_queued_per_user": 1}}
    with comfy_server(tmp_path / "home", "--workers", "1", config=config) as (server, client):
        blocker = server.submit("delay", {"seconds": 60, "steps": 600})
        deadline = time.monotonic() + 30
        while server.ok("GET", f"/api/v1/functions/tasks/{blocker}")["status"] != "running":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        client.queue_prompt(txt2img(seed=1))  # the one prompt user "comfyui" may have waiting
        refused = httpx.post(
            f"{client.base}/prompt", content=json.dumps({"prompt": txt2img(seed=2)}), timeout=30
        )
        assert refused.status_code == 429, refused.text
        assert int(refused.headers["Retry-After"]) >= 1
        error = refused.json()["error"]
        assert error["type"] == "queue_full" and error["extra_info"]["limit"] == "user"
        status, queue = client.get("/queue")
        assert status == 200 and len(queue["queue_pending"]) == 1
        server.ok("POST", f"/api/v1/functions/tasks/{blocker}/cancel")
