"""ComfyUI's LoadImage decodes through ``load_asset``: a decompression bomb in the ComfyUI
input folder fails its prompt with ``image_too_large`` and makes no take (issue 19, F4)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.comfy.client import ComfyClient, of_prompt, until_done
from tests.comfy.conftest import comfy_server
from tests.security.images import png_bomb
from tests.server.harness import ServerProcess

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def comfy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, ComfyClient]]:
    from nodes.diffusion.demo import build_random_pipeline

    demo = build_random_pipeline(tmp_path_factory.mktemp("demo") / "demo", "tiny", seed=0)
    home: Path = tmp_path_factory.mktemp("comfy-bomb") / "home"
    with comfy_server(home, demo=demo) as pair:
        yield pair


def test_an_uploaded_bomb_is_refused_and_not_stored(
    comfy: tuple[ServerProcess, ComfyClient],
) -> None:
    server, client = comfy
    status, body = client.upload("upbomb.png", png_bomb())
    assert (status, body["code"], body["field"]) == (413, "image_too_large", "image"), body
    assert "12000x12000" in body["message"]
    assert not list((server.home / "comfyui").rglob("upbomb*"))


def test_load_image_of_a_bomb_fails_its_prompt_without_a_take(
    comfy: tuple[ServerProcess, ComfyClient],
) -> None:
    server, client = comfy
    inputs = server.home / "comfyui" / "input"  # put there by hand, past the upload check
    inputs.mkdir(parents=True, exist_ok=True)
    (inputs / "bomb.png").write_bytes(png_bomb())
    prompt = {
        "10": {"class_type": "LoadImage", "inputs": {"image": "bomb.png"}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["10", 0],
                                                     "filename_prefix": "bomb"}},
    }  # fmt: skip
    client_id = uuid.uuid4().hex
    ws = client.connect(client_id)
    try:
        prompt_id = client.queue_prompt(prompt, client_id)["prompt_id"]
        messages = of_prompt(until_done(ws, prompt_id), prompt_id)
    finally:
        ws.close()
    errors = [m for m in messages if isinstance(m, dict) and m["type"] == "execution_error"]
    assert errors, messages
    assert "12000x12000" in errors[0]["data"]["exception_message"], errors[0]
    _, history = client.get(f"/history/{prompt_id}")
    assert history[prompt_id]["status"]["status_str"] == "error"
    takes = server.http.get("/api/v1/projects/comfyui/takes")
    assert takes.status_code in (200, 404)
    assert takes.status_code == 404 or takes.json() == []
