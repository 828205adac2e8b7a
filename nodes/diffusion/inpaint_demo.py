"""The demo inpainting model: the tiny random-weight demo pipeline with a 9-channel UNet.

An inpainting checkpoint's UNet takes 9 channels (4 noisy latents, 1 mask, 4 latents of the
masked image); this builds one with random weights, saved as a diffusers
``StableDiffusionInpaintPipeline`` folder, and registers it as ``demo-inpaint`` (labelled demo).
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

from nodes.diffusion.config import EditableConfig
from nodes.diffusion.demo import (
    _MARKER,
    DEMO_MODEL,
    _configs,
    build_random_pipeline,
    read_marker,
    register_model,
)
from nodes.diffusion.demo import (
    _is_current as _demo_current,
)

DEMO_INPAINT_MODEL = "demo-inpaint"
DEMO_INPAINT_LABEL = (
    "Demo inpainting model (tiny, random weights, 9-channel UNet: noise-like images, not pictures)"
)
DEMO_INPAINT_REVISION = 1


def build_random_inpaint_pipeline(folder: Path, seed: int = 0, base: Path | None = None) -> Path:
    """A tiny ``StableDiffusionInpaintPipeline`` (9-channel UNet) with random weights, saved as
    a diffusers folder; ``base``: a built tiny demo folder to take the other parts from."""
    import torch
    from diffusers import UNet2DConditionModel

    work = folder.parent / f".{folder.name}.{uuid.uuid4().hex[:8]}"
    if base is not None:
        shutil.copytree(base, work)
    else:
        build_random_pipeline(work, "tiny", seed)
    torch.manual_seed(seed + 1)
    unet = UNet2DConditionModel(**{**_configs("tiny")["unet"], "in_channels": 9})
    shutil.rmtree(work / "unet")
    unet.save_pretrained(work / "unet", safe_serialization=True)  # type: ignore[attr-defined]
    index = json.loads((work / "model_index.json").read_text())
    index["_class_name"] = "StableDiffusionInpaintPipeline"
    (work / "model_index.json").write_text(json.dumps(index, indent=2))
    marker = json.loads((work / _MARKER).read_text())
    marker.update(inpaint=True, inpaint_revision=DEMO_INPAINT_REVISION)
    (work / _MARKER).write_text(json.dumps(marker))
    if folder.exists():
        shutil.rmtree(folder)
    work.rename(folder)
    return folder


def _is_current(folder: Path) -> bool:
    return read_marker(folder).get("inpaint_revision") == DEMO_INPAINT_REVISION


def ensure_demo_inpaint_model(home: EditableConfig) -> Path:
    """Build ``<home>/models/demo-inpaint`` if missing and register it as "demo-inpaint"."""
    folder = home.path / "models" / DEMO_INPAINT_MODEL
    if not _is_current(folder):
        demo = home.path / "models" / DEMO_MODEL
        build_random_inpaint_pipeline(folder, base=demo if _demo_current(demo) else None)
    current = (home.config().get("models") or {}).get(DEMO_INPAINT_MODEL)
    if not current or Path(current.get("path", "")) != folder or not current.get("demo"):
        register_model(home, DEMO_INPAINT_MODEL, folder, demo=True, label=DEMO_INPAINT_LABEL)
    return folder
