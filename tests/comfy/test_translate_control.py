"""ControlNet, Canny and KSamplerAdvanced translation in isolation: the Takeflow graph they make
(checked by Takeflow's real validation), the notes they record and the inputs their errors name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from graph_runtime.canvas import CanvasGraph
from graph_runtime.validation import validate_graph
from server.comfy.catalog import Catalog
from server.comfy.errors import PromptRejected
from tests.comfy.client import txt2img
from tests.comfy.test_translate import REGISTRY, limits, nodes_of, translate


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    (tmp_path / "plate.png").write_bytes(b"\x89PNG not really")
    names = {"controlnet": ["canny.safetensors", "depth/cn.pth"]}
    return Catalog(lambda: ["demo"], lambda: ["plate.png"], limits,
                   lambda kind: names.get(kind, []))  # fmt: skip


def controlnet_prompt(advanced: bool = True, steps: int = 2) -> dict[str, Any]:
    """txt2img guided by canny edges of an uploaded image (ComfyUI's ControlNet example)."""
    prompt = txt2img(steps=steps)
    prompt["10"] = {"class_type": "LoadImage", "inputs": {"image": "plate.png"}}
    prompt["11"] = {
        "class_type": "Canny",
        "inputs": {"image": ["10", 0], "low_threshold": 0.3, "high_threshold": 0.7},
    }
    prompt["12"] = {"class_type": "ControlNetLoader",
                    "inputs": {"control_net_name": "canny.safetensors"}}  # fmt: skip
    if advanced:
        prompt["13"] = {
            "class_type": "ControlNetApplyAdvanced",
            "inputs": {
                "positive": ["6", 0],
                "negative": ["7", 0],
                "control_net": ["12", 0],
                "image": ["11", 0],
                "strength": 0.8,
                "start_percent": 0.0,
                "end_percent": 0.6,
            },
        }
        prompt["3"]["inputs"].update(positive=["13", 0], negative=["13", 1])
    else:
        prompt["13"] = {
            "class_type": "ControlNetApply",
            "inputs": {
                "conditioning": ["6", 0],
                "control_net": ["12", 0],
                "image": ["11", 0],
                "strength": 0.8,
            },
        }
        prompt["3"]["inputs"].update(positive=["13", 0])
    return prompt  # fmt: skip


def advanced_prompt(start: int, end: int = 10000, image: bool = True) -> dict[str, Any]:
    prompt = txt2img(steps=8)
    inputs = prompt["3"]["inputs"]
    seed, denoise = inputs.pop("seed"), inputs.pop("denoise")
    assert denoise == 1
    inputs.update(noise_seed=seed, add_noise="enable", start_at_step=start, end_at_step=end,
                  return_with_leftover_noise="disable")  # fmt: skip
    prompt["3"]["class_type"] = "KSamplerAdvanced"
    if image:
        prompt["10"] = {"class_type": "LoadImage", "inputs": {"image": "plate.png"}}
        prompt["11"] = {"class_type": "VAEEncode",
                        "inputs": {"pixels": ["10", 0], "vae": ["4", 2]}}  # fmt: skip
        inputs["latent_image"] = ["11", 0]
        del prompt["5"]
    return prompt


def _valid(translation: Any) -> None:
    validate_graph(CanvasGraph.model_validate(translation.graph), REGISTRY)  # raises if bad


def test_controlnet_apply_advanced_becomes_a_control_chain(
    catalog: Catalog, tmp_path: Path
) -> None:
    translation = translate(controlnet_prompt(), catalog, tmp_path)
    _valid(translation)
    nodes = nodes_of(translation)
    sampler = nodes[translation.samplers["3"][0]]
    assert sampler["prompt"] == "masterpiece best quality girl"  # found past the apply node
    assert sampler["negative_prompt"] == "bad hands"
    control = nodes[sampler["control"][0]]
    assert control["template"] == "controlnet" and sampler["control"][1] == "control"
    assert (control["controlnet"], control["strength"], control["start"], control["end"]) == (
        "canny.safetensors", 0.8, 0.0, 0.6)  # fmt: skip
    canny = nodes[control["image"][0]]
    assert (canny["template"], canny["low_threshold"], canny["high_threshold"]) == (
        "canny", 0.3, 0.7)  # fmt: skip
    assert nodes[canny["image"][0]]["template"] == "load_asset"
    assert any("fractions of the sampling steps" in n for n in translation.notes)
    assert translation.ports[f"{sampler['control'][0]}|end"] == ["13", "end_percent"]


def test_two_controlnets_chain_and_the_old_apply_notes_the_negative(
    catalog: Catalog, tmp_path: Path
) -> None:
    prompt = controlnet_prompt(advanced=False)
    prompt["14"] = {
        "class_type": "ControlNetLoader",
        "inputs": {"control_net_name": "depth/cn.pth"},
    }
    prompt["15"] = {"class_type": "ControlNetApply", "inputs": {
        "conditioning": ["13", 0], "control_net": ["14", 0], "image": ["10", 0],
        "strength": 0.5}}  # fmt: skip
    prompt["3"]["inputs"]["positive"] = ["15", 0]
    translation = translate(prompt, catalog, tmp_path)
    _valid(translation)
    nodes = nodes_of(translation)
    sampler = nodes[translation.samplers["3"][0]]
    outer = nodes[sampler["control"][0]]
    inner = nodes[outer["control"][0]]
    assert (inner["controlnet"], outer["controlnet"]) == ("canny.safetensors", "depth/cn.pth")
    assert "control" not in inner and sampler["prompt"] == "masterpiece best quality girl"
    assert any("both the positive and the negative" in n for n in translation.notes)


def test_controlnet_errors_name_the_input(catalog: Catalog, tmp_path: Path) -> None:
    prompt = controlnet_prompt()
    prompt["12"]["inputs"]["control_net_name"] = "missing.safetensors"
    with pytest.raises(PromptRejected) as missing:
        translate(prompt, catalog, tmp_path)
    errors = missing.value.node_errors["12"]["errors"]
    assert errors[0]["type"] == "value_not_in_list"
    assert errors[0]["extra_info"]["input_name"] == "control_net_name"
    prompt = controlnet_prompt()
    prompt["13"]["inputs"].update(start_percent=0.7, end_percent=0.2)
    with pytest.raises(PromptRejected) as span:
        translate(prompt, catalog, tmp_path)
    assert span.value.node_errors["13"]["errors"][0]["extra_info"]["input_name"] == "end_percent"
    info = catalog.object_info()
    assert info["ControlNetLoader"]["input"]["required"]["control_net_name"][0] == [
        "canny.safetensors", "depth/cn.pth"]  # fmt: skip
    assert info["ControlNetApplyAdvanced"]["output_name"] == ["positive", "negative"]


def test_ksampler_advanced_start_at_step_is_image_to_image(
    catalog: Catalog, tmp_path: Path
) -> None:
    translation = translate(advanced_prompt(start=3), catalog, tmp_path)
    _valid(translation)
    sampler = nodes_of(translation)[translation.samplers["3"][0]]
    assert sampler["template"] == "image_to_image"
    # Steps 3..8 of an 8-step schedule: diffusers runs int(8 * 5/8) = 5 steps of 8.
    assert sampler["steps"] == 8 and sampler["strength"] == 5 / 8 and sampler["seed"] == 5
    assert any("start_at_step 3 of 8" in n for n in translation.notes)
    tf = translation.samplers["3"][0]
    assert translation.ports[f"{tf}|seed"] == ["3", "noise_seed"]
    assert translation.ports[f"{tf}|strength"] == ["3", "start_at_step"]


def test_ksampler_advanced_from_noise_and_its_approximations(
    catalog: Catalog, tmp_path: Path
) -> None:
    prompt = advanced_prompt(start=0, end=6, image=False)
    prompt["3"]["inputs"].update(add_noise="disable", return_with_leftover_noise="enable")
    translation = translate(prompt, catalog, tmp_path)
    _valid(translation)
    sampler = nodes_of(translation)[translation.samplers["3"][0]]
    assert sampler["template"] == "image_generation" and sampler["steps"] == 8
    notes = " ".join(translation.notes)
    assert "end_at_step 6 of 8" in notes and "no leftover noise" in notes
    assert "add_noise 'disable'" in notes
    with pytest.raises(PromptRejected) as bad:
        translate(advanced_prompt(start=2, image=False), catalog, tmp_path)
    assert bad.value.node_errors["3"]["errors"][0]["extra_info"]["input_name"] == "start_at_step"
    with pytest.raises(PromptRejected) as empty:
        translate(advanced_prompt(start=8), catalog, tmp_path)
    assert empty.value.node_errors["3"]["errors"][0]["extra_info"]["input_name"] == "start_at_step"
