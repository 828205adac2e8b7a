"""Upscale with a model: ESRGAN-family files from the ``upscale_models`` folder, run in tiles.

The file is read with ``load_weights`` (safetensors, or a pickle with ``weights_only=True``) and
its architecture and scale come from its keys (``upscale_arch.detect``). The image is cut into
tiles of ``tile`` input pixels, each run with ``overlap`` pixels of context on every side; the
tiles' outputs overlap by half the context and are blended with linear ramps there. So memory
stays bounded by one tile, and with an overlap of at least twice the network's receptive radius
the result equals an untiled run up to float rounding. Progress is reported per tile.

torch is imported on first use, never when this module is imported.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from graph_runtime.services import require_service
from graph_runtime.templates import (
    FunctionTemplate,
    InputSpec,
    OutputSpec,
    PortType,
    ProgressReporter,
    ResourceHints,
)
from nodes.diffusion.demo import wait_for_demo_model
from nodes.diffusion.folders import ModelFile, load_weights
from nodes.diffusion.service import DIFFUSION
from nodes.diffusion.upscale_demo import DEMO_UPSCALE_MODEL, KIND
from nodes.images import check_image_size

if TYPE_CHECKING:
    from PIL import Image
    from torch import Tensor

    from nodes.diffusion.upscale_arch import UpscaleNetwork

_KEEP_LOADED = 2  # upscale networks kept on their device (most recently used)

_lock = threading.Lock()  # one upscale at a time per process: memory stays one tile's
_loaded: OrderedDict[tuple[tuple[str, int, int], str], UpscaleNetwork] = OrderedDict()


def load_network(file: ModelFile, device: str = "cpu") -> UpscaleNetwork:
    """The network of an upscale model file on ``device``, cached by path, size and mtime."""
    from nodes.diffusion.upscale_arch import detect

    key = (file.fingerprint(), device)
    with _lock:
        found = _loaded.get(key)
        if found is not None:
            _loaded.move_to_end(key)
            return found
    network = detect(load_weights(file.path))
    network.module.to(device)
    with _lock:
        _loaded[key] = network
        while len(_loaded) > _KEEP_LOADED:
            _loaded.popitem(last=False)
    return network


def tile_count(width: int, height: int, tile: int, multiple: int = 1) -> int:
    """How many tiles ``upscale_tensor`` runs for an image of ``width`` x ``height``."""
    tile = max(multiple, tile - tile % multiple)
    return _count(-(-height // multiple) * multiple, tile) * _count(
        -(-width // multiple) * multiple, tile
    )


def _count(size: int, tile: int) -> int:
    return 1 if tile >= size else math.ceil(size / tile)


def _spans(size: int, tile: int) -> list[tuple[int, int]]:
    """Tile cores along one side: (start, end), covering ``size``."""
    if tile >= size:
        return [(0, size)]
    return [(a, min(a + tile, size)) for a in range(0, size, tile)]


def _ramp(size: int, start: int, end: int, lo: int, hi: int, band: int) -> Tensor:
    """Blend weights over ``[lo, hi)`` for the core ``[start, end)`` of a side of ``size``:
    linear ramps of ``2 * band`` pixels centred on the core's inner edges, 1 elsewhere."""
    import torch

    pos = torch.arange(lo, hi, dtype=torch.float32) + 0.5
    weight = torch.ones(hi - lo)
    if band > 0 and start > 0:
        weight = torch.minimum(weight, (pos - (start - band)) / (2 * band))
    if band > 0 and end < size:
        weight = torch.minimum(weight, ((end + band) - pos) / (2 * band))
    return weight.clamp(min=0.0)


