"""The demo video model: a tiny LTX-Video pipeline with random weights, built from configs.

It makes noise-like clips, not film: it exists so that ``text_to_video`` / ``image_to_video``,
their progress, previews and video takes work offline with nothing to download. Its VAE
compresses like the published LTX-Video VAE (32x in space, 8x in time: sizes a multiple of 32,
8k+1 frames), with 8 latent channels instead of 128 and one transformer block. The T5 text
encoder is two layers of width 32 and its tokenizer knows the printable ASCII characters (a
Unigram vocabulary written here: no sentencepiece file needed). Built in well under a second on
a CPU; registered in the home config as ``demo-video`` with ``"demo": true``.
"""

from __future__ import annotations

import json
import shutil
import string
import uuid
from pathlib import Path
from typing import Any

from nodes.diffusion.config import EditableConfig
from nodes.diffusion.demo import read_marker

DEMO_VIDEO_MODEL = "demo-video"
DEMO_VIDEO_LABEL = (
    "Demo video model (tiny LTX-Video, random weights: makes noise-like clips, not real video)"
)
DEMO_VIDEO_REVISION = 1  # bump when the builder changes, so an older folder is rebuilt
_MARKER = "takeflow-demo-video.json"

# Shapes (kept next to each other so the compression matches LTX-Video's 32x / 8x).
TINY_TRANSFORMER: dict[str, Any] = {
    "in_channels": 8,
    "out_channels": 8,
    "patch_size": 1,
    "patch_size_t": 1,
    "num_attention_heads": 4,
    "attention_head_dim": 8,
    "cross_attention_dim": 32,
    "num_layers": 1,
    "caption_channels": 32,
}
TINY_VAE: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 8,
    "block_out_channels": (8, 8, 8, 8),
    "decoder_block_out_channels": (8, 8, 8, 8),
    "layers_per_block": (1, 1, 1, 1, 1),
    "decoder_layers_per_block": (1, 1, 1, 1, 1),
    "spatio_temporal_scaling": (True, True, True, False),  # 3 x 2x in time: 8x
    "decoder_spatio_temporal_scaling": (True, True, True, False),
    "decoder_inject_noise": (False, False, False, False, False),
    "upsample_residual": (False, False, False, False),
    "upsample_factor": (1, 1, 1, 1),
    "timestep_conditioning": False,
    "patch_size": 4,  # 4 x 2^3 = 32x in space
    "patch_size_t": 1,
    "encoder_causal": True,
    "decoder_causal": False,
}
TINY_T5: dict[str, Any] = {
    "d_model": 32,
    "d_kv": 8,
    "d_ff": 37,
    "num_layers": 2,
    "num_heads": 4,
    "relative_attention_num_buckets": 8,
}


def _tokenizer() -> Any:
    """A T5 tokenizer over the printable ASCII characters (a Unigram vocabulary)."""
    from transformers import T5Tokenizer  # the tokenizers-backed one in transformers 5

    chars = [c for c in string.printable if not c.isspace()]
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    vocab += [(c, -3.0) for c in chars] + [("\u2581" + c, -2.5) for c in chars]
    return T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=128)


def build_random_video_pipeline(folder: Path, seed: int = 0) -> Path:
    """Build the tiny LTX-Video pipeline with random weights and save it as a diffusers folder."""
    import torch
    from diffusers import (
        AutoencoderKLLTXVideo,
        FlowMatchEulerDiscreteScheduler,
        LTXPipeline,
        LTXVideoTransformer3DModel,
    )
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    tokenizer = _tokenizer()
    text_encoder = T5EncoderModel(
        T5Config(vocab_size=len(tokenizer), pad_token_id=0, eos_token_id=1, **TINY_T5)
    )  # fmt: skip
    pipe = LTXPipeline(
        transformer=LTXVideoTransformer3DModel(**TINY_TRANSFORMER),
        vae=AutoencoderKLLTXVideo(**TINY_VAE),
        scheduler=FlowMatchEulerDiscreteScheduler(),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
    )
    work = folder.parent / f".{folder.name}.{uuid.uuid4().hex[:8]}"
    try:
        pipe.save_pretrained(work, safe_serialization=True)  # type: ignore[attr-defined]
        marker = {"revision": DEMO_VIDEO_REVISION, "seed": seed, "random_weights": True}
        (work / _MARKER).write_text(json.dumps(marker))
        if folder.exists():
            shutil.rmtree(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        work.rename(folder)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return folder


def _is_current(folder: Path) -> bool:
    return (
        read_marker(folder, _MARKER).get("revision") == DEMO_VIDEO_REVISION
        and (folder / "model_index.json").is_file()
    )


def _registered(home: EditableConfig, folder: Path) -> bool:
    entry = (home.config().get("models") or {}).get(DEMO_VIDEO_MODEL)
    return bool(entry and Path(entry.get("path", "")) == folder and entry.get("demo"))


def demo_video_ready(home: EditableConfig) -> bool:
    """Whether the demo video model is built (current revision) and registered."""
    folder = home.path / "models" / DEMO_VIDEO_MODEL
    return _is_current(folder) and _registered(home, folder)


def ensure_demo_video_model(home: EditableConfig) -> Path:
    """Build ``<home>/models/demo-video`` if missing or stale, and register it as "demo-video"."""
    from nodes.diffusion.demo import register_model

    folder = home.path / "models" / DEMO_VIDEO_MODEL
    if not _is_current(folder):
        build_random_video_pipeline(folder)
    if not _registered(home, folder):
        register_model(home, DEMO_VIDEO_MODEL, folder, demo=True, label=DEMO_VIDEO_LABEL)
    return folder
