"""ComfyUI's animated image and video nodes, translated in isolation (no server) and checked
against the real template registry and Takeflow's graph validation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from graph_runtime.canvas import CanvasGraph
from graph_runtime.templates import NullReporter
from graph_runtime.validation import validate_graph
from nodes.video_templates import frames_to_video
from server.comfy.catalog import Catalog
from server.comfy.errors import PromptRejected
from tests.comfy.client import txt2img
from tests.comfy.test_translate import REGISTRY, limits, nodes_of, translate

WEBP = {"filename_prefix": "anim/ComfyUI", "fps": 8.0, "lossless": False, "quality": 70,
        "method": "fastest"}  # fmt: skip


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    frames = [Image.new("RGB", (32, 32), (i * 60, 0, 0)) for i in range(3)]
    video = frames_to_video(NullReporter(), {"images": frames, "frame_count": 0, "fps": 6.0})
    path = tmp_path / "clip.mp4"
    path.write_bytes(video["video"].read_bytes())
    (tmp_path / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 truncated")
    return path


@pytest.fixture
def catalog(clip: Path) -> Catalog:
    return Catalog(lambda: ["demo"], lambda: ["broken.mp4", "clip.mp4", "plate.png"], limits)


def _webp(prompt: dict[str, Any], source: list[Any]) -> dict[str, Any]:
    prompt["9"] = {"class_type": "SaveAnimatedWEBP", "inputs": {"images": source, **WEBP}}
    return prompt


def _check(translation: Any) -> None:
    validate_graph(CanvasGraph.model_validate(translation.graph), REGISTRY)


def test_object_info_lists_the_video_nodes_with_comfyuis_inputs(catalog: Catalog) -> None:
    info = catalog.object_info()
    webp = info["SaveAnimatedWEBP"]["input"]["required"]
    assert list(webp) == ["images", "filename_prefix", "fps", "lossless", "quality", "method"]
    assert webp["fps"] == ["FLOAT", {"default": 6.0, "min": 0.01, "max": 1000.0, "step": 0.01}]
    assert webp["method"][0] == ["default", "fastest", "slowest"]
    assert list(info["SaveAnimatedPNG"]["input"]["required"]) == [
        "images", "filename_prefix", "fps", "compress_level"
    ]  # fmt: skip
    webm = info["SaveWEBM"]["input"]["required"]
    assert webm["codec"][0] == ["vp9", "av1"] and webm["crf"][1]["default"] == 32.0
    create = info["CreateVideo"]
    assert create["input"]["optional"] == {"audio": ["AUDIO", {}]}
    assert create["output"] == ["VIDEO"]
    save = info["SaveVideo"]["input"]["required"]
    assert save["filename_prefix"][1]["default"] == "video/ComfyUI"
    assert (save["format"][0], save["codec"][0]) == (["auto", "mp4"], ["auto", "h264"])
    assert info["LoadVideo"]["input"]["required"]["file"][0] == ["broken.mp4", "clip.mp4"]
    assert info["GetVideoComponents"]["output"] == ["IMAGE", "AUDIO", "FLOAT"]
    assert info["GetVideoComponents"]["output_name"] == ["images", "audio", "fps"]
    assert all(info[n]["output_node"] for n in ("SaveAnimatedWEBP", "SaveWEBM", "SaveVideo"))


def test_a_batch_becomes_one_animated_webp(catalog: Catalog, tmp_path: Path) -> None:
    translation = translate(_webp(txt2img(batch=4), ["8", 0]), catalog, tmp_path)
    nodes = nodes_of(translation)
    (lst,) = [n for n in nodes.values() if n["template"] == "image_list"]
    gens = translation.samplers["3"]
    assert [lst[f"image_{i}"] for i in range(1, 5)] == [(g, "image") for g in gens]
    (anim,) = [(k, n) for k, n in nodes.items() if n["template"] == "animated_image"]
    assert anim[1]["format"] == "webp" and anim[1]["fps"] == 8.0
    assert (anim[1]["lossless"], anim[1]["quality"], anim[1]["method"]) == (False, 70, "fastest")
    (plan,) = translation.outputs
    assert (plan.kind, plan.refs, plan.prefix) == (
        "SaveAnimatedWEBP", [(anim[0], "animation")], "anim/ComfyUI"
    )  # fmt: skip
    _check(translation)


def test_a_batch_saved_as_pngs_and_as_an_animation(catalog: Catalog, tmp_path: Path) -> None:
    prompt = _webp(txt2img(batch=2), ["8", 0])
    prompt["10"] = {"class_type": "SaveImage",
                    "inputs": {"images": ["8", 0], "filename_prefix": "frames"}}  # fmt: skip
    prompt["11"] = {"class_type": "PreviewImage", "inputs": {"images": ["8", 0]}}
    translation = translate(prompt, catalog, tmp_path)
    nodes = nodes_of(translation)
    gens = translation.samplers["3"]
    plans = {p.kind: p for p in translation.outputs}
    for kind in ("SaveImage", "PreviewImage"):  # each image through keep_image: a take file
        kept = [nodes[ref[0]] for ref in plans[kind].refs]
        assert [k["template"] for k in kept] == ["keep_image"] * 2
        assert [k["image"] for k in kept] == [(g, "image") for g in gens]
    _check(translation)


def test_a_batch_of_forty_is_gathered_in_a_tree(catalog: Catalog, tmp_path: Path) -> None:
    prompt = txt2img(batch=40)
    prompt["9"] = {"class_type": "SaveAnimatedPNG",
                   "inputs": {"images": ["8", 0], "filename_prefix": "ComfyUI", "fps": 6.0,
                              "compress_level": 4}}  # fmt: skip
    translation = translate(prompt, catalog, tmp_path)
    lists = [n for n in translation.graph["nodes"] if n["template"] == "image_list"]
    assert len(lists) == 4  # 16 + 16 + 8, then one list of the three
    (anim,) = [n for n in nodes_of(translation).values() if n["template"] == "animated_image"]
    assert anim["format"] == "png" and anim["compress_level"] == 4
    _check(translation)


def test_load_video_components_create_video_and_save(catalog: Catalog, tmp_path: Path) -> None:
    prompt: dict[str, Any] = {
        "1": {"class_type": "LoadVideo", "inputs": {"file": "clip.mp4"}},
        "2": {"class_type": "GetVideoComponents", "inputs": {"video": ["1", 0]}},
        "3": {"class_type": "CreateVideo",
              "inputs": {"images": ["2", 0], "fps": ["2", 2], "audio": ["2", 1]}},
        "4": {"class_type": "SaveVideo", "inputs": {"video": ["3", 0],
              "filename_prefix": "video/ComfyUI", "format": "auto", "codec": "auto"}},
        "5": {"class_type": "SaveWEBM", "inputs": {"images": ["2", 0], "filename_prefix": "w",
              "codec": "vp9", "fps": 12.0, "crf": 30.0}},
    }  # fmt: skip
    translation = translate(prompt, catalog, tmp_path)
    nodes = nodes_of(translation)
    (load_id,) = [k for k, n in nodes.items() if n["template"] == "load_video"]
    (asset,) = translation.imports
    assert nodes[load_id]["asset"] == f"asset://{asset}" and asset.endswith("-clip.mp4")
    assert translation.imports[asset] == "clip.mp4"
    frames = [k for k, n in nodes.items() if n["template"] == "video_to_frames"]
    assert len(frames) == 1 and nodes[frames[0]]["video"] == (load_id, "video")
    (create,) = [n for n in nodes.values() if n["template"] == "create_video"]
    assert create["images"] == (frames[0], "images")
    assert create["fps"] == (load_id, "fps") and create["audio"] == (load_id, "video")
    (webm,) = [n for n in nodes.values() if n["template"] == "frames_to_webm"]
    assert (webm["codec"], webm["fps"], webm["crf"]) == ("vp9", 12.0, 30.0)
    plans = {p.kind: p for p in translation.outputs}
    assert sorted(plans) == ["SaveVideo", "SaveWEBM"]
    assert nodes[plans["SaveVideo"].refs[0][0]]["template"] == "video_as_mp4"
    _check(translation)


def _refused(prompt: dict[str, Any], catalog: Catalog, tmp_path: Path) -> dict[str, Any]:
    with pytest.raises(PromptRejected) as caught:
        translate(prompt, catalog, tmp_path)
    assert caught.value.type == "prompt_outputs_failed_validation"
    return caught.value.node_errors


def test_unsupported_combinations_are_refused_naming_the_node(
    catalog: Catalog, tmp_path: Path
) -> None:
    frames: dict[str, Any] = {
        "1": {"class_type": "LoadVideo", "inputs": {"file": "clip.mp4"}},
        "2": {"class_type": "GetVideoComponents", "inputs": {"video": ["1", 0]}},
    }
    # a video's frames into SaveImage: Takeflow does not run an image node per frame
    prompt = {**frames, "9": {"class_type": "SaveImage",
                              "inputs": {"images": ["2", 0], "filename_prefix": "x"}}}  # fmt: skip
    errors = _refused(prompt, catalog, tmp_path)
    (error,) = errors["9"]["errors"]
    assert errors["9"]["class_type"] == "SaveImage"
    assert error["type"] == "custom_validation_failed"
    assert (
        error["extra_info"]["input_name"] == "images" and "GetVideoComponents" in error["details"]
    )
    # a corrupt upload is refused at LoadVideo's file
    prompt = {**frames, "3": {"class_type": "CreateVideo", "inputs": {"images": ["2", 0],
              "fps": 24.0}}, "4": {"class_type": "SaveVideo", "inputs": {"video": ["3", 0],
              "filename_prefix": "v", "format": "mp4", "codec": "h264"}}}  # fmt: skip
    prompt["1"] = {"class_type": "LoadVideo", "inputs": {"file": "broken.mp4"}}
    errors = _refused(prompt, catalog, tmp_path)
    assert errors["1"]["class_type"] == "LoadVideo"
    assert errors["1"]["errors"][0]["extra_info"]["input_name"] == "file"
    # a prefix outside the output folder
    prompt = _webp(txt2img(batch=2), ["8", 0])
    prompt["9"]["inputs"]["filename_prefix"] = "../up"
    errors = _refused(prompt, catalog, tmp_path)
    assert errors["9"]["errors"][0]["extra_info"]["input_name"] == "filename_prefix"
