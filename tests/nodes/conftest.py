"""Fixtures for the diffusion tests: one tiny random-weight pipeline per session, registered as
the "demo" model of each test's Takeflow home."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from stores.home import TakeflowHome

if TYPE_CHECKING:
    from nodes.diffusion.models import ModelRegistry
    from nodes.diffusion.service import DiffusionService

# Small and quick: the tests exercise the service, not image quality.
FAST = {"width": 64, "height": 64, "steps": 4, "scheduler": "euler"}


def registry_for(home: TakeflowHome) -> ModelRegistry:
    """The model registry a runtime on ``home`` would use (the composition root's context)."""
    from dagster_defs.services import service_context
    from nodes.diffusion.factory import FACTORY
    from nodes.diffusion.models import ModelRegistry

    return ModelRegistry.for_context(service_context(home, FACTORY))


def service_for(home: TakeflowHome, **settings: Any) -> DiffusionService:
    """A diffusion service on ``home``'s models with these settings (and its own cache)."""
    from nodes.diffusion.service import DiffusionService, DiffusionSettings

    return DiffusionService(registry_for(home), DiffusionSettings(**settings))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from nodes.diffusion.demo import build_random_pipeline

    return build_random_pipeline(tmp_path_factory.mktemp("diffusion") / "tiny", "tiny")


@pytest.fixture(scope="session")
def second_model_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("diffusion2") / "tiny_copy"
    shutil.copytree(tiny_model_dir, target)
    return target


@pytest.fixture
def diffusion_home(_isolated_home: Path, tiny_model_dir: Path) -> TakeflowHome:
    """The test's home with the tiny model as "demo" and batching off (tests turn it on)."""
    from nodes.diffusion.demo import register_model

    home = TakeflowHome.resolve(_isolated_home)
    register_model(home, "demo", tiny_model_dir, demo=True)
    home.update_config(diffusion={"max_batch_size": 1, "batch_window_ms": 0, "preview_every": 2})
    return home


@pytest.fixture
def diffusion_runtime(diffusion_home: TakeflowHome, runtime: Any) -> Iterator[Any]:
    """The real runtime (``tests/conftest.py``) opened on a home that knows the tiny model."""
    yield runtime
    runtime.runner.services["diffusion"].close()


def build_tiny_sdxl(folder: Path) -> Path:
    """A tiny SDXL pipeline (two text encoders of different widths, size conditioning) with
    random weights, saved as a diffusers folder."""
    import torch
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import (
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTextModelWithProjection,
        CLIPTokenizer,
    )

    from nodes.diffusion.demo import _byte_level_tokenizer, _configs

    torch.manual_seed(1)
    vocab_dir = folder.parent / f"{folder.name}-vocab"
    vocab = _byte_level_tokenizer(vocab_dir)
    ids = {
        "vocab_size": 1000,
        "max_position_embeddings": 77,
        "bos_token_id": vocab - 2,
        "eos_token_id": vocab - 1,
        "pad_token_id": vocab - 1,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "intermediate_size": 37,
    }
    text_l = CLIPTextModel(CLIPTextConfig(hidden_size=32, projection_dim=32, **ids))
    text_g = CLIPTextModelWithProjection(
        CLIPTextConfig(hidden_size=64, projection_dim=64, hidden_act="gelu", **ids)
    )
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=96,
        attention_head_dim=(2, 4),
        transformer_layers_per_block=(1, 2),
        norm_num_groups=8,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=6 * 8 + 64,
    )
    tokenizers = [
        CLIPTokenizer(
            str(vocab_dir / "vocab.json"),
            str(vocab_dir / "merges.txt"),
            model_max_length=77,
            pad_token=pad,
        )
        for pad in ("<|endoftext|>", "!")
    ]
    pipe = StableDiffusionXLPipeline(
        vae=AutoencoderKL(**_configs("tiny")["vae"]),
        text_encoder=text_l,
        text_encoder_2=text_g,
        tokenizer=tokenizers[0],
        tokenizer_2=tokenizers[1],
        unet=unet,
        scheduler=EulerDiscreteScheduler(
            beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1
        ),
    )
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.fixture(scope="session")
def tiny_sdxl_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_sdxl(tmp_path_factory.mktemp("sdxl") / "tiny_sdxl")


@pytest.fixture(scope="session")
def single_files(
    tiny_model_dir: Path, tiny_sdxl_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """The tiny models exported to the original single-file layouts, in a checkpoints folder
    laid out as ComfyUI's (``sd15/tiny.safetensors``, ``tiny.ckpt``, ``xl/tiny_xl.safetensors``)."""
    from diffusers import DiffusionPipeline

    from tests.nodes.ldm_export import save_single_file

    root = tmp_path_factory.mktemp("checkpoints")
    sd15 = DiffusionPipeline.from_pretrained(tiny_model_dir, local_files_only=True)
    sdxl = DiffusionPipeline.from_pretrained(tiny_sdxl_dir, local_files_only=True)
    (root / "notes.txt").write_text("not a checkpoint")
    return {
        "root": root,
        "sd15": save_single_file(sd15, root / "sd15" / "tiny.safetensors"),
        "ckpt": save_single_file(sd15, root / "tiny.ckpt"),
        "sdxl": save_single_file(sdxl, root / "xl" / "tiny_xl.safetensors"),
    }
