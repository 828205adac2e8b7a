"""Load a model as a diffusers pipeline on a device, from a folder or a single checkpoint file.

Only local files are read: the hub is forced offline before diffusers is imported and every
call passes ``local_files_only=True``.
"""

from __future__ import annotations

import json
import os
from typing import Any

from nodes.diffusion.models import ModelSpec
from nodes.diffusion.requests import ModelLoadError


def force_hub_offline() -> None:
    """Make huggingface_hub refuse every network request in this process."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import huggingface_hub.constants as hub_constants

    hub_constants.HF_HUB_OFFLINE = True  # read by is_offline_mode() on each request


def dtype_kwargs(dtype: Any) -> dict[str, Any]:
    """``dtype=`` on current diffusers, ``torch_dtype=`` on releases before the rename."""
    from diffusers.pipelines import pipeline_utils

    return {"dtype" if "_resolve_dtype" in dir(pipeline_utils) else "torch_dtype": dtype}


def load_pipeline(spec: ModelSpec, device: str) -> Any:
    """The pipeline for ``spec`` (fp16 on CUDA, fp32 elsewhere), moved to ``device``."""
    force_hub_offline()
    import torch
    from diffusers import DiffusionPipeline
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.disable_progress_bar()
    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    if device.startswith("cuda") and _is_video(spec):
        dtype = torch.bfloat16  # LTX-Video's transformer overflows in float16
    try:
        if spec.format == "single_file":
            pipe = _from_single_file(spec, dtype)
        else:
            pipe = DiffusionPipeline.from_pretrained(
                spec.path, local_files_only=True, **dtype_kwargs(dtype)
            )
        if device != "cpu":  # loaded on the CPU already
            pipe = pipe.to(device)
    except ModelLoadError:
        raise  # already says what is missing, and which field to set
    except Exception as exc:
        raise ModelLoadError(
            f"model '{spec.name}' at '{spec.path}' could not be loaded on {device}: "
            f"{type(exc).__name__}: {exc}",
            model=spec.name,
            path=str(spec.path),
        ) from exc
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _from_single_file(spec: ModelSpec, dtype: Any) -> Any:
    """``<ArchPipeline>.from_single_file`` with a local config folder: no hub access at all."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    if spec.config is None or spec.arch not in PIPELINE_CLASSES:
        raise ModelLoadError(
            f"model '{spec.name}' was not resolved (arch '{spec.arch}', config {spec.config}); "
            "resolve it through the ModelRegistry first",
            model=spec.name,
        )
    # A .ckpt was read with torch.load(weights_only=True) when its arch was detected, and
    # diffusers reads it the same way: pickled code is refused, never run.
    if spec.arch == "ltxv":
        from nodes.diffusion.video_single_file import load_ltxv_single_file

        return load_ltxv_single_file(spec, dtype)
    pipeline_class = {"sd15": StableDiffusionPipeline, "sdxl": StableDiffusionXLPipeline}[spec.arch]
    return pipeline_class.from_single_file(
        str(spec.path), config=str(spec.config), local_files_only=True, **dtype_kwargs(dtype)
    )


PIPELINE_CLASSES = ("sd15", "sdxl", "ltxv")


def _is_video(spec: ModelSpec) -> bool:
    """An LTX-Video model: a single file of that arch, or a folder whose pipeline is LTX's."""
    if spec.format == "single_file":
        return spec.arch == "ltxv"
    try:
        index = json.loads((spec.path / "model_index.json").read_text())
    except (OSError, ValueError):
        return False
    return str(index.get("_class_name", "")).startswith("LTX")
