"""Beyond ComfyUI: a client that reconnects with the same clientId gets every message it missed,
once, from Takeflow's durable event log, also across a server crash; queue and history survive."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import websocket

from tests.comfy.client import ComfyClient, Message, of_prompt, recv, txt2img, until_done
from tests.comfy.conftest import comfy_server
from tests.server.harness import ServerProcess

Comfy = tuple[ServerProcess, ComfyClient]


def start_blocker(server: ServerProcess) -> str:
    """A long Takeflow generation that holds the diffusion device: prompts queued behind it
    wait inside their sampler, so a client can leave at a moment when nothing is in flight."""
    task_id = server.submit(
        "image_generation",
        {"prompt": "blocker", "width": 128, "height": 128, "steps": 200, "seed": 1},
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        events = server.stored_events(task_id)
        if any(e["type"] == "task.progress" and e["data"]["stage"] == "denoising" for e in events):
            return task_id
        time.sleep(0.05)
    raise TimeoutError("the blocker never started denoising")


def until_node(ws: websocket.WebSocket, prompt_id: str, node: str) -> list[Message]:
    got: list[Message] = []
    while True:
        message = recv(ws)
        got.append(message)
        if (
            isinstance(message, dict)
            and message["type"] == "executing"
            and message["data"] == {"node": node, "display_node": node, "prompt_id": prompt_id}
        ):
            return got


def texts(messages: list[Message]) -> list[str]:
    return [json.dumps(m, sort_keys=True) for m in messages if isinstance(m, dict)]


def wait_history(client: ComfyClient, prompt_id: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _, history = client.get(f"/history/{prompt_id}")
        if history:
            return dict(history[prompt_id])
        time.sleep(0.1)
    raise TimeoutError(f"no history for {prompt_id}")


def assert_quiet(ws: websocket.WebSocket, seconds: float = 1.0) -> None:
    ws.settimeout(seconds)
    with pytest.raises(websocket.WebSocketTimeoutException):
        message = ws.recv()
        raise AssertionError(f"unexpected message {message!r}")


def test_reconnect_gets_what_it_missed(comfy: Comfy) -> None:
    server, client = comfy
    client_id = str(uuid.uuid4())
    blocker = start_blocker(server)
    ws = client.connect(client_id)
    prompt_id = client.queue_prompt(txt2img(seed=21, steps=3), client_id)["prompt_id"]
    first = of_prompt(until_node(ws, prompt_id, "3"), prompt_id)
    ws.close()  # the sampler waits for the device: nothing is in flight
    server.ok("POST", f"/api/v1/functions/tasks/{blocker}/cancel")
    wait_history(client, prompt_id)  # it ran to the end while the client was away

    ws = client.connect(client_id)
    try:
        assert recv(ws)["type"] == "status"  # type: ignore[index]
        second = of_prompt(until_done(ws, prompt_id), prompt_id)
        assert_quiet(ws)
    finally:
        ws.close()
    kinds = [m["type"] for m in first if isinstance(m, dict) and m["type"] != "progress_state"]
    assert kinds[:2] == ["execution_start", "execution_cached"] and kinds[-1] == "executing"
    assert not any(isinstance(m, bytes) for m in first)
    # No gap: the replay starts with the very next message, step 1 of 3, and runs to the end.
    assert second[0]["type"] == "progress" and second[0]["data"]["value"] == 1  # type: ignore[index]
    whole = texts(first) + texts(second)
    assert len(whole) == len(set(whole))  # no duplicate
    progress = [
        m["data"]["value"] for m in second if isinstance(m, dict) and m["type"] == "progress"
    ]
    assert progress == [1, 2, 3]
    assert sum(isinstance(m, bytes) for m in second) == 2  # previews of steps 1 and 2
    executing = [json.loads(t)["data"]["node"] for t in whole if '"executing"' in t]
    assert executing == ["4", "5", "6", "7", "3", "8", "9", None]
    assert [k for t in texts(second) if (k := json.loads(t)["type"]) != "progress_state"][-3:] == [
        "executed",
        "execution_success",
        "executing",
    ]

    ws = client.connect(client_id)  # everything delivered: only a fresh status
    try:
        assert recv(ws)["type"] == "status"  # type: ignore[index]
        assert_quiet(ws)
    finally:
        ws.close()


def test_replay_queue_and_history_survive_a_crash(tmp_path: Path, demo_model_dir: Path) -> None:
    home = tmp_path / "home"
    client_id = uuid.uuid4().hex
    with comfy_server(home, demo=demo_model_dir) as (server, client):
        start_blocker(server)
        ws = client.connect(client_id)
        running = client.queue_prompt(txt2img(seed=31, steps=2), client_id)["prompt_id"]
        first = of_prompt(until_node(ws, running, "3"), running)
        ws.close()
        queued = client.queue_prompt(txt2img(seed=32, steps=2), client_id)["prompt_id"]
        _, queue = client.get("/queue")
        assert [i[1] for i in queue["queue_running"]] == [running]
        assert [i[1] for i in queue["queue_pending"]] == [queued]
        done_before = client.queue_prompt(txt2img(seed=33, steps=2, size=72))["prompt_id"]
        server.proc.kill()  # a crash: no shutdown of any kind
        server.proc.wait(timeout=10)

    with comfy_server(home) as (server, client):
        ws = client.connect(client_id)
        try:
            assert recv(ws)["type"] == "status"  # type: ignore[index]
            got: list[Message] = []
            pending = {running, queued}
            while pending:
                message = recv(ws)
                got.append(message)
                if (
                    isinstance(message, dict)
                    and message["type"] == "executing"
                    and message["data"]["node"] is None
                ):
                    pending.discard(message["data"]["prompt_id"])
        finally:
            ws.close()
        rest = of_prompt(got, running)
        assert [
            m["type"] for m in rest if isinstance(m, dict) and m["type"] != "progress_state"
        ] == ["execution_error", "executing"]
        error = next(m for m in rest if isinstance(m, dict) and m["type"] == "execution_error")
        assert error["data"]["exception_type"] == "interrupted"
        assert not set(texts(first)) & set(texts(rest))
        kinds = [
            m["type"]
            for m in of_prompt(got, queued)
            if isinstance(m, dict) and m["type"] != "progress_state"
        ]
        assert kinds[0] == "execution_start" and kinds[-2:] == ["execution_success", "executing"]

        assert wait_history(client, running)["status"]["status_str"] == "error"
        assert wait_history(client, queued)["status"]["status_str"] == "success"
        wait_history(client, done_before)  # queued behind the others; it ran after the restart
        _, history = client.get("/history")
        assert {running, queued, done_before} <= set(history)
