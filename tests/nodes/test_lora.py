"""Model values, LoRAs (kohya files), VAE, CLIP skip and embeddings on tiny random-weight models."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from graph_runtime.canvas import CanvasGraph
from graph_runtime.errors import ModelNotFoundError
from graph_runtime.tasks import TaskStatus
from nodes.diffusion.demo_lora import random_kohya_lora, save_lora
from nodes.diffusion.model_value import InvalidModelValue, LoraUse, ModelValue, as_model
from nodes.diffusion.requests import GenerationRequest, InvalidGenerationRequest
from stores.home import TakeflowHome
from tests.nodes.conftest import FAST, service_for
from tests.nodes.test_diffusion import RecordingReporter, pixels, run

pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning",
)
SHOT = "ch01/sc01/sh010"


def _fresh(folder: Path) -> Any:
    from diffusers import DiffusionPipeline

    return DiffusionPipeline.from_pretrained(folder, local_files_only=True)


@pytest.fixture(scope="module")
def kohya_files(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two random LoRAs for the tiny SD 1.5 model in kohya's layout, and a UNet-only one."""
    pipe = _fresh(tiny_model_dir)
    root = tmp_path_factory.mktemp("loras")
    return {
        "root": root,
        "a": save_lora(random_kohya_lora(pipe, seed=1), root / "style" / "a.safetensors"),
        "b": save_lora(random_kohya_lora(pipe, seed=2), root / "b.safetensors"),
        "unet_only": save_lora(random_kohya_lora(pipe, seed=3, text=False), root / "u.safetensors"),
    }


@pytest.fixture
def lora_home(diffusion_home: TakeflowHome, kohya_files: dict[str, Path]) -> TakeflowHome:
    diffusion_home.update_config(loras_dir=str(kohya_files["root"]))
    return diffusion_home


def _gen(service: Any, prompt: str = "a lighthouse", seed: int = 5, **parts: Any) -> np.ndarray:
    request = GenerationRequest(prompt=prompt, seed=seed, **FAST, **parts)
    return pixels(service.generate(request, RecordingReporter()).image)


def test_kohya_layout_loads_and_strength_zero_is_identical(
    lora_home: TakeflowHome, kohya_files: dict[str, Path]
) -> None:
    from safetensors.torch import load_file

    keys = load_file(str(kohya_files["a"]))
    assert any(k.startswith("lora_unet_") and k.endswith(".lora_down.weight") for k in keys)
    assert any(k.startswith("lora_te_text_model_encoder_layers_0_") for k in keys)
    assert any(k.endswith(".alpha") for k in keys)
    service = service_for(lora_home)
    try:
        none = _gen(service)
        zero = _gen(service, loras=(LoraUse("style/a.safetensors", 0.0, 0.0),))
        unet = _gen(service, loras=(LoraUse("style/a.safetensors", 1.0, 0.0),))
        text = _gen(service, loras=(LoraUse("style/a.safetensors", 0.0, 1.0),))
        stack = _gen(service, loras=(LoraUse("style/a.safetensors", 1.0, 1.0),
                                     LoraUse("b.safetensors", 0.5, 0.5)))  # fmt: skip
        again = _gen(service)  # switching back to none after adapters were loaded
        only = _gen(service, loras=(LoraUse("u.safetensors", 1.0, 1.0),))
    finally:
        service.close()
    assert np.array_equal(zero, none) and np.array_equal(again, none)
    for changed in (unet, text, stack, only):
        assert np.abs(changed - none).max() > 10
    assert not np.array_equal(unet, text) and not np.array_equal(stack, unet)
    assert service.cache.loads == 1  # LoRA sets switched without reloading the base model
    state = service.cache.loaded()[0].parts
    assert state.adapter_loads == 3  # each file loaded once


