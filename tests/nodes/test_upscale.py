"""Upscale models on CPU: tiny random weights exported into the ESRGAN-family file layouts
(ESRGAN's original and later layouts, Real-ESRGAN RRDBNet x4 / x2, Real-ESRGAN compact) and
loaded back from those files; tiles against one pass; the template through the real runtime."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from graph_runtime.canvas import CanvasGraph
from graph_runtime.events import RecordingSink
from graph_runtime.registry import TemplateRegistry
from graph_runtime.tasks import TaskStatus
from graph_runtime.templates import NullReporter
from nodes.builtin import scale_image
from nodes.diffusion.checkpoints import CheckpointError
from nodes.diffusion.config import DiffusionConfig
from nodes.diffusion.folders import ModelFolders
from nodes.diffusion.upscale import load_network, upscale_image, upscale_tensor
from nodes.diffusion.upscale_arch import RRDBNet, SRVGGNetCompact
from nodes.diffusion.upscale_demo import (
    DEMO_UPSCALE_MODEL,
    build_demo_upscale_model,
    ensure_demo_upscale_model,
)

SHOT = "ch01/sc01/sh030"
State = dict[str, torch.Tensor]


def old_esrgan_layout(sd: State, blocks: int, ups: int) -> State:
    """BasicSR names -> the original ESRGAN ``model.N`` layout (``RRDB_ESRGAN_x4.pth``): a
    Sequential of conv_first, a ShortcutBlock ``sub`` (blocks + trunk conv), then per x2 an
    Upsample, conv, LeakyReLU; conv_hr, LeakyReLU, conv_last."""
    names = {"conv_first": "model.0", "conv_body": f"model.1.sub.{blocks}",
             "conv_hr": f"model.{3 * ups + 2}", "conv_last": f"model.{3 * ups + 4}"}  # fmt: skip
    names |= {f"conv_up{n}": f"model.{3 * n}" for n in range(1, ups + 1)}
    out: State = {}
    for key, value in sd.items():
        parts = key.split(".")
        if parts[0] == "body":  # body.i.rdbj.convk.weight
            i, rdb, conv, what = parts[1:]
            out[f"model.1.sub.{i}.RDB{rdb[-1]}.{conv}.0.{what}"] = value
        else:
            out[f"{names[parts[0]]}.{parts[1]}"] = value
    return out


def new_esrgan_layout(sd: State) -> State:
    """BasicSR names -> ESRGAN's later layout (``RRDB_trunk``, ``trunk_conv``, ``upconvN``)."""
    out: State = {}
    for key, value in sd.items():
        head, _, rest = key.partition(".")
        if head == "body":
            i, rdb, tail = rest.split(".", 2)
            out[f"RRDB_trunk.{i}.RDB{rdb[-1]}.{tail}"] = value
        elif head.startswith("conv_up"):
            out[f"upconv{head.removeprefix('conv_up')}.{rest}"] = value
        else:
            out[f"{ {'conv_body': 'trunk_conv', 'conv_hr': 'HRconv'}.get(head, head) }.{rest}"] = (
                value
            )
    return out


def folders_at(home: Path) -> ModelFolders:
    return ModelFolders(lambda: DiffusionConfig(), home)


def _rrdb(ups: int, unshuffle: int) -> RRDBNet:
    torch.manual_seed(3)
    return RRDBNet(3, 3, nf=8, gc=4, blocks=2, ups=ups, unshuffle=unshuffle).eval()


def _compact(scale: int) -> SRVGGNetCompact:
    torch.manual_seed(4)
    return SRVGGNetCompact(3, 3, nf=8, convs=3, scale=scale).eval()


# name, reference network, file content from its state dict, expected (architecture, layout, scale)
CASES: list[tuple[str, Callable[[], torch.nn.Module], Callable[[State], Any], tuple[Any, ...]]] = [
    ("esrgan_old_x4.pth", lambda: _rrdb(2, 1), lambda sd: old_esrgan_layout(sd, 2, 2),
     ("ESRGAN", "esrgan-old", 4)),
    ("esrgan_old_x2.pth", lambda: _rrdb(1, 1), lambda sd: old_esrgan_layout(sd, 2, 1),
     ("ESRGAN", "esrgan-old", 2)),
    ("esrgan_new_x4.pth", lambda: _rrdb(2, 1), new_esrgan_layout, ("ESRGAN", "esrgan-new", 4)),
    ("RealESRGAN_x4plus.pth", lambda: _rrdb(2, 1), lambda sd: {"params_ema": sd},
     ("ESRGAN", "basicsr", 4)),
    ("RealESRGAN_x2plus.pth", lambda: _rrdb(2, 2), lambda sd: {"params_ema": sd},
     ("ESRGAN", "basicsr", 2)),
    ("realesr-general-x4v3.pth", lambda: _compact(4), lambda sd: {"params": sd},
     ("RealESRGAN-compact", "compact", 4)),
    ("compact_x2.safetensors", lambda: _compact(2), lambda sd: sd,
     ("RealESRGAN-compact", "compact", 2)),
]  # fmt: skip


