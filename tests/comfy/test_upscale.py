"""ComfyUI upscaling through the protocol against ``serve --demo --comfy-port``: a model upscale
and a hires fix (KSampler -> LatentUpscaleBy -> KSampler at denoise 0.5), each a task, a run
and a take recording the upscale model by name and content hash, and the approximation."""

from __future__ import annotations

import hashlib
import io
import time
import uuid
from typing import Any

from PIL import Image

from tests.comfy.client import ComfyClient, txt2img, until_done
from tests.server.harness import ServerProcess

DEMO = "demo-upscale-x4.pth"


def _wait_for_demo_upscale_model(client: ComfyClient, timeout: float = 90.0) -> list[str]:
    """``--demo`` writes the demo upscale model beside the demo checkpoint, in the background."""
    deadline = time.monotonic() + timeout
    while True:
        _, info = client.get("/object_info/UpscaleModelLoader")
        choices: list[str] = info["UpscaleModelLoader"]["input"]["required"]["model_name"][0]
        if DEMO in choices or time.monotonic() > deadline:
            return choices
        time.sleep(0.5)


def _run(client: ComfyClient, prompt: dict[str, Any]) -> dict[str, Any]:
    client_id = str(uuid.uuid4())
    ws = client.connect(client_id, timeout=120)  # a busy box: the first load takes a while
    try:
        answer = client.queue_prompt(prompt, client_id)
        assert answer.get("node_errors") == {}, answer
        until_done(ws, answer["prompt_id"], timeout=120)
    finally:
        ws.close()
    status, history = client.get(f"/history/{answer['prompt_id']}")
    assert status == 200
    entry: dict[str, Any] = history[answer["prompt_id"]]
    assert entry["status"]["status_str"] == "success", entry["status"]
    return entry


def _image(client: ComfyClient, entry: dict[str, Any], node: str) -> Image.Image:
    images = entry["outputs"][node]["images"]
    assert len(images) == 1
    status, png = client.view(images[0])
    assert status == 200
    return Image.open(io.BytesIO(png))


def _take(server: ServerProcess, entry: dict[str, Any]) -> dict[str, Any]:
    task_id = entry["takeflow"]["task_id"]
    takes = server.ok("GET", "/api/v1/projects/comfyui/takes", params={"task_id": task_id})
    assert len(takes) == 1
    take: dict[str, Any] = takes[0]
    return take


def test_model_upscale_workflow(comfy: tuple[ServerProcess, ComfyClient]) -> None:
    server, client = comfy
    assert DEMO in _wait_for_demo_upscale_model(client)
    prompt = txt2img(seed=3, size=64)
    prompt["9"]["inputs"]["images"] = ["11", 0]
    prompt["10"] = {"class_type": "UpscaleModelLoader", "inputs": {"model_name": DEMO}}
    prompt["11"] = {"class_type": "ImageUpscaleWithModel",
                    "inputs": {"upscale_model": ["10", 0], "image": ["8", 0]}}  # fmt: skip
    entry = _run(client, prompt)
    assert _image(client, entry, "9").size == (256, 256)
    take = _take(server, entry)
    facts = [f["upscale_model"] for f in take["metadata"]["node_metadata"].values()
             if "upscale_model" in f]  # fmt: skip
    path = server.home / "models" / "upscale_models" / DEMO
    digest = f"sha256:{hashlib.sha256(path.read_bytes()).hexdigest()}"
    assert len(facts) == 1 and facts[0]["name"] == DEMO and facts[0]["sha256"] == digest
    assert facts[0]["scale"] == 4


def test_hires_fix_workflow_records_the_pixel_space_latent_upscale(
    comfy: tuple[ServerProcess, ComfyClient],
) -> None:
    server, client = comfy
    prompt = txt2img(seed=4, size=64)
    prompt["8"]["inputs"]["samples"] = ["13", 0]
    prompt["12"] = {"class_type": "LatentUpscaleBy",
                    "inputs": {"samples": ["3", 0], "upscale_method": "nearest-exact",
                               "scale_by": 1.5}}  # fmt: skip
    second = dict(prompt["3"]["inputs"], latent_image=["12", 0], denoise=0.5, seed=5)
    prompt["13"] = {"class_type": "KSampler", "inputs": second}
    entry = _run(client, prompt)
    assert _image(client, entry, "9").size == (96, 96)  # 64 * 1.5, on the latent's 8 px grid
    notes = entry["takeflow"]["notes"]
    assert any("node 12: LatentUpscaleBy: latent upscale done in pixel space" in n for n in notes)
    take = _take(server, entry)
    assert take["metadata"]["comfyui_notes"] == notes
    templates = [t["template"] for t in take["metadata"]["templates"]]
    assert sorted(templates) == ["image_generation", "image_to_image", "scale_image"]
    steps = take["metadata"]["inputs"]
    second_pass = next(v for v in steps.values() if "strength" in v)
    assert second_pass["strength"] == 0.5 and second_pass["steps"] == 4  # 2 steps of denoise