def test_same_lora_set_batches_together_and_different_sets_do_not(
    lora_home: TakeflowHome,
) -> None:
    service = service_for(lora_home, max_batch_size=4, batch_window_s=2.0)
    sets = [(LoraUse("b.safetensors", 0.8, 0.8),), (LoraUse("b.safetensors", 0.8, 0.8),),
            (LoraUse("style/a.safetensors", 0.8, 0.8),)]  # fmt: skip
    results: dict[int, Any] = {}

    def call(i: int) -> None:
        request = GenerationRequest(prompt=f"shot {i}", seed=i, loras=sets[i], **FAST)
        results[i] = service.generate(request, RecordingReporter())

    threads = [threading.Thread(target=call, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    try:
        assert sorted(b.size for b in service.batches) == [1, 2]
        assert [results[i].batch_size for i in range(3)] == [2, 2, 1]
        alone = _gen(service, prompt="shot 0", seed=0, loras=sets[0])
        diff = np.abs(pixels(results[0].image) - alone)
        assert diff.max() <= 1  # batched = alone, up to float rounding of batched kernels
    finally:
        service.close()


def _graph(*lora_nodes: dict[str, Any], prompt: str = "a lighthouse") -> CanvasGraph:
    lit = lambda v: {"kind": "literal", "value": v}  # noqa: E731
    nodes: list[dict[str, Any]] = [
        {"id": "ckpt", "template": "checkpoint_loader", "inputs": {"checkpoint": lit("demo")}},
    ]
    previous = "ckpt"
    for i, spec in enumerate(lora_nodes):
        nodes.append({"id": f"lora{i}", "template": "lora", "inputs": {
            "model": {"kind": "link", "node": previous, "output": "model"},
            **{k: lit(v) for k, v in spec.items()}}})  # fmt: skip
        previous = f"lora{i}"
    nodes.append({"id": "gen", "template": "image_generation", "inputs": {
        "model": {"kind": "link", "node": previous, "output": "model"}, "prompt": lit(prompt),
        "seed": lit(3), **{k: lit(v) for k, v in FAST.items()}}})  # fmt: skip
    return CanvasGraph.model_validate({"name": "lora-stack", "nodes": nodes})


def test_a_lora_stack_in_a_canvas_is_recorded_by_name_hash_and_strength(
    lora_home: TakeflowHome, kohya_files: dict[str, Path], diffusion_runtime: Any, project: Any
) -> None:
    graph = _graph(
        {"lora": "style/a.safetensors", "strength_model": 0.7, "strength_clip": 0.3},
        {"lora": "b.safetensors", "strength_model": 0.5, "strength_clip": 1.0},
    )
    record, _ = run(diffusion_runtime, graph, project_id="demo", shot=SHOT)
    assert record.status == TaskStatus.COMPLETED, record.error
    take = project.takes.list(SHOT)[0]
    sha = {k: "sha256:" + hashlib.sha256(kohya_files[k].read_bytes()).hexdigest() for k in "ab"}
    assert take.metadata["loras"] == [
        {"name": "style/a.safetensors", "sha256": sha["a"], "strength_model": 0.7,
         "strength_clip": 0.3},
        {"name": "b.safetensors", "sha256": sha["b"], "strength_model": 0.5, "strength_clip": 1.0},
    ]  # fmt: skip
    assert take.metadata["model"] == "demo"
    assert Image.open(project.abs(take.outputs["image"].path)).size == (64, 64)

    missing = _graph({"lora": "nope.safetensors"})
    record, _ = run(diffusion_runtime, missing, project_id="demo", shot=SHOT)
    assert record.status == TaskStatus.FAILED
    assert record.error["node_id"] == "lora0" and record.error["port"] == "lora"
    assert "nope.safetensors" in record.error["message"] and "b.safetensors" in str(record.error)


def test_model_value_json_and_bad_values_name_the_field() -> None:
    value = ModelValue("demo", "v.safetensors", 1, (LoraUse("a.safetensors", 0.5, 1.0),))
    assert ModelValue.from_json(value.to_json()) == value and as_model(value.to_json()) == value
    assert as_model("demo") == ModelValue("demo") and as_model("demo").plain
    with pytest.raises(InvalidModelValue) as bad:
        as_model({"checkpoint": "demo", "loras": [{"name": "a", "strength_model": "x"}]})
    assert bad.value.details["field"] == "loras[0].strength_model"
    with pytest.raises(InvalidModelValue):
        as_model({"checkpoint": "demo", "clip_skip": 99})


def test_vae_file_and_clip_skip(lora_home: TakeflowHome, tiny_model_dir: Path) -> None:
    import torch
    from diffusers import AutoencoderKL
    from safetensors.torch import save_file

    vae_dir = lora_home.path / "models" / "vae"
    vae_dir.mkdir(parents=True)
    base = AutoencoderKL.from_pretrained(tiny_model_dir / "vae")
    torch.manual_seed(11)
    other = AutoencoderKL.from_config(base.config)
    save_file(other.state_dict(), str(vae_dir / "other.safetensors"))
    save_file(base.state_dict(), str(vae_dir / "same.safetensors"))
    service = service_for(lora_home)
    try:
        none = _gen(service)
        assert np.array_equal(_gen(service, vae="same.safetensors"), none)
        assert np.abs(_gen(service, vae="other.safetensors") - none).max() > 10
        assert np.array_equal(_gen(service), none)  # the checkpoint's own VAE is back
        assert np.abs(_gen(service, clip_skip=1) - none).max() > 0
        with pytest.raises(ModelNotFoundError) as missing:
            _gen(service, vae="gone.safetensors")
        assert missing.value.details["port"] == "model"
    finally:
        service.close()


def test_embeddings_in_prompts_as_comfyui_writes_them(
    lora_home: TakeflowHome, diffusion_runtime: Any, project: Any
) -> None:
    import torch
    from safetensors.torch import save_file

    folder = lora_home.path / "models" / "embeddings"
    folder.mkdir(parents=True)
    torch.manual_seed(4)
    torch.save({"string_to_param": {"*": torch.randn(2, 32)}, "name": "a1111"},
               folder / "old.pt")  # fmt: skip
    save_file({"emb_params": torch.randn(1, 32) * 3}, str(folder / "new.safetensors"))
    service = service_for(lora_home)
    try:
        plain = _gen(service, prompt="a cat")
        old = _gen(service, prompt="a cat embedding:old")
        new = _gen(service, prompt="a cat, embedding:new.safetensors")
        assert np.abs(old - plain).max() > 0 and np.abs(new - plain).max() > 0
        assert np.array_equal(_gen(service, prompt="a cat embedding:old.pt"), old)
        with pytest.raises(InvalidGenerationRequest) as unknown:
            _gen(service, prompt="a cat embedding:missing")
        assert unknown.value.details["port"] == "prompt"
        assert "embedding:missing" in unknown.value.message
    finally:
        service.close()
    record, _ = run(diffusion_runtime, _graph(prompt="x embedding:nothere"), project_id="demo",
                    shot=SHOT)  # fmt: skip
    assert record.status == TaskStatus.FAILED and record.error["node_id"] == "gen"
    assert "embedding:nothere" in record.error["message"]


def test_sdxl_kohya_lora_for_both_text_encoders(
    tiny_sdxl_dir: Path, diffusion_home: TakeflowHome, tmp_path: Path
) -> None:
    from nodes.diffusion.demo import register_model

    weights = random_kohya_lora(_fresh(tiny_sdxl_dir), seed=5)
    assert any(k.startswith("lora_te1_") for k in weights)
    assert any(k.startswith("lora_te2_") for k in weights)
    save_lora(weights, tmp_path / "loras" / "xl.safetensors")
    register_model(diffusion_home, "xl", tiny_sdxl_dir)
    diffusion_home.update_config(loras_dir=str(tmp_path / "loras"))
    service = service_for(diffusion_home)
    try:
        none = _gen(service, model="xl")
        assert np.array_equal(_gen(service, model="xl", loras=(LoraUse("xl.safetensors", 0, 0),)),
                              none)  # fmt: skip
        clip = _gen(service, model="xl", loras=(LoraUse("xl.safetensors", 0, 1),))
        assert np.abs(clip - none).max() > 0
    finally:
        service.close()
