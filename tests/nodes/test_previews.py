"""Preview making: latent2rgb per arch as JPEG at the preview size, TAESD from its file, and
the preview method kept out of the node cache key."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from graph_runtime.caching import node_cache_keys
from graph_runtime.canvas import CanvasGraph
from graph_runtime.validation import validate_graph
from nodes.diffusion.previews import (
    Previewer,
    TaesdDecoders,
    build_taesd_decoder,
    latent_preview_jpeg,
    preview_size_for,
)


def test_preview_size_keeps_the_aspect_and_never_grows() -> None:
    assert preview_size_for(1024, 512, 512) == (512, 256)
    assert preview_size_for(64, 64, 512) == (64, 64)


def test_latent2rgb_maps_each_arch_to_a_jpeg_of_the_size() -> None:
    latent = np.random.default_rng(0).standard_normal((4, 8, 12)).astype(np.float32)
    sd15, sdxl = (latent_preview_jpeg(latent, (96, 64), arch) for arch in ("sd15", "sdxl"))
    images = [Image.open(io.BytesIO(data)) for data in (sd15, sdxl)]
    assert all(i.format == "JPEG" and i.size == (96, 64) for i in images)
    assert images[0].tobytes() != images[1].tobytes()  # each VAE has its own map


def test_taesd_decoder_file_layout_and_auto(tmp_path: Path) -> None:
    torch.manual_seed(0)
    state = build_taesd_decoder().state_dict()
    assert {"1.weight", "3.conv.0.weight", "3.conv.4.weight", "7.weight", "19.weight"} <= set(
        state
    )  # the published taesd_decoder.pth keys
    decoders = TaesdDecoders(lambda: tmp_path)
    previewer = Previewer(decoders, preview_size=64)
    latent = np.zeros((4, 8, 8), dtype=np.float32)
    without = previewer.make(latent, "sd15", "auto", 64, 64)
    torch.save(state, tmp_path / "taesd_decoder.pth")
    assert decoders.find("sd15") == tmp_path / "taesd_decoder.pth"
    assert decoders.find("sdxl") is None  # taesdxl_decoder.* is SDXL's
    with_taesd = previewer.make(latent, "sd15", "auto", 64, 64)
    assert with_taesd is not None and without is not None and with_taesd != without
    assert Image.open(io.BytesIO(with_taesd)).size == (64, 64)
    assert previewer.make(latent, "sd15", "none", 64, 64) is None


def test_the_preview_method_is_not_part_of_the_cache_key() -> None:
    from graph_runtime.registry import TemplateRegistry

    registry = TemplateRegistry.discover()

    def key(method: str) -> str | None:
        graph = CanvasGraph.model_validate({
            "nodes": [{"id": "g", "template": "image_generation", "inputs": {
                "prompt": {"kind": "literal", "value": "x"},
                "seed": {"kind": "literal", "value": 1},
                "preview_method": {"kind": "literal", "value": method},
            }}],
        })  # fmt: skip
        return node_cache_keys(validate_graph(graph, registry), {})["g"]

    assert key("none") == key("latent2rgb") is not None
