"""Single-file checkpoints (SD 1.5 and SDXL, .safetensors and .ckpt) through the model registry:
exact weights, arch read from the header, the checkpoints folder, offline loading, generation."""

from __future__ import annotations

import json
import os
import pickle
import socket
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from graph_runtime.canvas import single_node_graph
from graph_runtime.errors import ModelNotFoundError
from graph_runtime.tasks import TaskStatus
from nodes.diffusion.checkpoints import CheckpointError, safetensors_keys
from nodes.diffusion.pipeline_cache import PipelineCache
from nodes.diffusion.service import GenerationRequest
from stores.home import TakeflowHome
from tests.nodes.conftest import FAST, registry_for, service_for

pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)


@pytest.fixture
def ckpt_home(
    diffusion_home: TakeflowHome,
    single_files: dict[str, Path],
    tiny_model_dir: Path,
    tiny_sdxl_dir: Path,
) -> TakeflowHome:
    """The checkpoints folder listed, and each tiny file given its tiny config folder (real
    SD 1.5/SDXL files would use the generated ones)."""
    models = dict(diffusion_home.config()["models"])
    models["sd15/tiny.safetensors"] = {"config": str(tiny_model_dir)}
    models["tiny.ckpt"] = {"config": str(tiny_model_dir), "arch": "sd15"}
    models["xl/tiny_xl.safetensors"] = {"config": str(tiny_sdxl_dir)}
    diffusion_home.update_config(models=models, checkpoints_dir=str(single_files["root"]))
    return diffusion_home


def original(folder: Path) -> Any:
    from diffusers import DiffusionPipeline

    return DiffusionPipeline.from_pretrained(folder, local_files_only=True)


def assert_same_weights(loaded: Any, reference: Any, components: tuple[str, ...]) -> None:
    for name in components:
        ours, theirs = getattr(loaded, name).state_dict(), getattr(reference, name).state_dict()
        assert sorted(ours) == sorted(theirs), name
        for key, tensor in theirs.items():
            assert torch.equal(ours[key], tensor), f"{name}.{key}"


@pytest.mark.parametrize("name", ["sd15/tiny.safetensors", "tiny.ckpt"])
def test_sd15_single_file_loads_with_exact_weights(
    ckpt_home: TakeflowHome, tiny_model_dir: Path, single_files: dict[str, Path], name: str
) -> None:
    spec = registry_for(ckpt_home).resolve(name)
    assert (spec.format, spec.arch, spec.source) == ("single_file", "sd15", "checkpoints_dir")
    assert spec.path == single_files["ckpt" if name.endswith(".ckpt") else "sd15"]
    entry = PipelineCache().get(spec, "cpu")
    assert type(entry.pipe).__name__ == "StableDiffusionPipeline"
    assert_same_weights(entry.pipe, original(tiny_model_dir), ("unet", "vae", "text_encoder"))
    img2img = entry.pipeline_for("image_to_image", "euler")
    assert type(img2img).__name__ == "StableDiffusionImg2ImgPipeline"


def test_sdxl_single_file_loads_with_exact_weights_and_conditions_on_size(
    ckpt_home: TakeflowHome, tiny_sdxl_dir: Path
) -> None:
    registry = registry_for(ckpt_home)
    spec = registry.resolve("xl/tiny_xl.safetensors")
    assert (spec.format, spec.arch) == ("single_file", "sdxl")
    service = service_for(ckpt_home)
    entry = service.cache.get(spec, "cpu")
    assert type(entry.pipe).__name__ == "StableDiffusionXLPipeline"
    assert_same_weights(
        entry.pipe, original(tiny_sdxl_dir), ("unet", "vae", "text_encoder", "text_encoder_2")
    )
    assert type(entry.pipeline_for("image_to_image", "euler")).__name__ == (
        "StableDiffusionXLImg2ImgPipeline"
    )

    time_ids: list[list[float]] = []

    def capture(module: Any, args: Any, kwargs: dict[str, Any]) -> None:
        time_ids.append(kwargs["added_cond_kwargs"]["time_ids"][-1].tolist())

    hook = entry.pipe.unet.register_forward_pre_hook(capture, with_kwargs=True)
    try:
        request = GenerationRequest(
            prompt="a harbour",
            model="xl/tiny_xl.safetensors",
            seed=3,
            **{**FAST, "width": 80, "height": 64, "steps": 2},
        )
        result = service.generate(request, _Reporter())
    finally:
        hook.remove()
        service.close()
    assert result.image.size == (80, 64) and result.model.arch == "sdxl"
    # original size (h, w), crop top-left, target size (h, w): SDXL's size conditioning.
    assert time_ids and all(ids == [64, 80, 0, 0, 64, 80] for ids in time_ids)


