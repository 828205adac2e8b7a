"""ComfyUI's LoRA / CLIP skip / VAE nodes translated to a model value (no server)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from graph_runtime.canvas import CanvasGraph
from graph_runtime.validation import validate_graph
from nodes.diffusion.model_value import LoraUse, ModelValue, as_model
from server.comfy.catalog import Catalog
from server.comfy.errors import PromptRejected
from tests.comfy.client import txt2img
from tests.comfy.test_translate import REGISTRY, limits, nodes_of, translate

PARTS = {"loras": ["style/a.safetensors", "b.safetensors"], "vae": ["ft-mse.safetensors"]}


@pytest.fixture
def catalog() -> Catalog:
    return Catalog(lambda: ["demo"], lambda: [], limits, lambda kind: PARTS.get(kind, []))


def lora_stack() -> dict[str, Any]:
    """CheckpointLoaderSimple -> LoraLoader -> LoraLoader -> KSampler, CLIP skip, a VAE."""
    prompt = txt2img()
    prompt["20"] = {"class_type": "LoraLoader", "inputs": {
        "model": ["4", 0], "clip": ["4", 1], "lora_name": "style/a.safetensors",
        "strength_model": 0.8, "strength_clip": 0.6}}  # fmt: skip
    prompt["21"] = {"class_type": "LoraLoader", "inputs": {
        "model": ["20", 0], "clip": ["20", 1], "lora_name": "b.safetensors",
        "strength_model": 0.5, "strength_clip": 1.0}}  # fmt: skip
    prompt["22"] = {"class_type": "CLIPSetLastLayer",
                    "inputs": {"clip": ["21", 1], "stop_at_clip_layer": -2}}  # fmt: skip
    prompt["3"]["inputs"]["model"] = ["21", 0]
    prompt["6"]["inputs"]["clip"] = ["22", 0]
    prompt["7"]["inputs"]["clip"] = ["22", 0]
    return prompt


def test_lora_stack_clip_skip_and_vae_become_one_model_value(
    catalog: Catalog, tmp_path: Path
) -> None:
    prompt = lora_stack()
    prompt["23"] = {"class_type": "VAELoader", "inputs": {"vae_name": "ft-mse.safetensors"}}
    prompt["8"]["inputs"]["vae"] = ["23", 0]
    translation = translate(prompt, catalog, tmp_path)
    sampler = nodes_of(translation)[translation.samplers["3"][0]]
    assert as_model(sampler["model"]) == ModelValue(
        "demo", "ft-mse.safetensors", 1,
        (LoraUse("style/a.safetensors", 0.8, 0.6), LoraUse("b.safetensors", 0.5, 1.0)),
    )  # fmt: skip
    assert translation.notes == []
    validate_graph(CanvasGraph.model_validate(translation.graph), REGISTRY)


def test_model_only_lora_and_plain_checkpoint(catalog: Catalog, tmp_path: Path) -> None:
    plain = nodes_of(translate(txt2img(), catalog, tmp_path))
    assert next(n for n in plain.values())["model"] == "demo"  # unchanged: a name
    prompt = txt2img()
    prompt["20"] = {"class_type": "LoraLoaderModelOnly", "inputs": {
        "model": ["4", 0], "lora_name": "b.safetensors", "strength_model": 0.25}}  # fmt: skip
    prompt["3"]["inputs"]["model"] = ["20", 0]
    translation = translate(prompt, catalog, tmp_path)
    value = as_model(nodes_of(translation)[translation.samplers["3"][0]]["model"])
    assert value.loras == (LoraUse("b.safetensors", 0.25, 0.0),) and value.clip_skip == 0


def test_unknown_lora_is_not_in_the_list(catalog: Catalog, tmp_path: Path) -> None:
    prompt = lora_stack()
    prompt["21"]["inputs"]["lora_name"] = "missing.safetensors"
    with pytest.raises(PromptRejected) as refused:
        translate(prompt, catalog, tmp_path)
    errors = refused.value.node_errors
    assert errors["21"]["errors"][0]["type"] == "value_not_in_list"
    info = catalog.object_info()
    assert info["LoraLoader"]["input"]["required"]["lora_name"][0] == PARTS["loras"]
    assert info["VAELoader"]["input"]["required"]["vae_name"][0] == PARTS["vae"]
    assert info["LoraLoader"]["output"] == ["MODEL", "CLIP"]
