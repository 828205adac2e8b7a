"""Cheap live previews of a latent while it is denoised, as JPEG at a preview size.

Methods (ComfyUI's names): ``latent2rgb`` maps the latent's channels to RGB with a fixed linear
map per architecture (no weights, about a millisecond); ``taesd`` decodes the latent with TAESD's
tiny decoder when its file (``taesd_decoder.*`` for SD 1.5, ``taesdxl_decoder.*`` for SDXL) is in
the ``vae_approx`` model folder; ``auto`` is TAESD where its decoder is there, else latent2rgb;
``none`` sends no previews. A preview is at most ``preview_size`` pixels on its long side and
never larger than the image being made.
"""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

PREVIEW_METHODS = ("auto", "latent2rgb", "taesd", "none")
JPEG_QUALITY = 85

# Least-squares linear maps from 4-channel latents to RGB in [-1, 1], published by the community
# for each VAE (SD 1.5: Birch-san's fit; SDXL: its VAE's own fit): (channel -> rgb) and a bias.
_Rgb = tuple[float, float, float]
_LATENT_RGB: dict[str, tuple[tuple[_Rgb, ...], _Rgb]] = {
    "sd15": (((0.298, 0.207, 0.208), (0.187, 0.286, 0.173), (-0.158, 0.189, 0.264),
              (-0.184, -0.271, -0.473)), (0.0, 0.0, 0.0)),
    "sdxl": (((0.3651, 0.4232, 0.4341), (-0.2533, -0.0042, 0.1068), (0.1076, 0.1111, -0.0362),
              (-0.3165, -0.2492, -0.2188)), (0.1084, -0.0175, -0.0011)),
}  # fmt: skip
_TAESD_FILES = {"sd15": "taesd_decoder", "sdxl": "taesdxl_decoder"}


