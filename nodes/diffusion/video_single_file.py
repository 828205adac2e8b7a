"""LTX-Video single files: tell them by their keys, generate their config folder, load them.

A published LTX-Video checkpoint (``ltx-video-2b-v0.9.safetensors`` and the like, as ComfyUI
loads them) holds the transformer (``model.diffusion_model.*`` or bare ``patchify_proj`` /
``transformer_blocks.*`` keys) and the VAE (``vae.*``), but no text encoder. Takeflow loads the
two from the file with diffusers' ``from_single_file`` against a local config folder, never the
hub: the entry's ``config``, or the one generated here under ``<home>/models/.configs/ltxv/``
(the published LTX-Video 0.9.0 2B shapes). The T5 text encoder and its tokenizer come from a
diffusers folder holding ``text_encoder/`` and ``tokenizer/``: the entry's ``text_encoder``, else
its ``config`` folder.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nodes.diffusion.models import ModelSpec

LTXV = "ltxv"
VIDEO_ARCHS = (LTXV,)
_TRANSFORMER_MARKERS = ("model.diffusion_model.patchify_proj.weight", "patchify_proj.weight")
# Keys only later releases have: 0.9.1+ (timestep-conditioned VAE decoder), 13B (48 blocks).
_NEWER_MARKERS = ("vae.decoder.last_scale_shift_table", "transformer_blocks.47.")

# The published LTX-Video 0.9.0 (2B) configs: diffusers' class defaults are these values.
LTXV_CONFIG: dict[str, Any] = {
    "model_index": {
        "_class_name": "LTXPipeline",
        "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
        "text_encoder": ["transformers", "T5EncoderModel"],
        "tokenizer": ["transformers", "T5Tokenizer"],
        "transformer": ["diffusers", "LTXVideoTransformer3DModel"],
        "vae": ["diffusers", "AutoencoderKLLTXVideo"],
    },
    "transformer": {
        "_class_name": "LTXVideoTransformer3DModel",
        "in_channels": 128,
        "out_channels": 128,
        "patch_size": 1,
        "patch_size_t": 1,
        "num_attention_heads": 32,
        "attention_head_dim": 64,
        "cross_attention_dim": 2048,
        "num_layers": 28,
        "activation_fn": "gelu-approximate",
        "qk_norm": "rms_norm_across_heads",
        "norm_elementwise_affine": False,
        "norm_eps": 1e-6,
        "caption_channels": 4096,
        "attention_bias": True,
        "attention_out_bias": True,
    },
    "vae": {
        "_class_name": "AutoencoderKLLTXVideo",
        "in_channels": 3,
        "out_channels": 3,
        "latent_channels": 128,
        "block_out_channels": [128, 256, 512, 512],
        "decoder_block_out_channels": [128, 256, 512, 512],
        "layers_per_block": [4, 3, 3, 3, 4],
        "decoder_layers_per_block": [4, 3, 3, 3, 4],
        "spatio_temporal_scaling": [True, True, True, False],
        "decoder_spatio_temporal_scaling": [True, True, True, False],
        "decoder_inject_noise": [False, False, False, False, False],
        "upsample_residual": [False, False, False, False],
        "upsample_factor": [1, 1, 1, 1],
        "timestep_conditioning": False,
        "patch_size": 4,
        "patch_size_t": 1,
        "resnet_norm_eps": 1e-6,
        "scaling_factor": 1.0,
        "encoder_causal": True,
        "decoder_causal": False,
    },
    "scheduler": {
        "_class_name": "FlowMatchEulerDiscreteScheduler",
        "num_train_timesteps": 1000,
        "shift": 1.0,
        "use_dynamic_shifting": True,
        "base_shift": 0.95,
        "max_shift": 2.05,
        "base_image_seq_len": 1024,
        "max_image_seq_len": 4096,
        "shift_terminal": 0.1,
    },
}


def is_ltxv(keys: Collection[str]) -> bool:
    """Whether a checkpoint's keys are LTX-Video's transformer layout."""
    return any(k in keys for k in _TRANSFORMER_MARKERS)


def write_video_arch_config(arch: str, folder: Path, marker: dict[str, Any], name: str) -> Path:
    """Write the config folder for a video ``arch`` into ``folder`` (replacing it); ``marker``
    is written as ``name`` so the folder is known to be current."""
    if arch != LTXV:
        raise ValueError(f"no generated config for video arch '{arch}'")
    work = folder.parent / f".{folder.name}.{uuid.uuid4().hex[:8]}"
    try:
        work.mkdir(parents=True)
        files = {
            "model_index.json": LTXV_CONFIG["model_index"],
            "transformer/config.json": LTXV_CONFIG["transformer"],
            "vae/config.json": LTXV_CONFIG["vae"],
            "scheduler/scheduler_config.json": LTXV_CONFIG["scheduler"],
            name: marker,
        }
        for rel, data in files.items():
            (work / rel).parent.mkdir(parents=True, exist_ok=True)
            (work / rel).write_text(json.dumps(data, indent=2))
        if folder.exists():
            shutil.rmtree(folder)
        work.rename(folder)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return folder


def load_ltxv_single_file(spec: ModelSpec, dtype: Any) -> Any:
    """An ``LTXPipeline``: transformer and VAE from the file, the rest from local folders."""
    from diffusers import (
        AutoencoderKLLTXVideo,
        FlowMatchEulerDiscreteScheduler,
        LTXPipeline,
        LTXVideoTransformer3DModel,
    )
    from transformers import AutoTokenizer, T5EncoderModel

    from nodes.diffusion.checkpoints import safetensors_keys
    from nodes.diffusion.loading import dtype_kwargs
    from nodes.diffusion.requests import ModelLoadError

    assert spec.config is not None  # resolved by the registry
    generated = spec.config.parent.name == ".configs"
    keys = safetensors_keys(spec.path) if spec.path.suffix == ".safetensors" else []
    if generated and any(k.startswith(m) or m in k for k in keys for m in _NEWER_MARKERS):
        raise ModelLoadError(
            f"model '{spec.name}': '{spec.path}' is a later LTX-Video release (0.9.1+ or 13B) "
            'than the generated config (0.9.0, 2B); set "config" to a diffusers LTX-Video '
            "folder of its version (configs alone suffice)",
            model=spec.name,
            field="config",
        )
    words = spec.text_encoder or spec.config
    if not (words / "text_encoder" / "config.json").is_file() or not (words / "tokenizer").is_dir():
        raise ModelLoadError(
            f"model '{spec.name}': an LTX-Video single file holds no text encoder; set "
            '"text_encoder" to a diffusers folder with text_encoder/ and tokenizer/ (the T5 '
            f"of an LTX-Video download); '{words}' has none",
            model=spec.name,
            field="text_encoder",
        )
    path, config = str(spec.path), str(spec.config)
    common = {"config": config, "local_files_only": True, **dtype_kwargs(dtype)}
    transformer = LTXVideoTransformer3DModel.from_single_file(path, subfolder="transformer",
                                                              **common)  # fmt: skip
    vae = AutoencoderKLLTXVideo.from_single_file(path, subfolder="vae", **common)
    return LTXPipeline(
        transformer=transformer,
        vae=vae,
        scheduler=FlowMatchEulerDiscreteScheduler.from_pretrained(config, subfolder="scheduler"),
        text_encoder=T5EncoderModel.from_pretrained(
            words, subfolder="text_encoder", local_files_only=True, dtype=dtype
        ),
        tokenizer=AutoTokenizer.from_pretrained(
            words, subfolder="tokenizer", local_files_only=True
        ),
    )