class _Reporter:
    node_id, task_id, quality, services = "n", "t", "standard", {}

    def progress(self, *args: Any, **kwargs: Any) -> None: ...

    def check_cancelled(self) -> None: ...

    def record_metadata(self, **data: Any) -> None: ...


def test_checkpoints_dir_lists_files_by_relative_path(
    ckpt_home: TakeflowHome, single_files: dict[str, Path]
) -> None:
    registry = registry_for(ckpt_home)
    assert registry.checkpoint_names() == [
        "sd15/tiny.safetensors",
        "tiny.ckpt",
        "xl/tiny_xl.safetensors",
    ]
    assert set(registry.names()) == {"demo", *registry.checkpoint_names()}
    bare = single_files["root"] / "other" / "copy.safetensors"
    bare.parent.mkdir()
    bare.write_bytes(single_files["sd15"].read_bytes())
    assert "other/copy.safetensors" in registry.names()  # a new file is listed at once
    listed = {s.name: s for s in registry.list()}
    assert listed["other/copy.safetensors"].describe() == {
        "name": "other/copy.safetensors",
        "path": str(bare),
        "demo": False,
        "format": "single_file",
        "arch": "auto",
        "source": "checkpoints_dir",
    }
    with pytest.raises(
        ModelNotFoundError,
        match=r"unknown model '\.\./escape\.safetensors'.*"
        r"nor a checkpoint file under",
    ):
        registry.resolve("../escape.safetensors")
    bare.unlink()


def test_generated_configs_have_the_published_shapes_and_the_real_vocabulary(
    diffusion_home: TakeflowHome,
) -> None:
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import (
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTextModelWithProjection,
        CLIPTokenizer,
    )

    configs = registry_for(diffusion_home).arch_configs
    sizes = {}
    for arch in ("sd15", "sdxl"):
        folder = configs.ensure(arch)
        assert folder == diffusion_home.path / "models" / ".configs" / arch
        with init_empty_weights():  # shapes only, no memory
            unet = UNet2DConditionModel.from_config(
                UNet2DConditionModel.load_config(folder, subfolder="unet")
            )
            vae = AutoencoderKL.from_config(AutoencoderKL.load_config(folder, subfolder="vae"))
            text = CLIPTextModel(CLIPTextConfig.from_pretrained(folder, subfolder="text_encoder"))
            models = [unet, vae, text]
            if arch == "sdxl":
                models.append(
                    CLIPTextModelWithProjection(
                        CLIPTextConfig.from_pretrained(folder, subfolder="text_encoder_2")
                    )
                )
        sizes[arch] = [sum(p.numel() for p in m.parameters()) for m in models]
        tokenizer = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer")
        assert len(tokenizer) == 49408
        assert tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    # The published parameter counts of SD 1.5 and SDXL base (UNet, VAE, CLIP-L, OpenCLIP-G).
    assert sizes["sd15"] == [859_520_964, 83_653_863, 123_060_480]
    assert sizes["sdxl"] == [2_567_463_684, 83_653_863, 123_060_480, 694_659_840]
    xl = configs.ensure("sdxl")
    assert CLIPTokenizer.from_pretrained(xl, subfolder="tokenizer_2").pad_token == "!"
    stamp = (xl / "model_index.json").stat().st_mtime_ns
    assert configs.ensure("sdxl") == xl and (xl / "model_index.json").stat().st_mtime_ns == stamp