def preview_size_for(width: int, height: int, preview_size: int) -> tuple[int, int]:
    """The preview's size: the image's aspect, at most ``preview_size`` on the long side."""
    scale = min(1.0, preview_size / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def latent_to_rgb(latent: Any, arch: str = "sd15") -> Any:
    """An (h, w, 3) uint8 array from one latent (C, h, w) by the arch's linear map."""
    import numpy as np

    lat = np.nan_to_num(np.asarray(latent, dtype=np.float32))
    if lat.shape[0] == 4:
        factors, bias = _LATENT_RGB.get(arch, _LATENT_RGB["sd15"])
        rgb = np.einsum("chw,cr->hwr", lat, np.asarray(factors, dtype=np.float32))
        rgb += np.asarray(bias, dtype=np.float32)
        return (np.clip((rgb + 1.0) / 2.0, 0.0, 1.0) * 255).astype(np.uint8)
    rgb = np.moveaxis(lat[:3], 0, -1)  # not an SD latent: show its first channels, stretched
    lo, hi = float(rgb.min()), float(rgb.max())
    scaled = (rgb - lo) / (hi - lo) if hi > lo else np.zeros_like(rgb)
    return (scaled * 255).astype(np.uint8)


def encode_jpeg(rgb: Any, size: tuple[int, int]) -> bytes:
    """An (h, w, 3) uint8 array as a JPEG of ``size`` (width, height)."""
    from PIL import Image

    image = Image.fromarray(rgb, "RGB")
    if image.size != size:
        image = image.resize(size, Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


def latent_preview_jpeg(latent: Any, size: tuple[int, int], arch: str = "sd15") -> bytes:
    """The latent2rgb preview of one latent as a JPEG of ``size``."""
    return encode_jpeg(latent_to_rgb(latent, arch), size)


def latent_preview_png(latent: Any, max_side: int = 128) -> bytes:
    """A small PNG from one latent (kept for callers that want PNG thumbnails)."""
    from PIL import Image

    image = Image.fromarray(latent_to_rgb(latent), "RGB")
    image.thumbnail((max_side, max_side))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


# -- TAESD ----------------------------------------------------------------------------------------


def build_taesd_decoder() -> Any:
    """TAESD's decoder (4 latent channels -> RGB at 8x), as described by its author (MIT):
    clamp, conv, then three stages of three residual blocks each followed by a 2x upsample and
    a conv, one more block and an output conv. Its ``state_dict`` keys match the published
    ``taesd_decoder.pth`` files (``1.weight``, ``3.conv.0.weight``, ...)."""
    import torch
    from torch import nn

    class Clamp(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.tanh(x / 3) * 3

    class Block(nn.Module):
        def __init__(self, n_in: int, n_out: int) -> None:
            super().__init__()
            self.conv = nn.Sequential(
                nn.Conv2d(n_in, n_out, 3, padding=1), nn.ReLU(),
                nn.Conv2d(n_out, n_out, 3, padding=1), nn.ReLU(),
                nn.Conv2d(n_out, n_out, 3, padding=1),
            )  # fmt: skip
            self.skip = nn.Conv2d(n_in, n_out, 1, bias=False) if n_in != n_out else nn.Identity()
            self.fuse = nn.ReLU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fuse(self.conv(x) + self.skip(x))

    c = 64
    layers: list[nn.Module] = [Clamp(), nn.Conv2d(4, c, 3, padding=1), nn.ReLU()]
    for _ in range(3):
        layers += [Block(c, c), Block(c, c), Block(c, c), nn.Upsample(scale_factor=2),
                   nn.Conv2d(c, c, 3, padding=1, bias=False)]  # fmt: skip
    layers += [Block(c, c), nn.Conv2d(c, 3, 3, padding=1)]
    return nn.Sequential(*layers)


class TaesdDecoders:
    """TAESD decoders from the ``vae_approx`` folder, loaded once per file and arch."""

    def __init__(self, folder: Callable[[], Path]) -> None:
        self._folder = folder
        self._loaded: dict[tuple[str, int], Any] = {}
        self._lock = threading.Lock()

    def find(self, arch: str) -> Path | None:
        stem = _TAESD_FILES.get(arch)
        root = self._folder()
        if stem is None or not root.is_dir():
            return None
        for suffix in (".safetensors", ".pth", ".pt"):
            if (root / f"{stem}{suffix}").is_file():
                return root / f"{stem}{suffix}"
        return None

    def decoder(self, arch: str) -> Any | None:
        path = self.find(arch)
        if path is None:
            return None
        key = (str(path), path.stat().st_mtime_ns)
        with self._lock:
            if key not in self._loaded:
                from nodes.diffusion.folders import load_weights

                model = build_taesd_decoder()
                model.load_state_dict(load_weights(path))
                self._loaded[key] = model.eval()
            return self._loaded[key]

    def preview(self, latent: Any, arch: str, size: tuple[int, int]) -> bytes | None:
        """The TAESD preview of one latent, or None where no decoder file is there."""
        decoder = self.decoder(arch)
        if decoder is None:
            return None
        import torch

        with torch.no_grad():
            x = torch.as_tensor(latent, dtype=torch.float32).unsqueeze(0)
            rgb = decoder(x)[0].clamp(0, 1).permute(1, 2, 0).mul(255).byte().numpy()
        return encode_jpeg(rgb, size)


class Previewer:
    """Makes one preview by a request's method; a failure switches previews off, logged."""

    def __init__(self, taesd: TaesdDecoders, preview_size: int) -> None:
        self.taesd = taesd
        self.preview_size = preview_size

    def wants_latents(self, method: str) -> bool:
        return method != "none"

    def make(self, latent: Any, arch: str, method: str, width: int, height: int) -> bytes | None:
        if method == "none":
            return None
        size = preview_size_for(width, height, self.preview_size)
        if method in ("taesd", "auto"):
            found = self.taesd.preview(latent, arch, size)
            if found is not None:
                return found
            if method == "taesd":
                log.info("no TAESD decoder for %s in vae_approx: latent2rgb preview", arch)
        return latent_preview_jpeg(latent, size, arch)
