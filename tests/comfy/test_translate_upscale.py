"""ComfyUI's upscaling nodes and the hires fix, translated in isolation (no server) and checked
against the real template registry and Takeflow's graph validation."""

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

MODELS = ["demo-upscale-x4.pth", "esrgan/4x_foo.pth"]


@pytest.fixture
def catalog() -> Catalog:
    def folder_names(kind: str) -> list[str]:
        return MODELS if kind == "upscale_models" else []

    return Catalog(lambda: ["demo"], lambda: ["plate.png"], limits, folder_names)


def _save(prompt: dict[str, Any], source: str) -> dict[str, Any]:
    prompt["9"]["inputs"]["images"] = [source, 0]
    return prompt


def test_object_info_lists_the_upscale_models_folder(catalog: Catalog) -> None:
    info = catalog.object_info()
    assert info["UpscaleModelLoader"]["input"]["required"]["model_name"][0] == MODELS
    assert info["UpscaleModelLoader"]["output"] == ["UPSCALE_MODEL"]
    assert info["ImageUpscaleWithModel"]["input"]["required"]["upscale_model"] == [
        "UPSCALE_MODEL", {}
    ]  # fmt: skip
    assert "bislerp" in info["LatentUpscaleBy"]["input"]["required"]["upscale_method"][0]


def test_model_upscale_then_scale_by(catalog: Catalog, tmp_path: Path) -> None:
    prompt = _save(txt2img(batch=2), "12")
    prompt["10"] = {"class_type": "UpscaleModelLoader", "inputs": {"model_name": MODELS[1]}}
    prompt["11"] = {
        "class_type": "ImageUpscaleWithModel",
        "inputs": {"upscale_model": ["10", 0], "image": ["8", 0]},
    }
    prompt["12"] = {
        "class_type": "ImageScaleBy",
        "inputs": {"image": ["11", 0], "upscale_method": "area", "scale_by": 0.5},
    }
    translation = translate(prompt, catalog, tmp_path)  # fmt: skip
    nodes = nodes_of(translation)
    ups = [n for n in nodes.values() if n["template"] == "upscale_with_model"]
    assert len(ups) == 2 and {u["upscale_model"] for u in ups} == {MODELS[1]}
    assert (ups[0]["tile"], ups[0]["overlap"]) == (512, 32)
    scales = [n for n in nodes.values() if n["template"] == "scale_image"]
    assert [(s["mode"], s["factor"], s["resample"]) for s in scales] == [
        ("factor", 0.5, "area")
    ] * 2
    assert [len(o.refs) for o in translation.outputs] == [2] and translation.notes == []
    validate_graph(CanvasGraph.model_validate(translation.graph), REGISTRY)


def test_image_scale_to_size_and_zero_sides(catalog: Catalog, tmp_path: Path) -> None:
    prompt = _save(txt2img(), "10")
    prompt["10"] = {"class_type": "ImageScale",
                    "inputs": {"image": ["8", 0], "upscale_method": "nearest-exact",
                               "width": 0, "height": 96, "crop": "center"}}  # fmt: skip
    nodes = nodes_of(translate(prompt, catalog, tmp_path))
    (scale,) = [n for n in nodes.values() if n["template"] == "scale_image"]
    assert (scale["mode"], scale["width"], scale["height"]) == ("size", 0, 96)
    assert (scale["resample"], scale["crop"]) == ("nearest", "center")
    prompt["10"]["inputs"].update(width=0, height=0)  # ComfyUI: the image as it is
    nodes = nodes_of(translate(prompt, catalog, tmp_path))
    assert {n["template"] for n in nodes.values()} == {"image_generation"}


def test_hires_fix_becomes_generate_scale_image_to_image_with_a_note(
    catalog: Catalog, tmp_path: Path
) -> None:
    prompt = txt2img(steps=10)
    prompt["8"]["inputs"]["samples"] = ["13", 0]
    prompt["12"] = {
        "class_type": "LatentUpscale",
        "inputs": {
            "samples": ["3", 0],
            "upscale_method": "bislerp",
            "width": 96,
            "height": 128,
            "crop": "disabled",
        },
    }
    prompt["13"] = {
        "class_type": "KSampler",
        "inputs": dict(prompt["3"]["inputs"], latent_image=["12", 0], denoise=0.5),
    }
    translation = translate(prompt, catalog, tmp_path)  # fmt: skip
    nodes = nodes_of(translation)
    (first,) = translation.samplers["3"]
    (second,) = translation.samplers["13"]
    scale = nodes[nodes[second]["image"][0]]
    assert nodes[first]["template"] == "image_generation"
    assert scale["template"] == "scale_image" and scale["image"] == (first, "image")
    assert (scale["mode"], scale["width"], scale["height"], scale["multiple_of"]) == (
        "size", 96, 128, 8,
    )  # fmt: skip
    assert scale["resample"] == "bicubic"
    hires = nodes[second]
    assert hires["template"] == "image_to_image" and hires["strength"] == 0.5
    assert hires["steps"] == 20  # ComfyUI's 10 steps at denoise 0.5
    assert translation.notes == [
        "node 12: LatentUpscale: latent upscale done in pixel space (the image decoded, scaled "
        "with bicubic (bislerp has no pixel-space counterpart) to the latent's size and encoded "
        "again by the next sampler); ComfyUI scales the latent itself"
    ]
    assert translation.ports[f"{second}|image"] == ["12", "samples"]
    validate_graph(CanvasGraph.model_validate(translation.graph), REGISTRY)


def test_decoding_an_upscaled_latent_gives_the_scaled_image(
    catalog: Catalog, tmp_path: Path
) -> None:
    prompt = txt2img()
    prompt["8"]["inputs"]["samples"] = ["12", 0]
    prompt["12"] = {"class_type": "LatentUpscaleBy",
                    "inputs": {"samples": ["3", 0], "upscale_method": "bilinear",
                               "scale_by": 2.0}}  # fmt: skip
    translation = translate(prompt, catalog, tmp_path)
    nodes = nodes_of(translation)
    (ref,) = translation.outputs[0].refs
    assert nodes[ref[0]]["template"] == "scale_image" and nodes[ref[0]]["factor"] == 2.0
    assert len(translation.notes) == 1


@pytest.mark.parametrize(
    ("change", "node", "input_name", "kind"),
    [
        (lambda p: p.update({
            "10": {"class_type": "UpscaleModelLoader", "inputs": {"model_name": "nope.pth"}},
            "11": {"class_type": "ImageUpscaleWithModel",
                   "inputs": {"upscale_model": ["10", 0], "image": ["8", 0]}}}),
         "10", "model_name", "value_not_in_list"),
        (lambda p: p.update({
            "11": {"class_type": "LatentUpscaleBy",
                   "inputs": {"samples": ["5", 0], "upscale_method": "area", "scale_by": 2}},
            "8": {"class_type": "VAEDecode", "inputs": {"samples": ["11", 0], "vae": ["4", 2]}}}),
         "11", "samples", "custom_validation_failed"),
    ],
)  # fmt: skip
def test_refused_upscales_name_the_input(
    catalog: Catalog, tmp_path: Path, change: Any, node: str, input_name: str, kind: str
) -> None:
    prompt = txt2img()
    change(prompt)
    if "11" in prompt and prompt["11"]["class_type"] == "ImageUpscaleWithModel":
        prompt["9"]["inputs"]["images"] = ["11", 0]
    with pytest.raises(PromptRejected) as rejected:
        translate(prompt, catalog, tmp_path)
    error = rejected.value.node_errors[node]["errors"][0]
    assert error["type"] == kind and error["extra_info"]["input_name"] == input_name