def test_a_checkpoint_without_config_uses_the_generated_one(
    ckpt_home: TakeflowHome, single_files: dict[str, Path]
) -> None:
    # A tiny file with the real SD 1.5 config: resolved to the generated folder, and the load
    # fails on shapes (as it should), naming the model; nothing reached for the network.
    models = dict(ckpt_home.config()["models"])
    del models["sd15/tiny.safetensors"]
    ckpt_home.update_config(models=models)
    spec = registry_for(ckpt_home).resolve("sd15/tiny.safetensors")
    assert spec.config == ckpt_home.path / "models" / ".configs" / "sd15"
    with pytest.raises(
        ModelNotFoundError,
        match=r"model 'sd15/tiny.safetensors' at .* could "
        r"not be loaded on cpu",
    ):
        PipelineCache().get(spec, "cpu")


def test_loading_never_touches_the_network(
    ckpt_home: TakeflowHome, monkeypatch: pytest.MonkeyPatch
) -> None:
    attempts: list[Any] = []

    def refuse(self: socket.socket, address: Any) -> None:
        attempts.append(address)
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    spec = registry_for(ckpt_home).resolve("xl/tiny_xl.safetensors")
    PipelineCache().get(spec, "cpu")
    import huggingface_hub
    from diffusers import StableDiffusionXLPipeline

    assert attempts == []
    assert os.environ["HF_HUB_OFFLINE"] == "1" and huggingface_hub.constants.HF_HUB_OFFLINE
    # Without a config folder diffusers would fetch one from the hub: offline, it fails at once.
    from huggingface_hub.errors import LocalEntryNotFoundError

    with pytest.raises(LocalEntryNotFoundError, match="outgoing traffic has been disabled"):
        StableDiffusionXLPipeline.from_single_file(str(spec.path), local_files_only=True)
    assert attempts == []


def test_a_changed_file_is_a_new_model_in_the_cache(
    ckpt_home: TakeflowHome, single_files: dict[str, Path]
) -> None:
    registry, cache = registry_for(ckpt_home), PipelineCache()
    first = cache.get(registry.resolve("tiny.ckpt"), "cpu")
    assert cache.get(registry.resolve("tiny.ckpt"), "cpu") is first and cache.loads == 1
    stat = single_files["ckpt"].stat()
    os.utime(single_files["ckpt"], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert cache.get(registry.resolve("tiny.ckpt"), "cpu") is not first and cache.loads == 2


def _write_header(path: Path, keys: list[str]) -> Path:
    header = json.dumps(
        {
            k: {"dtype": "F32", "shape": [1], "data_offsets": [4 * i, 4 * i + 4]}
            for i, k in enumerate(keys)
        }
    ).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 4 * len(keys))
    return path


def test_arch_is_read_from_the_header_and_bad_files_are_named(
    ckpt_home: TakeflowHome, single_files: dict[str, Path], tmp_path: Path
) -> None:
    keys = safetensors_keys(single_files["sdxl"])
    assert any(k.startswith("conditioner.embedders.1.model.transformer.resblocks.") for k in keys)
    root = single_files["root"]
    cases = {
        "sd2.safetensors": (
            ["model.diffusion_model.x", "cond_stage_model.model.x"],
            "a Stable Diffusion 2.x checkpoint",
        ),
        "refiner.safetensors": (
            ["model.diffusion_model.x", "conditioner.embedders.0.model.x"],
            "an SDXL refiner checkpoint",
        ),
        "vae.safetensors": (["encoder.conv_in.weight"], "is not a Stable Diffusion checkpoint"),
        "unet.safetensors": (["model.diffusion_model.x"], "holds a UNet but no text encoder"),
    }
    registry = registry_for(ckpt_home)
    try:
        for name, (names, message) in cases.items():
            _write_header(root / name, names)
            with pytest.raises(CheckpointError, match=message) as caught:
                registry.resolve(name)
            assert caught.value.code == "invalid_checkpoint" and str(root / name) in str(
                caught.value
            )
        (root / "cut.safetensors").write_bytes(b"\x10\x00")
        with pytest.raises(CheckpointError, match="shorter than a safetensors header"):
            registry.resolve("cut.safetensors")
        models = dict(ckpt_home.config()["models"])
        models["wrong"] = {"path": str(single_files["sdxl"]), "arch": "sd15"}
        ckpt_home.update_config(models=models)
        with pytest.raises(
            CheckpointError,
            match=r"configured with arch 'sd15', but .* holds "
            r"an sdxl checkpoint; set \"arch\": \"sdxl\"",
        ):
            registry.resolve("wrong")
    finally:
        for name in [*cases, "cut.safetensors"]:
            (root / name).unlink(missing_ok=True)


