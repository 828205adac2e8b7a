"""The demo model: a tiny Stable Diffusion pipeline with random weights, built from configs.

It makes noise-like pictures, not art: it exists so that every part of Takeflow (templates,
progress, cancel, batching, takes) works offline with no weights to download. It is registered
in the home config with ``"demo": true`` so that everything showing it can say so.

The same builder makes a full-size SD 1.5-shaped pipeline (``size="sd15"``) for GPU benchmarks.
``takeflow serve --demo`` prepares it beside the server at a first start (``prepare_demo_model``);
lookups of "demo" in that process wait for it (``wait_for_demo_model``).
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from nodes.diffusion.config import EditableConfig
from nodes.diffusion.upscale_demo import ensure_demo_upscale_model

log = logging.getLogger(__name__)

DEMO_MODEL = "demo"
DEMO_LABEL = "Demo model (tiny, random weights: makes noise-like images, not real pictures)"
# Bump when the builder changes, so an older demo folder is rebuilt.
DEMO_REVISION = 2  # 2: the demo LoRA, ControlNet, inpainting and upscale models came
_MARKER = "takeflow-demo.json"

Size = Literal["tiny", "sd15"]


def _byte_level_tokenizer(folder: Path) -> int:
    """Write a CLIP tokenizer whose vocabulary is the 256 byte symbols (no download needed)."""
    from tokenizers.pre_tokenizers import ByteLevel

    symbols = sorted(ByteLevel.alphabet())
    vocab: dict[str, int] = {}
    for sym in symbols:
        vocab[sym] = len(vocab)
    for sym in symbols:
        vocab[sym + "</w>"] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return len(vocab)


def _configs(size: Size) -> dict[str, dict[str, Any]]:
    if size == "tiny":
        return {
            # Attention only at the lower resolution, so 512x512 (64x64 latents) stays cheap.
            "unet": {
                "block_out_channels": (32, 64),
                "layers_per_block": 1,
                "sample_size": 64,
                "in_channels": 4,
                "out_channels": 4,
                "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
                "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
                "cross_attention_dim": 32,
                "attention_head_dim": 8,
                "norm_num_groups": 8,
            },
            # Four blocks: 8x down-sampling like SD's KL-f8, with few channels.
            "vae": {
                "block_out_channels": (8, 8, 16, 16),
                "in_channels": 3,
                "out_channels": 3,
                "down_block_types": ("DownEncoderBlock2D",) * 4,
                "up_block_types": ("UpDecoderBlock2D",) * 4,
                "latent_channels": 4,
                "layers_per_block": 1,
                "norm_num_groups": 8,
                "sample_size": 512,
            },
            "text": {
                "hidden_size": 32,
                "intermediate_size": 37,
                "num_hidden_layers": 2,
                "num_attention_heads": 4,
                "projection_dim": 32,
            },
        }
    return {  # the Stable Diffusion 1.5 architecture
        "unet": {
            "block_out_channels": (320, 640, 1280, 1280),
            "layers_per_block": 2,
            "sample_size": 64,
            "in_channels": 4,
            "out_channels": 4,
            "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
            "cross_attention_dim": 768,
            "attention_head_dim": 8,
        },
        "vae": {
            "block_out_channels": (128, 256, 512, 512),
            "in_channels": 3,
            "out_channels": 3,
            "down_block_types": ("DownEncoderBlock2D",) * 4,
            "up_block_types": ("UpDecoderBlock2D",) * 4,
            "latent_channels": 4,
            "layers_per_block": 2,
            "sample_size": 512,
        },
        "text": {
            "hidden_size": 768,
            "intermediate_size": 3072,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
            "projection_dim": 768,
        },
    }


def build_random_pipeline(
    folder: Path, size: Size = "tiny", seed: int = 0, half: bool = False
) -> Path:
    """Build a Stable Diffusion pipeline with random weights from configs and save it
    (``half``: store float16 weights, as full-size checkpoints usually are)."""
    import torch
    from diffusers import (
        AutoencoderKL,
        PNDMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    configs = _configs(size)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**configs["unet"])
    vae = AutoencoderKL(**configs["vae"])
    work = folder.parent / f".{folder.name}.{uuid.uuid4().hex[:8]}"
    vocab_size = _byte_level_tokenizer(work / "tokenizer_src")
    tokenizer = CLIPTokenizer(
        str(work / "tokenizer_src" / "vocab.json"),
        str(work / "tokenizer_src" / "merges.txt"),
        model_max_length=77,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=max(vocab_size, 1000),
            max_position_embeddings=77,
            bos_token_id=vocab_size - 2,
            eos_token_id=vocab_size - 1,
            pad_token_id=vocab_size - 1,
            **configs["text"],
        )
    )
    scheduler = PNDMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        skip_prk_steps=True,
        steps_offset=1,
        set_alpha_to_one=False,
    )
    pipe = StableDiffusionPipeline(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    if half:
        pipe = pipe.to(torch.float16)  # type: ignore[attr-defined]
    pipe.save_pretrained(work / "pipeline", safe_serialization=True)  # type: ignore[attr-defined]
    (work / "pipeline" / _MARKER).write_text(
        json.dumps({"revision": DEMO_REVISION, "size": size, "seed": seed, "random_weights": True})
    )
    if folder.exists():
        shutil.rmtree(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    (work / "pipeline").rename(folder)
    shutil.rmtree(work, ignore_errors=True)
    return folder


def read_marker(folder: Path, name: str = _MARKER) -> dict[str, Any]:
    """A demo model folder's build marker (``{}`` when it is missing or unreadable)."""
    try:
        marker = json.loads((folder / name).read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return marker if isinstance(marker, dict) else {}


def _is_current(folder: Path) -> bool:
    return (
        read_marker(folder).get("revision") == DEMO_REVISION
        and (folder / "model_index.json").is_file()
    )


def register_model(
    home: EditableConfig, name: str, path: Path, demo: bool = False, label: str | None = None
) -> None:
    """Add or replace one entry of the home config's ``models`` table."""
    entry: dict[str, Any] = {"path": str(path), "demo": demo}
    if label:
        entry["label"] = label
    models = dict(home.config().get("models") or {})
    models[name] = entry
    home.update_config(models=models)


def ensure_demo_model(home: EditableConfig) -> Path:
    """Build the demo model under ``<home>/models/demo`` if missing, and register it as "demo"."""
    folder = home.path / "models" / DEMO_MODEL
    if not _is_current(folder):
        build_random_pipeline(folder, "tiny")
    current = (home.config().get("models") or {}).get(DEMO_MODEL)
    if not current or Path(current.get("path", "")) != folder or not current.get("demo"):
        register_model(home, DEMO_MODEL, folder, demo=True, label=DEMO_LABEL)
    from nodes.diffusion.inpaint_demo import ensure_demo_inpaint_model

    ensure_demo_inpaint_model(home)  # "demo-inpaint": a 9-channel UNet
    ensure_demo_upscale_model(home)
    from nodes.diffusion.controlnet import ensure_demo_controlnet

    ensure_demo_controlnet(home.path, folder)
    from nodes.diffusion.demo_lora import ensure_demo_lora  # the demo LoRA, for that model

    ensure_demo_lora(home, folder)
    from nodes.diffusion.video_demo import ensure_demo_video_model

    ensure_demo_video_model(home)  # "demo-video": a tiny LTX-Video pipeline
    return folder


# Demo models being built on a thread of this process, by resolved home path.
_preparing: dict[Path, threading.Thread] = {}
_preparing_lock = threading.Lock()


def demo_model_ready(home: EditableConfig) -> bool:
    """Whether the demo model is built (current revision) and registered as "demo"."""
    folder = home.path / "models" / DEMO_MODEL
    current = (home.config().get("models") or {}).get(DEMO_MODEL)
    registered = bool(current and Path(current.get("path", "")) == folder and current.get("demo"))
    from nodes.diffusion.demo_lora import demo_lora_ready
    from nodes.diffusion.video_demo import demo_video_ready

    return registered and _is_current(folder) and demo_lora_ready(home) and demo_video_ready(home)


def prepare_demo_model(
    home: EditableConfig, build: Callable[[], object] | None = None
) -> threading.Thread | None:
    """``ensure_demo_model`` (or ``build``, which must do it) on a thread, so that a server can
    answer before torch is imported (seconds). Until it ends, model lookups of this process on
    this home wait for it (``wait_for_demo_model``). None when the model is ready."""
    key = home.path.resolve()
    with _preparing_lock:
        running = _preparing.get(key)
        if running is not None:
            return running
        if demo_model_ready(home):
            return None
        thread = threading.Thread(
            target=_prepare,
            args=(build or (lambda: ensure_demo_model(home)), key),
            name="takeflow-demo-model",
        )
        _preparing[key] = thread
        thread.start()
        return thread


def _prepare(build: Callable[[], object], key: Path) -> None:
    try:
        build()
    except Exception:  # the server is useful without the demo model
        log.exception("could not prepare the demo diffusion model")
    finally:
        with _preparing_lock:
            _preparing.pop(key, None)


def demo_model_preparing(home: Path) -> bool:
    """Whether this process is building the demo model of the home at ``home``."""
    with _preparing_lock:
        return home.resolve() in _preparing


def wait_for_demo_model(home: Path, timeout: float | None = None) -> None:
    """Wait until the demo model this process is building for ``home`` is done (at once when
    none is being built)."""
    if not _preparing:  # the usual case: no lock, no path resolution
        return
    with _preparing_lock:
        thread = _preparing.get(home.resolve())
    if thread is not None and thread is not threading.current_thread():
        thread.join(timeout)
