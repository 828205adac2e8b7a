"""What Takeflow adds to ComfyUI's ``POST /prompt``: ``extra_data.callback_url`` (a signed
completion callback to a real receiver on loopback) and the ``Idempotency-Key`` header."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.comfy.client import ComfyClient, txt2img
from tests.comfy.conftest import comfy_server
from tests.server.callback_receiver import CallbackReceiver, callback_receiver
from tests.server.harness import ServerProcess

SECRET = "comfy-secret-0123456789"


@pytest.fixture(scope="module")
def receiver() -> Iterator[CallbackReceiver]:
    with callback_receiver() as rec:
        yield rec


@pytest.fixture(scope="module")
def comfy(
    tmp_path_factory: pytest.TempPathFactory, demo_model_dir: Path
) -> Iterator[tuple[ServerProcess, ComfyClient]]:
    callbacks = {"allow_hosts": ["127.0.0.1"], "secret": SECRET, "backoff_s": 0.1,
                 "poll_s": 0.05}  # fmt: skip
    home = tmp_path_factory.mktemp("comfy-callbacks") / "home"
    with comfy_server(home, demo=demo_model_dir, config={"callbacks": callbacks}) as pair:
        yield pair


def _post(client: ComfyClient, body: dict[str, Any], key: str | None = None) -> httpx.Response:
    headers = {"Idempotency-Key": key} if key is not None else {}
    return httpx.post(f"{client.base}/prompt", json=body, headers=headers, timeout=30)


def test_extra_data_callback_url_is_called_back_signed(
    comfy: tuple[ServerProcess, ComfyClient], receiver: CallbackReceiver
) -> None:
    server, client = comfy
    extra = {"callback_url": f"{receiver.url}/comfy"}
    prompt_id = client.queue_prompt(txt2img(seed=11), extra_data=extra)["prompt_id"]
    (got,) = receiver.wait_for("/comfy", timeout=120)
    assert got.verifies(SECRET)
    body = got.json()
    assert body["comfyui"]["prompt_id"] == prompt_id and body["status"] == "completed"
    assert body["project_id"] == "comfyui" and len(body["takes"]) == 1
    task = server.ok("GET", f"/api/v1/functions/tasks/{body['task_id']}")
    assert task["callback"]["url"] == extra["callback_url"]
    status, history = client.get(f"/history/{prompt_id}")
    assert status == 200 and history[prompt_id]["status"]["completed"] is True


def test_a_private_callback_url_is_refused_as_an_invalid_prompt(
    comfy: tuple[ServerProcess, ComfyClient],
) -> None:
    _, client = comfy
    body = {"prompt": txt2img(), "extra_data": {"callback_url": "http://10.1.2.3/hook"}}
    response = _post(client, body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_prompt" and error["details"] == "callback_url_refused"
    assert "callback_url" in error["message"] and "private" in error["message"]
    assert error["extra_info"]["field"] == "callback_url"


def test_a_retried_prompt_with_an_idempotency_key_answers_the_first_prompt_id(
    comfy: tuple[ServerProcess, ComfyClient],
) -> None:
    _, client = comfy
    prompt_id = str(uuid.uuid4())
    body = {"prompt": txt2img(seed=12), "prompt_id": prompt_id, "client_id": "retrier"}
    first = _post(client, body, key="prompt-key-1")
    assert first.status_code == 200, first.text
    assert first.json()["prompt_id"] == prompt_id
    assert "Idempotent-Replayed" not in first.headers
    again = _post(client, body, key="prompt-key-1")
    assert again.status_code == 200, again.text
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    # without the key, ComfyUI's own rule stands: a prompt_id is used once
    reused = _post(client, body)
    assert reused.status_code == 400 and "already used" in reused.json()["error"]["message"]
    fresh = _post(client, {"prompt": txt2img(seed=13)}, key="prompt-key-2")
    replay = _post(client, {"prompt": txt2img(seed=13)}, key="prompt-key-2")
    assert fresh.status_code == replay.status_code == 200
    assert replay.json()["prompt_id"] == fresh.json()["prompt_id"]  # the server chose it once
    other = _post(client, {"prompt": txt2img(seed=14)}, key="prompt-key-2")
    assert other.status_code == 422
    assert other.json()["error"]["details"] == "idempotency_key_reused"
    assert other.json()["error"]["extra_info"]["prompt_id"] == fresh.json()["prompt_id"]
    bad = _post(client, {"prompt": txt2img(seed=15)}, key="no spaces allowed")
    assert bad.status_code == 400
    assert bad.json()["error"]["details"] == "invalid_idempotency_key"
    # one prompt per key: a prompt is always queued, running or in history (ComfyUI's rule)
    queue, history = client.get("/queue")[1], client.get("/history")[1]
    items = queue["queue_running"] + queue["queue_pending"]
    items += [entry["prompt"] for entry in history.values()]
    seeds = [item[2]["3"]["inputs"]["seed"] for item in items]
    assert seeds.count(12) == 1 and seeds.count(13) == 1 and 14 not in seeds, seeds