def upscale_tensor(
    network: UpscaleNetwork,
    pixels: Tensor,
    tile: int,
    overlap: int,
    on_tile: Callable[[int, int], None] | None = None,
) -> Tensor:
    """Upscale ``pixels`` (1 x C x H x W, 0..1, on the network's device) in tiles of ``tile``
    input pixels with ``overlap`` pixels of context; ``on_tile(done, total)`` after each."""
    import torch
    from torch.nn import functional as F

    m, s = network.multiple, network.scale
    _, channels, height, width = pixels.shape
    pad_h, pad_w = (-height) % m, (-width) % m
    if pad_h or pad_w:
        pixels = F.pad(pixels, (0, pad_w, 0, pad_h), mode="replicate")
    full_h, full_w = pixels.shape[-2:]
    tile = max(m, tile - tile % m)
    overlap = -(-overlap // m) * m
    band = min(overlap // 2 // m * m, tile // 2 // m * m)
    rows, cols = _spans(full_h, tile), _spans(full_w, tile)
    total = len(rows) * len(cols)
    out = torch.zeros(1, channels, full_h * s, full_w * s, device=pixels.device)
    weights = torch.zeros(1, 1, full_h * s, full_w * s, device=pixels.device)
    done = 0
    for top, bottom in rows:
        for left, right in cols:
            # the region blended into the output, and the (larger) region the net sees
            y0, y1 = max(0, top - band), min(full_h, bottom + band)
            x0, x1 = max(0, left - band), min(full_w, right + band)
            iy0, iy1 = max(0, top - overlap), min(full_h, bottom + overlap)
            ix0, ix1 = max(0, left - overlap), min(full_w, right + overlap)
            with torch.inference_mode():
                result = network.module(pixels[:, :, iy0:iy1, ix0:ix1])
            part = result[:, :, (y0 - iy0) * s : (y1 - iy0) * s, (x0 - ix0) * s : (x1 - ix0) * s]
            wy = _ramp(full_h, top, bottom, y0, y1, band).repeat_interleave(s)
            wx = _ramp(full_w, left, right, x0, x1, band).repeat_interleave(s)
            weight = (wy[:, None] * wx[None, :]).to(pixels.device)[None, None]
            out[:, :, y0 * s : y1 * s, x0 * s : x1 * s] += part * weight
            weights[:, :, y0 * s : y1 * s, x0 * s : x1 * s] += weight
            done += 1
            if on_tile is not None:
                on_tile(done, total)
    out = out / weights.clamp(min=1e-8)
    return out[:, :, : height * s, : width * s].clamp(0.0, 1.0)


def upscale_image(
    network: UpscaleNetwork,
    image: Image.Image,
    tile: int,
    overlap: int,
    device: str = "cpu",
    on_tile: Callable[[int, int], None] | None = None,
) -> Image.Image:
    """``image`` upscaled by the network's scale (an alpha channel is resized alongside)."""
    import numpy as np
    import torch
    from PIL import Image

    s = network.scale
    check_image_size(image.width * s, image.height * s)
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    pixels = torch.from_numpy(rgb).permute(2, 0, 1)[None].to(device)
    with _lock:
        out = upscale_tensor(network, pixels, tile, overlap, on_tile)
    array = (out[0].permute(1, 2, 0).cpu().numpy() * 255.0).round().astype(np.uint8)
    result = Image.fromarray(array, "RGB")
    if image.mode in ("RGBA", "LA"):
        alpha = image.getchannel("A").resize(result.size, Image.Resampling.BICUBIC)
        result.putalpha(alpha)
    return result


def upscale_with_model(ctx: ProgressReporter, inputs: Mapping[str, Any]) -> dict[str, Any]:
    service = require_service(ctx.services, DIFFUSION)
    folders = service.models.folders
    wait_for_demo_model(service.models.home)  # `serve --demo` writes the demo upscale model too
    file = folders.resolve(KIND, str(inputs["upscale_model"]))
    device = service.device
    ctx.progress(0.0, "loading", f"loading upscale model '{file.name}'")
    network = load_network(file, device)
    image: Image.Image = inputs["image"]
    tile, overlap = int(inputs["tile"]), int(inputs["overlap"])

    def on_tile(done: int, total: int) -> None:
        ctx.progress(done / total, "upscaling", f"tile {done} of {total}")

    ctx.check_cancelled()
    result = upscale_image(network, image, tile, overlap, device, on_tile)
    ctx.record_metadata(
        upscale_model={**folders.describe(file), **network.describe()},
        upscale={"tile": tile, "overlap": overlap, "tiles": tile_count(
            image.width, image.height, tile, network.multiple), "device": device},
    )  # fmt: skip
    return {"image": result}


T = PortType

TEMPLATES: tuple[FunctionTemplate, ...] = (
    FunctionTemplate(
        id="upscale_with_model",
        version="1.0.0",
        name="Upscale with model",
        category="image",
        description="Enlarge an image with an ESRGAN-family model (ESRGAN, Real-ESRGAN, "
        "Real-ESRGAN compact) from the upscale_models folder, in tiles.",
        inputs=(
            InputSpec("image", T.IMAGE, "the image to enlarge", required=True),
            InputSpec(
                "upscale_model",
                T.TEXT,
                "file name in the upscale_models folder",
                default=DEMO_UPSCALE_MODEL,
            ),
            InputSpec(
                "tile",
                T.INTEGER,
                "tile size in input pixels (memory use follows it)",
                default=512,
                minimum=16,
                maximum=4096,
            ),
            InputSpec(
                "overlap",
                T.INTEGER,
                "context pixels around each tile; seams are blended",
                default=32,
                minimum=0,
                maximum=512,
            ),
        ),
        outputs=(OutputSpec("image", T.IMAGE, "the image, scale times larger"),),
        fn=upscale_with_model,
        resources=ResourceHints(gpu=True, vram_gb=1.0),
        requires=(DIFFUSION.name,),
    ),
)
