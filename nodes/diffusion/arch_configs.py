"""Config folders for single-file checkpoints, generated offline per architecture.

``from_single_file`` needs a diffusers folder of configs (no weights) to know each component's
shape; without one it reaches for the hub. Takeflow writes that folder itself, once per arch,
under ``<home>/models/.configs/<arch>/``: ``model_index.json``, the UNet, VAE and text encoder
configs, the scheduler config and the CLIP tokenizer(s) with the real vocabulary. The values
are those of the published SD 1.5 and SDXL base architectures; keys left out take diffusers'
and transformers' defaults.
"""

from __future__ import annotations

import json
import shutil
import threading
import uuid
from pathlib import Path
from typing import Any

from nodes.diffusion.clip_vocab import VOCAB_SIZE, find_bpe_file, write_tokenizer_files

CONFIG_REVISION = 1  # bump when a generated config changes, so old folders are rewritten
_MARKER = "takeflow-config.json"

_BETAS = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000,
    "steps_offset": 1,
    "prediction_type": "epsilon",
    "set_alpha_to_one": False,
    "clip_sample": False,
}

_VAE = {
    "_class_name": "AutoencoderKL",
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
}


def _clip_text(architecture: str, **shape: Any) -> dict[str, Any]:
    return {
        "architectures": [architecture],
        "model_type": "clip_text_model",
        "vocab_size": VOCAB_SIZE,
        "max_position_embeddings": 77,
        "layer_norm_eps": 1e-5,
        "bos_token_id": VOCAB_SIZE - 2,
        "eos_token_id": VOCAB_SIZE - 1,
        "pad_token_id": VOCAB_SIZE - 1,
        **shape,
    }


_CLIP_L = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "projection_dim": 768,
    "hidden_act": "quick_gelu",
}

SD15: dict[str, Any] = {
    "model_index": {
        "_class_name": "StableDiffusionPipeline",
        "requires_safety_checker": False,
        "safety_checker": [None, None],
        "feature_extractor": [None, None],
        "image_encoder": [None, None],
        "scheduler": ["diffusers", "PNDMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    },
    "unet": {
        "_class_name": "UNet2DConditionModel",
        "act_fn": "silu",
        "attention_head_dim": 8,
        "block_out_channels": [320, 640, 1280, 1280],
        "cross_attention_dim": 768,
        "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
        "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
        "in_channels": 4,
        "out_channels": 4,
        "layers_per_block": 2,
        "norm_num_groups": 32,
        "sample_size": 64,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
    },
    "vae": {**_VAE, "sample_size": 512, "scaling_factor": 0.18215},
    "text_encoder": _clip_text("CLIPTextModel", **_CLIP_L),
    "scheduler": {"_class_name": "PNDMScheduler", "skip_prk_steps": True, **_BETAS},
    "tokenizers": {"tokenizer": "<|endoftext|>"},
}

SDXL: dict[str, Any] = {
    "model_index": {
        "_class_name": "StableDiffusionXLPipeline",
        "force_zeros_for_empty_prompt": True,
        "feature_extractor": [None, None],
        "image_encoder": [None, None],
        "scheduler": ["diffusers", "EulerDiscreteScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "tokenizer_2": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    },
    "unet": {
        "_class_name": "UNet2DConditionModel",
        "act_fn": "silu",
        "addition_embed_type": "text_time",
        "addition_time_embed_dim": 256,
        "attention_head_dim": [5, 10, 20],
        "block_out_channels": [320, 640, 1280],
        "cross_attention_dim": 2048,
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
        "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
        "in_channels": 4,
        "out_channels": 4,
        "layers_per_block": 2,
        "norm_num_groups": 32,
        "projection_class_embeddings_input_dim": 2816,
        "sample_size": 128,
        "transformer_layers_per_block": [1, 2, 10],
        "use_linear_projection": True,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
    },
    "vae": {**_VAE, "sample_size": 1024, "scaling_factor": 0.13025, "force_upcast": True},
    "text_encoder": _clip_text("CLIPTextModel", **_CLIP_L),
    "text_encoder_2": _clip_text(
        "CLIPTextModelWithProjection",
        hidden_size=1280,
        intermediate_size=5120,
        num_hidden_layers=32,
        num_attention_heads=20,
        projection_dim=1280,
        hidden_act="gelu",
    ),
    "scheduler": {
        "_class_name": "EulerDiscreteScheduler",
        "timestep_spacing": "leading",
        "interpolation_type": "linear",
        "use_karras_sigmas": False,
        "skip_prk_steps": True,
        **_BETAS,
    },
    "tokenizers": {"tokenizer": "<|endoftext|>", "tokenizer_2": "!"},
}

ARCHS: dict[str, dict[str, Any]] = {"sd15": SD15, "sdxl": SDXL}


def write_arch_config(arch: str, folder: Path, bpe_file: Path) -> Path:
    """Write the config folder for ``arch`` into ``folder`` (replacing it)."""
    spec = ARCHS[arch]
    work = folder.parent / f".{folder.name}.{uuid.uuid4().hex[:8]}"
    work.mkdir(parents=True)
    try:
        (work / "model_index.json").write_text(json.dumps(spec["model_index"], indent=2))
        for component in ("unet", "vae"):
            _write_json(work / component / "config.json", spec[component])
        for component in ("text_encoder", "text_encoder_2"):
            if component in spec:
                _write_json(work / component / "config.json", spec[component])
        _write_json(work / "scheduler" / "scheduler_config.json", spec["scheduler"])
        for name, pad in spec["tokenizers"].items():
            write_tokenizer_files(bpe_file, work / name, pad_token=pad)
        (work / _MARKER).write_text(json.dumps({"arch": arch, "revision": CONFIG_REVISION}))
        if folder.exists():
            shutil.rmtree(folder)
        work.rename(folder)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return folder


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))


def _is_current(folder: Path, arch: str) -> bool:
    try:
        marker = json.loads((folder / _MARKER).read_text())
    except (FileNotFoundError, ValueError):
        return False
    return marker == {"arch": arch, "revision": CONFIG_REVISION}


class ArchConfigs:
    """The generated config folders of one home: ``ensure(arch)`` writes one on first use."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock = threading.Lock()

    def ensure(self, arch: str, clip_vocab: Path | None = None) -> Path:
        """The folder for ``arch``, written now if missing or stale (``clip_vocab``: the BPE
        merges file to use instead of the one an installed package ships)."""
        folder = self.root / arch
        with self._lock:
            if not _is_current(folder, arch) and arch not in ARCHS:  # a video arch (LTX-Video)
                from nodes.diffusion.video_single_file import write_video_arch_config

                marker = {"arch": arch, "revision": CONFIG_REVISION}
                write_video_arch_config(arch, folder, marker, _MARKER)
            elif not _is_current(folder, arch):
                write_arch_config(arch, folder, find_bpe_file(clip_vocab))
        return folder
