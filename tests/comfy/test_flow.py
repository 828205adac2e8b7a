"""ComfyUI's example clients against Takeflow: post, follow the socket, read history, view."""

from __future__ import annotations

import io
import struct
import uuid

from PIL import Image

from tests.comfy.client import ComfyClient, of_prompt, recv, txt2img, until_done
from tests.server.harness import ServerProcess


def test_post_wait_history_view(comfy: tuple[ServerProcess, ComfyClient]) -> None:
    server, client = comfy
    client_id = str(uuid.uuid4())
    ws = client.connect(client_id)
    try:
        first = ws.recv()
        status = __import__("json").loads(first)
        assert status["type"] == "status" and status["data"]["sid"] == client_id
        assert "queue_remaining" in status["data"]["status"]["exec_info"]
        prompt = txt2img(seed=7)
        prompt["10"] = {"class_type": "PreviewImage", "inputs": {"images": ["8", 0]}}
        answer = client.queue_prompt(prompt, client_id)
        prompt_id = answer["prompt_id"]
        assert answer["node_errors"] == {} and isinstance(answer["number"], int)
        messages = of_prompt(until_done(ws, prompt_id), prompt_id)
    finally:
        ws.close()
    kinds = [m["type"] for m in messages if isinstance(m, dict) and m["type"] != "progress_state"]
    assert kinds[:2] == ["execution_start", "execution_cached"]
    assert kinds[-5:] == ["executed", "executing", "executed", "execution_success", "executing"]
    frames = [m for m in messages if isinstance(m, bytes)]
    assert len(frames) == 1 and struct.unpack(">II", frames[0][:8]) == (1, 1)  # step 1 preview
    assert frames[0][8:11] == b"\xff\xd8\xff"  # a JPEG
    executing = [
        m["data"]["node"] for m in messages if isinstance(m, dict) and m["type"] == "executing"
    ]
    assert executing.index("3") < executing.index("8") < executing.index("9")
    assert executing.index("9") < executing.index("10")
    assert executing[-1] is None
    progress = [m["data"] for m in messages if isinstance(m, dict) and m["type"] == "progress"]
    assert [(p["value"], p["max"], p["node"]) for p in progress] == [(1, 2, "3"), (2, 2, "3")]

    status, history = client.get(f"/history/{prompt_id}")
    assert status == 200
    entry = history[prompt_id]
    assert entry["status"]["status_str"] == "success" and entry["status"]["completed"] is True
    assert [m[0] for m in entry["status"]["messages"]] == [
        "execution_start",
        "execution_cached",
        "execution_success",
    ]
    assert entry["prompt"][1] == prompt_id and entry["prompt"][2]["3"]["class_type"] == "KSampler"
    images = entry["outputs"]["9"]["images"]
    assert len(images) == 1 and images[0]["type"] == "output"
    assert images[0]["filename"].startswith("ComfyUI_") and images[0]["filename"].endswith("_.png")
    status, png = client.view(images[0])
    assert status == 200 and png[:8] == b"\x89PNG\r\n\x1a\n"
    assert Image.open(io.BytesIO(png)).size == (64, 64)
    preview = entry["outputs"]["10"]["images"][0]
    assert preview["type"] == "temp" and preview["filename"].startswith("ComfyUI_temp_")
    status, same = client.view(preview)
    assert status == 200 and same == png  # the same image, in the temp folder

    # The prompt is a Takeflow task: a take of the default project, committed to git.
    task_id = entry["takeflow"]["task_id"]
    takes = server.ok("GET", "/api/v1/projects/comfyui/takes", params={"task_id": task_id})
    assert len(takes) == 1 and takes[0]["metadata"]["comfyui_prompt_id"] == prompt_id
    status_body = server.ok("GET", f"/api/v1/functions/tasks/{task_id}")
    assert status_body["status"] == "completed" and status_body["dagster_run_id"]
    assert status_body["commit"]


def test_status_comes_before_execution_start_and_the_final_executing(
    comfy: tuple[ServerProcess, ComfyClient],
) -> None:
    """As ComfyUI: the queue ``status`` of a prompt's start comes before its
    ``execution_start``, and the one of its end (history written, queue shorter) before the
    final ``executing`` with ``node: null``."""
    _, client = comfy
    client_id = uuid.uuid4().hex
    ws = client.connect(client_id)
    try:
        assert recv(ws)["type"] == "status"  # type: ignore[index]
        prompt_id = client.queue_prompt(txt2img(seed=17), client_id)["prompt_id"]
        texts = [m for m in until_done(ws, prompt_id) if isinstance(m, dict)]
    finally:
        ws.close()
    kinds = [m["type"] for m in texts]
    start = kinds.index("execution_start")
    assert kinds[start - 1] == "status"
    assert texts[start - 1]["data"]["status"]["exec_info"]["queue_remaining"] == 1
    assert kinds[-3:] == ["execution_success", "status", "executing"], kinds
    assert texts[-2]["data"]["status"]["exec_info"]["queue_remaining"] == 0
    assert "status" not in kinds[start:-2], kinds
