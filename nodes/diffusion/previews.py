"""Cheap live previews: a small PNG from an SD-style latent, without running the VAE."""

from __future__ import annotations

import io
from typing import Any

# A linear latent -> RGB approximation for SD-style 4-channel latents (previews only).
_LATENT_RGB = ((0.298, 0.207, 0.208), (0.187, 0.286, 0.173), (-0.158, 0.189, 0.264),
               (-0.184, -0.271, -0.473))  # fmt: skip


def latent_preview_png(latent: Any, max_side: int = 128) -> bytes:
    """A small PNG from one latent (C, h, w) by a fixed linear map to RGB: cheap, approximate."""
    import numpy as np
    from PIL import Image

    lat = np.asarray(latent, dtype=np.float32)
    if lat.shape[0] == 4:
        rgb = np.einsum("chw,cr->hwr", lat, np.asarray(_LATENT_RGB, dtype=np.float32))
    else:
        rgb = np.moveaxis(lat[:3], 0, -1)
    rgb = np.nan_to_num(rgb)
    lo, hi = float(rgb.min()), float(rgb.max())
    scaled = (rgb - lo) / (hi - lo) if hi > lo else np.zeros_like(rgb)
    image = Image.fromarray((scaled * 255).astype(np.uint8), "RGB")
    image.thumbnail((max_side, max_side))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()
