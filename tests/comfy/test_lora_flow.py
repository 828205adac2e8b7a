"""A ComfyUI API-format LoRA stack against ``serve --demo --comfy-port``: the image comes back,
and the prompt's take records both LoRAs by name, content hash and strengths."""

from __future__ import annotations

import hashlib
import io
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from nodes.diffusion.demo_lora import DEMO_LORA, random_kohya_lora, save_lora
from tests.comfy.client import ComfyClient, txt2img
from tests.comfy.conftest import comfy_server
from tests.comfy.test_translate_lora import lora_stack
from tests.server.harness import ServerProcess

pytestmark = pytest.mark.timeout(400)  # a server, the demo model and LoRA, two prompts on CPU


def history(client: ComfyClient, prompt_id: str, timeout: float = 240.0) -> dict[str, Any]:
    """The prompt's history entry once it has one (a loaded box runs the tiny model slowly)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, body = client.get(f"/history/{prompt_id}")
        if status == 200 and prompt_id in body:
            entry: dict[str, Any] = body[prompt_id]
            return entry
        time.sleep(0.25)
    raise TimeoutError(f"prompt {prompt_id} has no history after {timeout}s")


@pytest.fixture(scope="module")
def lora_server(
    tmp_path_factory: pytest.TempPathFactory, demo_model_dir: Path
) -> Iterator[tuple[ServerProcess, ComfyClient, Path]]:
    from diffusers import DiffusionPipeline

    home = tmp_path_factory.mktemp("comfy-lora") / "home"
    pipe = DiffusionPipeline.from_pretrained(demo_model_dir, local_files_only=True)
    second = save_lora(
        random_kohya_lora(pipe, seed=9), home / "models/loras/kohya/second.safetensors"
    )
    with comfy_server(home, demo=demo_model_dir) as (server, client):
        yield server, client, second


def test_lora_stack_workflow_makes_an_image_and_a_take_with_both_loras(
    lora_server: tuple[ServerProcess, ComfyClient, Path],
) -> None:
    server, client, second = lora_server
    loras: list[str] = []
    deadline = time.monotonic() + 120  # the demo LoRA is made beside the server at first start
    while DEMO_LORA not in loras and time.monotonic() < deadline:
        status, info = client.get("/object_info/LoraLoader")
        assert status == 200
        loras = info["LoraLoader"]["input"]["required"]["lora_name"][0]
        time.sleep(0.5)
    assert loras == [DEMO_LORA, "kohya/second.safetensors"]
    _, vae_info = client.get("/object_info/VAELoader")
    assert vae_info["VAELoader"]["input"]["required"]["vae_name"][0] == []

    prompt = lora_stack()
    prompt["20"]["inputs"]["lora_name"] = DEMO_LORA
    prompt["21"]["inputs"]["lora_name"] = "kohya/second.safetensors"
    answer = client.queue_prompt(prompt, str(uuid.uuid4()))
    assert answer["node_errors"] == {}
    plain = client.queue_prompt(txt2img(), str(uuid.uuid4()))  # the same seed without LoRAs
    entry = history(client, answer["prompt_id"])
    assert entry["status"]["status_str"] == "success"
    status, png = client.view(entry["outputs"]["9"]["images"][0])
    assert status == 200 and Image.open(io.BytesIO(png)).size == (64, 64)
    _, plain_png = client.view(history(client, plain["prompt_id"])["outputs"]["9"]["images"][0])
    assert plain_png != png  # the LoRAs changed the picture

    task_id = entry["takeflow"]["task_id"]
    takes = server.ok("GET", "/api/v1/projects/comfyui/takes", params={"task_id": task_id})
    home = Path(server.home)
    demo_lora = home / "models" / "loras" / DEMO_LORA
    sha = {
        name: "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
        for name, path in ((DEMO_LORA, demo_lora), ("kohya/second.safetensors", second))
    }
    assert takes[0]["metadata"]["loras"] == [
        {"name": DEMO_LORA, "sha256": sha[DEMO_LORA], "strength_model": 0.8,
         "strength_clip": 0.6},
        {"name": "kohya/second.safetensors", "sha256": sha["kohya/second.safetensors"],
         "strength_model": 0.5, "strength_clip": 1.0},
    ]  # fmt: skip
    assert takes[0]["metadata"]["clip_skip"] == 1
