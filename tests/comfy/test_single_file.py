"""A single-file checkpoint from ``checkpoints_dir`` through the ComfyUI API, as ComfyUI's
example client uses one: listed by relative path, named as ``ckpt_name``, run, viewed."""

from __future__ import annotations

import io
import uuid
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.comfy.client import ComfyClient, of_prompt, txt2img, until_done
from tests.comfy.conftest import comfy_server
from tests.server.harness import ServerProcess

CKPT = "sd15/tiny.safetensors"


@pytest.fixture(scope="module")
def checkpoints(
    tmp_path_factory: pytest.TempPathFactory, demo_model_dir: Path
) -> tuple[Path, Path]:
    """The demo model's architecture and weights, exported to SD 1.5's original single-file
    layout in a ComfyUI-style checkpoints folder; and its diffusers folder, the config the tiny
    file needs (its shapes are not SD 1.5's)."""
    from diffusers import DiffusionPipeline

    from tests.nodes.ldm_export import save_single_file

    root = tmp_path_factory.mktemp("comfy-ckpt")
    pipe = DiffusionPipeline.from_pretrained(demo_model_dir, local_files_only=True)
    save_single_file(pipe, root / CKPT)
    return root, demo_model_dir


def generate(client: ComfyClient, ckpt: str) -> tuple[str, list[Any], dict[str, Any]]:
    """Post the default graph with ``ckpt_name``; the prompt's messages and history entry."""
    client_id = uuid.uuid4().hex
    ws = client.connect(client_id)
    try:
        prompt_id = client.queue_prompt(txt2img(seed=21, ckpt=ckpt), client_id)["prompt_id"]
        messages = of_prompt(until_done(ws, prompt_id), prompt_id)
    finally:
        ws.close()
    status, history = client.get(f"/history/{prompt_id}")
    assert status == 200 and prompt_id in history
    return prompt_id, messages, history[prompt_id]


def test_checkpoint_from_checkpoints_dir_through_the_comfyui_api(
    tmp_path: Path, checkpoints: tuple[Path, Path]
) -> None:
    folder, config = checkpoints
    settings = {
        "checkpoints_dir": str(folder),
        "models": {CKPT: {"config": str(config)}},  # settings for that file, no path
    }
    server: ServerProcess
    with comfy_server(tmp_path / "home", config=settings, demo=config) as (server, client):
        _, info = client.get("/object_info/CheckpointLoaderSimple")
        choices = info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0]
        assert CKPT in choices and "demo" in choices
        assert CKPT in client.get("/models/checkpoints")[1]

        prompt_id, messages, entry = generate(client, CKPT)
        texts = [m for m in messages if isinstance(m, dict)]
        assert [m["type"] for m in texts if m["type"] != "progress_state"][-2:] == [
            "execution_success",
            "executing",
        ]
        steps = [m["data"] for m in texts if m["type"] == "progress"]
        progress = [(d["value"], d["max"]) for d in steps]
        assert progress == [(1, 2), (2, 2)]
        assert entry["status"]["status_str"] == "success"
        (image,) = entry["outputs"]["9"]["images"]
        status, png = client.view(image)
        assert status == 200 and png[:8] == b"\x89PNG\r\n\x1a\n"
        assert Image.open(io.BytesIO(png)).size == (64, 64)

        # The take in the default project names the checkpoint it was made with.
        task_id = entry["takeflow"]["task_id"]
        (take,) = server.ok("GET", "/api/v1/projects/comfyui/takes", params={"task_id": task_id})
        metadata = take["metadata"]
        assert metadata["model"] == CKPT and metadata["comfyui_prompt_id"] == prompt_id
        sampler = next(v for k, v in metadata["inputs"].items() if k.startswith("ksampler"))
        assert sampler["model"] == CKPT

        # The file holds the demo model's weights: the same prompt on "demo" makes the same
        # picture, so the checkpoint's weights (not some other model) made it.
        _, _, demo = generate(client, "demo")
        status, demo_png = client.view(demo["outputs"]["9"]["images"][0])
        assert status == 200
        assert Image.open(io.BytesIO(demo_png)).tobytes() == Image.open(io.BytesIO(png)).tobytes()
