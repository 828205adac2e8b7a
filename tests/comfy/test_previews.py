"""Live previews over the ComfyUI socket: the feature_flags handshake, event-4 frames with their
metadata, JPEG at the preview size, latent2rgb and TAESD, and extra_data.preview_method."""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from nodes.diffusion.previews import build_taesd_decoder
from tests.comfy.client import ComfyClient, of_prompt, recv, txt2img, until_done
from tests.comfy.conftest import comfy_server
from tests.server.harness import ServerProcess

PREVIEW_SIZE = 32  # the images are 64x64: previews are made smaller


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, demo_model_dir: Path
) -> Iterator[tuple[ServerProcess, ComfyClient]]:
    home = tmp_path_factory.mktemp("previews") / "home"
    approx = home / "models" / "vae_approx"
    approx.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(build_taesd_decoder().state_dict(), approx / "taesd_decoder.pth")
    config = {"diffusion": {"preview_every": 1, "batch_window_ms": 0,
                            "preview_size": PREVIEW_SIZE}}  # fmt: skip
    with comfy_server(home, config=config, demo=demo_model_dir) as pair:
        yield pair


def _run(client: ComfyClient, client_id: str, flags: dict[str, Any] | None = None,
         seed: int = 3, **extra: Any) -> tuple[list[Any], list[Any]]:  # fmt: skip
    """Queue a 3-step prompt on a fresh socket; (the flags answer or [], the prompt's messages)."""
    ws = client.connect(client_id)
    try:
        assert recv(ws)["type"] == "status"  # type: ignore[index]
        answers: list[Any] = []
        if flags is not None:
            ws.send(json.dumps({"type": "feature_flags", "data": flags}))
            answers.append(recv(ws))
        body = {"prompt": txt2img(seed=seed, steps=3), "client_id": client_id, "extra_data": extra}
        status, answer = client.post("/prompt", body)
        assert status == 200, answer
        return answers, of_prompt(until_done(ws, answer["prompt_id"]), answer["prompt_id"])
    finally:
        ws.close()


def _jpeg(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    assert image.format == "JPEG"
    return image


def test_a_client_with_preview_metadata_gets_event_4_frames_naming_the_node(
    server: tuple[ServerProcess, ComfyClient],
) -> None:
    _, client = server
    answers, messages = _run(client, "meta", {"supports_preview_metadata": True},
                             preview_method="latent2rgb")  # fmt: skip
    assert answers[0]["type"] == "feature_flags"
    assert answers[0]["data"]["supports_preview_metadata"] is True
    frames = [m for m in messages if isinstance(m, bytes)]
    assert len(frames) == 2  # steps 1 and 2 of 3 (none on the last)
    prompt_id = next(m["data"]["prompt_id"] for m in messages if isinstance(m, dict))
    for frame in frames:
        event, length = struct.unpack(">II", frame[:8])
        metadata = json.loads(frame[8 : 8 + length])
        assert event == 4
        assert metadata["node_id"] == metadata["display_node_id"] == "3"
        assert metadata["prompt_id"] == prompt_id and metadata["image_type"] == "image/jpeg"
        assert _jpeg(frame[8 + length :]).size == (PREVIEW_SIZE, PREVIEW_SIZE)
    states = [m["data"]["nodes"] for m in messages
              if isinstance(m, dict) and m["type"] == "progress_state"]  # fmt: skip
    assert any(s.get("3", {}).get("state") == "running" and s["3"]["max"] == 3 for s in states)
    assert states[-1]["3"]["state"] == "finished" and states[-1]["9"]["state"] == "finished"


def test_other_clients_get_event_1_jpegs_and_preview_method_none_sends_none(
    server: tuple[ServerProcess, ComfyClient],
) -> None:
    _, client = server
    # (other seeds than the first test's: a cached result makes no previews)
    _, plain = _run(client, "plain", seed=4, preview_method="latent2rgb")
    frames = [m for m in plain if isinstance(m, bytes)]
    assert [struct.unpack(">II", f[:8]) for f in frames] == [(1, 1), (1, 1)]  # preview, JPEG
    latent2rgb = _jpeg(frames[0][8:])
    assert latent2rgb.size == (PREVIEW_SIZE, PREVIEW_SIZE)
    _, taesd = _run(client, "taesd", seed=5, preview_method="taesd")
    taesd_frames = [m for m in taesd if isinstance(m, bytes)]
    assert len(taesd_frames) == 2
    # decoded by the TAESD file in vae_approx (tests/nodes/test_previews.py: that it differs)
    assert all(_jpeg(f[8:]).size == (PREVIEW_SIZE, PREVIEW_SIZE) for f in taesd_frames)
    _, silent = _run(client, "silent", seed=6, preview_method="none")
    assert not [m for m in silent if isinstance(m, bytes)]
    assert [m["type"] for m in silent if isinstance(m, dict)][-2:] == [
        "execution_success",
        "executing",
    ]


def test_an_unknown_preview_method_is_refused(server: tuple[ServerProcess, ComfyClient]) -> None:
    _, client = server
    body = {"prompt": txt2img(), "extra_data": {"preview_method": "fancy"}}
    status, answer = client.post("/prompt", body)
    assert status == 400
    assert "extra_data.preview_method" in answer["error"]["message"]
    assert "'latent2rgb'" in answer["error"]["message"]