class _Boom:
    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (str(Path(os.environ["TAKEFLOW_HOME"]) / "pwned"),))


def test_a_ckpt_with_code_in_it_is_refused_and_never_run(
    diffusion_home: TakeflowHome, tmp_path: Path
) -> None:
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"model.diffusion_model.x": torch.zeros(1)}, "x": _Boom()}, evil)
    models = dict(diffusion_home.config()["models"])
    models["evil"] = str(evil)
    diffusion_home.update_config(models=models)
    with pytest.raises(CheckpointError, match=r"could not be read as a weights-only \.ckpt"):
        registry_for(diffusion_home).resolve("evil")
    assert not (diffusion_home.path / "pwned").exists()
    with pytest.raises(pickle.UnpicklingError):  # the payload is real: only weights_only stops it
        torch.load(evil, weights_only=True)


def test_a_checkpoint_name_generates_through_the_runtime(
    ckpt_home: TakeflowHome, diffusion_runtime: Any, project: Any
) -> None:
    graph = single_node_graph(
        "image_generation",
        {"prompt": "a kite", "seed": 4, "model": "sd15/tiny.safetensors", **FAST},
    )
    sink_record = diffusion_runtime.runner.submit(graph, project_id="demo", shot="ch01/sc01/sh010")
    record = diffusion_runtime.runner.wait(sink_record.task_id, timeout=60)
    assert record.status == TaskStatus.COMPLETED, record.error
    take = project.takes.list("ch01/sc01/sh010")[0]
    image = Image.open(project.abs(take.outputs["image"].path))
    assert image.size == (64, 64) and take.metadata["model"] == "sd15/tiny.safetensors"
    # The same weights as the diffusers folder: the same picture.
    folder = service_for(ckpt_home).generate(
        GenerationRequest(prompt="a kite", seed=4, model="demo", **FAST), _Reporter()
    )
    assert np.array_equal(np.asarray(image.convert("RGB")), np.asarray(folder.image))


def test_the_clip_vocabulary_source_can_be_configured(
    diffusion_home: TakeflowHome, tmp_path: Path, single_files: dict[str, Path]
) -> None:
    from nodes.diffusion.clip_vocab import (
        ClipVocabularyMissing,
        byte_symbols,
        find_bpe_file,
        read_merges,
    )

    symbols = byte_symbols()
    assert len(set(symbols)) == 256 and symbols[0] == "!" and symbols[-1] == chr(256 + 67)
    shipped = find_bpe_file()
    assert shipped.name == "bpe_simple_vocab_16e6.txt.gz" and len(read_merges(shipped)) == 48894
    with pytest.raises(ClipVocabularyMissing, match=r"diffusion.clip_vocab names '.*nope.gz'"):
        find_bpe_file(tmp_path / "nope.gz")
    not_bpe = tmp_path / "short.txt.gz"
    import gzip

    not_bpe.write_bytes(gzip.compress(b"#version\na b\n"))
    with pytest.raises(ClipVocabularyMissing, match="is not the CLIP BPE file"):
        read_merges(not_bpe)
    copy = tmp_path / "vocab" / "bpe.txt.gz"
    copy.parent.mkdir()
    copy.write_bytes(shipped.read_bytes())
    models = {**diffusion_home.config()["models"], "plain": str(single_files["sd15"])}
    diffusion_home.update_config(models=models, diffusion={"clip_vocab": "../vocab/gone.gz"})
    registry = registry_for(diffusion_home)  # the generated sd15 config needs the vocabulary
    with pytest.raises(ClipVocabularyMissing, match=r"names '.*/takeflow-home/\.\./vocab/gone"):
        registry.resolve("plain")
    diffusion_home.update_config(diffusion={"clip_vocab": "../vocab/bpe.txt.gz"})
    spec = registry.resolve("plain")  # relative to the home, read at once
    assert (spec.config / "tokenizer" / "vocab.json").is_file()
