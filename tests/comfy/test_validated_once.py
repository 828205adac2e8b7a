"""A ComfyUI prompt goes through Takeflow's one admission door: its graph is validated exactly
once per ``POST /prompt``, also while it runs and its history is written."""

from __future__ import annotations

import time
from typing import Any

from litestar.testing import TestClient

from tests.comfy.client import txt2img


def finished(client: TestClient[Any], prompt_id: str, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        history = client.get(f"/api/history/{prompt_id}").json()
        if prompt_id in history:
            return dict(history[prompt_id])
        time.sleep(0.1)
    raise TimeoutError(f"prompt {prompt_id} did not finish within {timeout}s")


def test_a_comfyui_prompt_is_validated_once(
    app_client: TestClient[Any], validations: list[str]
) -> None:
    client = app_client
    answer = client.post("/api/prompt", json={"prompt": txt2img(seed=9)})
    assert answer.status_code == 200, answer.text
    prompt_id = answer.json()["prompt_id"]
    assert validations == [f"comfyui {prompt_id[:8]}"]
    entry = finished(client, prompt_id)
    assert entry["status"]["status_str"] == "success", entry["status"]
    assert validations == [f"comfyui {prompt_id[:8]}"]  # running it validated nothing again

    validations.clear()
    refused = client.post("/api/prompt", json={"prompt": txt2img(size=100)})
    assert refused.status_code == 400, refused.text
    assert refused.json()["node_errors"]["5"]["errors"][0]["extra_info"]["input_name"] == "width"
    assert len(validations) == 1  # Takeflow's validation found it, once

    validations.clear()
    unknown = txt2img()
    unknown["3"]["class_type"] = "SamplerCustomAdvanced"  # a node type Takeflow does not have
    missing = client.post("/api/prompt", json={"prompt": unknown})
    assert missing.status_code == 400 and missing.json()["error"]["type"] == "missing_node_type"
    assert validations == []  # refused by the ComfyUI checks, before any translation
