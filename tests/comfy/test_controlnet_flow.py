"""ControlNet and KSamplerAdvanced workflows through the ComfyUI protocol, against
``serve --demo --comfy-port`` (the demo ControlNet): each prompt's images come back and its take
names the ControlNet by content hash and records what Takeflow ran differently."""

from __future__ import annotations

import hashlib
import io
import uuid
from typing import Any

import pytest
from PIL import Image, ImageDraw

from tests.comfy.client import ComfyClient, of_prompt, txt2img, until_done
from tests.comfy.test_translate_control import advanced_prompt, controlnet_prompt
from tests.server.harness import ServerProcess

Comfy = tuple[ServerProcess, ComfyClient]
DEMO_CN = "demo-controlnet.safetensors"


def _run(client: ComfyClient, prompt: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
    client_id = uuid.uuid4().hex
    ws = client.connect(client_id)
    try:
        prompt_id = client.queue_prompt(prompt, client_id)["prompt_id"]
        messages = of_prompt(until_done(ws, prompt_id, timeout=120), prompt_id)
    finally:
        ws.close()
    texts = [m for m in messages if isinstance(m, dict)]
    assert texts[-2]["type"] == "execution_success", texts[-3:]
    entry = client.get(f"/history/{prompt_id}")[1][prompt_id]
    (image,) = entry["outputs"]["9"]["images"]
    status, png = client.view(image)
    assert status == 200 and Image.open(io.BytesIO(png)).size == (64, 64)
    return entry, png


def _take(server: ServerProcess, entry: dict[str, Any]) -> dict[str, Any]:
    task_id = entry["takeflow"]["task_id"]
    (take,) = server.ok("GET", "/api/v1/projects/comfyui/takes", params={"task_id": task_id})
    return dict(take["metadata"])


def _upload(client: ComfyClient) -> str:
    image = Image.new("RGB", (64, 64), "black")
    ImageDraw.Draw(image).ellipse((12, 12, 52, 52), fill="white")
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    status, answer = client.upload("plate.png", buf.getvalue())
    assert status == 200
    return str(answer["name"])


@pytest.mark.timeout(300)  # the server's first generation loads torch and the model
def test_controlnet_workflow_with_canny(comfy: Comfy) -> None:
    server, client = comfy
    _, info = client.get("/object_info/ControlNetLoader")
    assert DEMO_CN in info["ControlNetLoader"]["input"]["required"]["control_net_name"][0]
    name = _upload(client)
    prompt = controlnet_prompt()
    prompt["10"]["inputs"]["image"] = name
    prompt["12"]["inputs"]["control_net_name"] = DEMO_CN
    entry, png = _run(client, prompt)
    metadata = _take(server, entry)
    digest = hashlib.sha256((server.home / "models" / "controlnet" / DEMO_CN).read_bytes())
    assert metadata["controlnets"] == [
        {"kind": "controlnet", "name": DEMO_CN, "sha256": f"sha256:{digest.hexdigest()}",
         "strength": 0.8, "start": 0.0, "end": 0.6}]  # fmt: skip
    assert any("fractions of the sampling steps" in n for n in metadata["comfyui_notes"])
    assert any("fractions of the sampling steps" in n for n in entry["takeflow"]["notes"])
    # The same prompt and seed without the ControlNet makes another picture.
    _, plain = _run(client, txt2img())
    assert Image.open(io.BytesIO(plain)).tobytes() != Image.open(io.BytesIO(png)).tobytes()


def test_ksampler_advanced_workflow(comfy: Comfy) -> None:
    server, client = comfy
    prompt = advanced_prompt(start=2)
    prompt["3"]["inputs"]["steps"] = 4
    prompt["10"]["inputs"]["image"] = _upload(client)
    entry, _ = _run(client, prompt)
    metadata = _take(server, entry)
    sampler = next(v for k, v in metadata["inputs"].items() if k.startswith("ksampler"))
    assert sampler["strength"] == 0.5 and sampler["steps"] == 4
    assert any("start_at_step 2 of 4" in n for n in metadata["comfyui_notes"])