@pytest.mark.parametrize(("name", "make", "export", "expected"), CASES, ids=[c[0] for c in CASES])
def test_exported_layouts_load_back_with_architecture_and_scale_from_the_keys(
    tmp_path: Path,
    name: str,
    make: Callable[[], torch.nn.Module],
    export: Callable[[State], Any],
    expected: tuple[Any, ...],
) -> None:
    reference = make()
    root = tmp_path / "models" / "upscale_models"
    root.mkdir(parents=True)
    content = export({k: v.clone() for k, v in reference.state_dict().items()})
    if name.endswith(".safetensors"):
        save_file(content, root / name)
    else:
        torch.save(content, root / name)
    folders = folders_at(tmp_path)
    network = load_network(folders.resolve("upscale_models", name))
    assert (network.architecture, network.layout, network.scale) == expected
    x = torch.rand(1, 3, 12, 16, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        want = reference(x)
        got = network.module(x)
    scale = expected[2]
    assert got.shape == (1, 3, 12 * scale, 16 * scale)
    assert torch.equal(got, want)  # the same weights in the same places


def test_keys_of_no_upscale_model_are_refused(tmp_path: Path) -> None:
    root = tmp_path / "models" / "upscale_models"
    root.mkdir(parents=True)
    torch.save({"lora_unet_down.lora_up.weight": torch.zeros(4, 2)}, root / "lora.pth")
    with pytest.raises(CheckpointError, match="not a supported upscale model") as caught:
        load_network(folders_at(tmp_path).resolve("upscale_models", "lora.pth"))
    assert caught.value.code == "invalid_checkpoint"


@pytest.mark.parametrize("arch", ["compact", "rrdb_x2"])
def test_tiles_match_one_pass_within_float_rounding(arch: str, tmp_path: Path) -> None:
    """Bound: with ``overlap >= 2 *`` the network's receptive radius (``context``), tiled and
    untiled outputs differ by at most 1e-5 (of 0..1) everywhere; without overlap the seams show
    (a difference over 1e-3), so the bound is not met by accident."""
    path = tmp_path / f"{arch}.pth"
    net = _compact(4) if arch == "compact" else _rrdb(2, 2)
    torch.save(net.state_dict(), path)
    folders = ModelFolders(lambda: DiffusionConfig(upscale_models_dir=str(tmp_path)), tmp_path)
    network = load_network(folders.resolve("upscale_models", path.name))
    size = 40 if arch == "compact" else 28
    x = torch.rand(1, 3, size, size + 6, generator=torch.Generator().manual_seed(2))
    whole = upscale_tensor(network, x, tile=4096, overlap=0)
    ticks: list[tuple[int, int]] = []
    tiled = upscale_tensor(network, x, tile=12, overlap=2 * network.context,
                           on_tile=lambda done, total: ticks.append((done, total)))  # fmt: skip
    assert tiled.shape == whole.shape
    assert (tiled - whole).abs().max().item() <= 1e-5
    assert len(ticks) > 4 and ticks[-1] == (len(ticks), len(ticks))
    seams = upscale_tensor(network, x, tile=12, overlap=0)
    assert (seams - whole).abs().max().item() > 1e-3


def test_upscale_by_four_gives_four_times_the_size_and_keeps_alpha(tmp_path: Path) -> None:
    path = build_demo_upscale_model(tmp_path / "models" / "upscale_models" / "demo-x4.pth")
    network = load_network(folders_at(tmp_path).resolve("upscale_models", path.name))
    image = Image.new("RGBA", (21, 13), (200, 40, 90, 128))
    result = upscale_image(network, image, tile=8, overlap=4)
    assert result.size == (84, 52) and result.mode == "RGBA"
    assert result.getpixel((40, 20))[3] == 128
    # the demo model is near an enlargement: a flat colour stays close to itself
    rgb = np.asarray(result.convert("RGB"), dtype=np.int16)
    assert np.abs(rgb - np.array([200, 40, 90])).max() < 40


def _scale(image: Image.Image, **inputs: Any) -> Image.Image:
    base = {"mode": "factor", "factor": 2.0, "width": 0, "height": 0, "resample": "lanczos",
            "crop": "disabled", "multiple_of": 1}  # fmt: skip
    out: Image.Image = scale_image(NullReporter(), {"image": image, **base, **inputs})["image"]
    return out


def test_scale_image_by_factor_and_to_size() -> None:
    image = Image.new("RGB", (100, 60), "red")
    assert _scale(image, factor=1.5).size == (150, 90)
    assert _scale(image, factor=0.5, multiple_of=8).size == (48, 32)
    assert _scale(image, mode="size", width=50).size == (50, 30)  # height from the aspect
    assert _scale(image, mode="size", height=90).size == (150, 90)
    assert _scale(image, mode="size", width=64, height=64, resample="area").size == (64, 64)
    striped = Image.new("RGB", (100, 60), "blue")
    striped.paste((255, 0, 0), (0, 0, 20, 60))  # a red band on the left fifth
    cropped = _scale(striped, mode="size", width=60, height=60, crop="center")
    assert cropped.size == (60, 60) and cropped.getpixel((2, 30)) == (0, 0, 255)  # band cut off
    with pytest.raises(ValueError, match="input 'width'"):
        _scale(image, mode="size")


def test_template_in_a_graph_records_the_model_by_name_and_hash(
    runtime: Any, project: Any, _isolated_home: Path
) -> None:
    path = build_demo_upscale_model(_isolated_home / "models" / "upscale_models" / "x4" / "d.pth")
    graph = CanvasGraph.model_validate({
        "name": "upscale",
        "nodes": [
            {"id": "src", "template": "noise_image",
             "inputs": {"width": {"kind": "literal", "value": 30},
                        "height": {"kind": "literal", "value": 20}}},
            {"id": "up", "template": "upscale_with_model",
             "inputs": {"image": {"kind": "link", "node": "src", "output": "image"},
                        "upscale_model": {"kind": "literal", "value": "x4/d.pth"},
                        "tile": {"kind": "literal", "value": 16},
                        "overlap": {"kind": "literal", "value": 8}}},
        ],
    })  # fmt: skip
    sink = RecordingSink()
    runtime.runner.add_sink(sink)
    record = runtime.runner.submit(graph, project_id="demo", shot=SHOT)
    sink.wait_terminal(record.task_id, timeout=60)
    assert runtime.runner.get(record.task_id).status == TaskStatus.COMPLETED
    take = project.takes.list(SHOT)[0]
    assert Image.open(project.abs(take.outputs["image"].path)).size == (120, 80)
    facts = take.metadata["node_metadata"]["up"]
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert facts["upscale_model"] == {
        "kind": "upscale_models", "name": "x4/d.pth", "sha256": f"sha256:{digest}",
        "architecture": "RealESRGAN-compact", "layout": "compact", "scale": 4,
    }  # fmt: skip
    assert facts["upscale"]["tiles"] == 4 and facts["upscale"]["overlap"] == 8
    tiles = [e.data["message"] for e in sink.for_task(record.task_id)
             if e.type == "task.progress" and e.data.get("stage") == "upscaling"]  # fmt: skip
    assert tiles == [f"tile {i} of 4" for i in range(1, 5)]


def test_an_unknown_upscale_model_fails_the_node_naming_the_known_files(
    runtime: Any, _isolated_home: Path
) -> None:
    build_demo_upscale_model(_isolated_home / "models" / "upscale_models" / "demo-x4.pth")
    registry = TemplateRegistry.discover()
    assert registry.get("upscale_with_model").input("tile") is not None
    graph = CanvasGraph.model_validate({
        "name": "missing",
        "nodes": [
            {"id": "src", "template": "solid_image", "inputs": {}},
            {"id": "up", "template": "upscale_with_model",
             "inputs": {"image": {"kind": "link", "node": "src", "output": "image"},
                        "upscale_model": {"kind": "literal", "value": "nope.pth"}}},
        ],
    })  # fmt: skip
    sink = RecordingSink()
    runtime.runner.add_sink(sink)
    record = runtime.runner.submit(graph)
    sink.wait_terminal(record.task_id, timeout=60)
    failed = runtime.runner.get(record.task_id)
    assert failed.status == TaskStatus.FAILED
    assert "nope.pth" in str(failed.error) and "demo-x4.pth" in str(failed.error)


def test_hires_fix_example_canvas_runs_on_the_demo_models(
    diffusion_runtime: Any, project: Any, diffusion_home: Any
) -> None:
    """``examples/hires_fix.json`` (also the demo project's canvas): generate -> upscale x4 ->
    scale x0.5 -> image to image at 0.5, on the demo checkpoint and the demo upscale model."""
    ensure_demo_upscale_model(diffusion_home)
    root = Path(__file__).resolve().parents[2]
    text = (root / "examples" / "hires_fix.json").read_text()
    assert text == (root / "server" / "demo" / "canvases" / "hires_fix.takeflow.json").read_text()
    raw = json.loads(text)
    for node in raw["nodes"]:  # smaller and quicker than the canvas, same workflow
        if node["template"] == "image_generation":
            node["inputs"] |= {k: {"kind": "literal", "value": v} for k, v in
                               {"width": 64, "height": 64, "steps": 2}.items()}  # fmt: skip
        if node["template"] == "image_to_image":
            node["inputs"]["steps"] = {"kind": "literal", "value": 4}
    sink = RecordingSink()
    diffusion_runtime.runner.add_sink(sink)
    record = diffusion_runtime.runner.submit(
        CanvasGraph.model_validate(raw), project_id="demo", shot=SHOT
    )
    sink.wait_terminal(record.task_id, timeout=120)
    done = diffusion_runtime.runner.get(record.task_id)
    assert done.status == TaskStatus.COMPLETED, done.error
    take = project.takes.list(SHOT)[0]
    assert Image.open(project.abs(take.outputs["image"].path)).size == (128, 128)  # 64 * 4 / 2
    facts = take.metadata["node_metadata"]
    assert facts["upscale"]["upscale_model"]["name"] == DEMO_UPSCALE_MODEL
    assert facts["refine"]["model"] == "demo"
