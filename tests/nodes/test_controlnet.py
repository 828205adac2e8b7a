"""ControlNets on tiny random-weight models: the original file layouts load back exactly, strength
0 is no ControlNet, the take records them, different sets never share a batch; canny."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from graph_runtime.errors import ModelNotFoundError
from graph_runtime.templates import NullReporter
from nodes.diffusion.control_templates import canny, canny_edges, controlnet
from nodes.diffusion.controlnet import (
    ControlApplication,
    ControlNetCache,
    build_random_controlnet,
    find_file,
    load_controlnet,
)
from nodes.diffusion.demo import register_model
from nodes.diffusion.requests import GenerationRequest, InvalidGenerationRequest
from nodes.diffusion.templates import image_generation, image_to_image
from stores.home import TakeflowHome
from tests.nodes.conftest import FAST, service_for
from tests.nodes.controlnet_export import controlnet_to_ldm

GEN = {"prompt": "a house", "negative_prompt": "", "guidance": 7.5, "sigmas": "default",
       "model": "demo", "seed": 5, **{**FAST, "steps": 2}}  # fmt: skip


def _unet_config(model_dir: Path) -> dict[str, Any]:
    import json

    return dict(json.loads((model_dir / "unet" / "config.json").read_text()))


def _export(model: Any, folder: Path) -> dict[str, str]:
    """The ControlNet in every layout a controlnet folder may hold, by file name."""
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    folder.mkdir(parents=True, exist_ok=True)
    save_file(controlnet_to_ldm(state, model.config), str(folder / "comfy_cn.safetensors"))
    torch.save(controlnet_to_ldm(state, model.config, prefix=""), folder / "a1111" / "cn.pth")
    save_file(state, str(folder / "diffusers_cn.safetensors"))
    model.save_pretrained(folder / "cn_folder", safe_serialization=True)
    return {"comfy": "comfy_cn.safetensors", "a1111": "a1111/cn.pth",
            "single": "diffusers_cn.safetensors", "folder": "cn_folder"}  # fmt: skip


@pytest.fixture
def control_home(diffusion_home: TakeflowHome, tiny_model_dir: Path) -> dict[str, Any]:
    model = build_random_controlnet(_unet_config(tiny_model_dir), seed=3)
    (diffusion_home.path / "models" / "controlnet" / "a1111").mkdir(parents=True)
    names = _export(model, diffusion_home.path / "models" / "controlnet")
    return {"home": diffusion_home, "model": model, "names": names,
            "unet": _unet_config(tiny_model_dir)}  # fmt: skip


def _hint(seed: int) -> Image.Image:
    rng = np.random.RandomState(seed)
    return Image.fromarray((rng.rand(64, 64, 3) * 255).astype(np.uint8))


def test_every_file_layout_loads_back_exactly(control_home: dict[str, Any]) -> None:
    home: TakeflowHome = control_home["home"]
    service = service_for(home)
    folders = service.models.folders
    # The folder lists the single files and the diffusers folder's weights by relative path.
    listed = folders.names("controlnet")
    assert {"comfy_cn.safetensors", "a1111/cn.pth", "diffusers_cn.safetensors",
            "cn_folder/diffusion_pytorch_model.safetensors"} <= set(listed)  # fmt: skip
    want = control_home["model"].state_dict()
    for name in [*control_home["names"].values(), "cn_folder/diffusion_pytorch_model.safetensors"]:
        file = find_file(folders, name)
        assert file.path.is_dir() == name.startswith("cn_folder")
        got = load_controlnet(file.path, control_home["unet"], torch.float32,
                              home.path / "cfg").state_dict()  # fmt: skip
        assert set(got) == set(want), name
        assert all(torch.equal(got[k], want[k]) for k in want), name
    service.close()


def _generate(service: Any, control: Any, **extra: Any) -> tuple[np.ndarray, dict[str, Any]]:
    ctx = NullReporter(services={"diffusion": service})
    out = image_generation(ctx, {**GEN, **extra, "control": control})
    return np.asarray(out["image"]), ctx.metadata


def _control(name: str, strength: float, hint: int = 0, **kw: Any) -> Any:
    ctx_inputs = {"image": _hint(hint), "controlnet": name, "strength": strength,
                  "start": kw.get("start", 0.0), "end": kw.get("end", 1.0),
                  "control": kw.get("control")}  # fmt: skip
    return ctx_inputs


def test_strength_zero_is_no_controlnet_and_the_take_records_them(
    control_home: dict[str, Any],
) -> None:
    home: TakeflowHome = control_home["home"]
    service = service_for(home)
    ctx = NullReporter(services={"diffusion": service})
    comfy = control_home["names"]["comfy"]
    none, meta_none = _generate(service, None)
    zero = controlnet(ctx, _control(comfy, 0.0))["control"]
    one = controlnet(ctx, _control(comfy, 1.0))["control"]
    assert np.array_equal(_generate(service, zero)[0], none)
    guided, meta = _generate(service, one)
    assert np.abs(guided.astype(int) - none).mean() > 1.0
    assert "controlnets" not in meta_none
    digest = service.models.folders.describe(find_file(service.models.folders, comfy))["sha256"]
    assert meta["controlnets"] == [{"kind": "controlnet", "name": comfy, "sha256": digest,
                                    "strength": 1.0, "start": 0.0, "end": 1.0}]  # fmt: skip
    # Two ControlNets chained (a folder and an A1111 .pth), each with its own span.
    two = controlnet(
        ctx,
        _control(
            control_home["names"]["folder"],
            0.7,
            hint=1,
            start=0.5,
            control=controlnet(ctx, _control(control_home["names"]["a1111"], 0.5, end=0.5))[
                "control"
            ],
        ),
    )
    stacked, meta2 = _generate(service, two["control"])  # fmt: skip
    assert [(c["name"], c["strength"], c["start"], c["end"]) for c in meta2["controlnets"]] == [
        ("a1111/cn.pth", 0.5, 0.0, 0.5), ("cn_folder", 0.7, 0.5, 1.0)]  # fmt: skip
    assert not np.array_equal(stacked, guided)
    # Image to image takes the control too (the ControlNet img2img variant of the same weights).
    i2i = image_to_image(ctx, {**GEN, "image": Image.fromarray(none), "strength": 0.6,
                                "width": None, "height": None, "control": one})  # fmt: skip
    assert i2i["image"].size == (64, 64)
    assert service.scheduler.controlnets.loads == 3  # comfy, a1111, folder: each loaded once
    assert service.cache.loads == 1  # the base model was never reloaded
    service.close()


def test_bad_controls_name_the_field(control_home: dict[str, Any]) -> None:
    service = service_for(control_home["home"])
    ctx = NullReporter(services={"diffusion": service})
    with pytest.raises(ModelNotFoundError) as missing:
        controlnet(ctx, _control("nope.safetensors", 1.0))
    assert missing.value.details["port"] == "controlnet"
    assert "comfy_cn.safetensors" in missing.value.message
    with pytest.raises(InvalidGenerationRequest) as span:
        controlnet(ctx, _control(control_home["names"]["comfy"], 1.0, start=0.6, end=0.4))
    assert span.value.details["port"] == "end"
    with pytest.raises(InvalidGenerationRequest) as bad:
        _generate(service, [{"controlnet": "x"}])
    assert bad.value.details["port"] == "control"
    service.close()


def test_different_controlnet_sets_never_share_a_batch(control_home: dict[str, Any]) -> None:
    home: TakeflowHome = control_home["home"]
    service = service_for(home, max_batch_size=4, batch_window_s=3.0)
    ctx = NullReporter(services={"diffusion": service})
    comfy = control_home["names"]["comfy"]
    same = [controlnet(ctx, _control(comfy, 1.0, hint=h))["control"] for h in (0, 1)]
    other = controlnet(ctx, _control(comfy, 0.5))["control"]
    results: dict[int, Any] = {}

    def call(i: int, control: Any) -> None:
        ctx = NullReporter(services={"diffusion": service})
        results[i] = image_generation(ctx, {**GEN, "seed": i, "control": control})

    threads = [threading.Thread(target=call, args=(i, c))
               for i, c in enumerate([*same, other])]  # fmt: skip
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    # The two with the same ControlNet set (different hint images) ran as one call.
    assert sorted(b.size for b in service.batches) == [1, 2]
    a = GenerationRequest(prompt="x", controls=())
    assert a.batch_key() != GenerationRequest(prompt="x", controls=(_Key(1),)).batch_key()
    service.close()


class _Key:
    def __init__(self, n: int) -> None:
        self.n = n

    def key(self) -> tuple[int]:
        return (self.n,)


def test_sdxl_controlnet_from_a_comfyui_file(
    diffusion_home: TakeflowHome, tiny_sdxl_dir: Path
) -> None:
    from safetensors.torch import save_file

    register_model(diffusion_home, "xl", tiny_sdxl_dir)
    model = build_random_controlnet(_unet_config(tiny_sdxl_dir), seed=4)
    assert model.config.addition_embed_type == "text_time"
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    folder = diffusion_home.path / "models" / "controlnet"
    folder.mkdir(parents=True)
    save_file(controlnet_to_ldm(state, model.config), str(folder / "xl_cn.safetensors"))
    service = service_for(diffusion_home)
    ctx = NullReporter(services={"diffusion": service})
    control = controlnet(ctx, _control("xl_cn.safetensors", 1.0))["control"]
    plain, _ = _generate(service, None, model="xl")
    guided, meta = _generate(service, control, model="xl")
    assert guided.shape == (64, 64, 3) and not np.array_equal(plain, guided)
    assert meta["controlnets"][0]["name"] == "xl_cn.safetensors"
    service.close()


def test_canny_finds_the_edges_of_a_square() -> None:
    image = Image.new("RGB", (64, 64), "black")
    ImageDraw.Draw(image).rectangle((16, 16, 47, 47), fill="white")
    edges = canny_edges(image, 0.4, 0.8)
    assert edges[30, 14:19].any() and edges[14:19, 30].any()  # the left and top borders
    assert not edges[24:40, 24:40].any() and not edges[:8, :8].any()  # flat areas: none
    out = canny(NullReporter(), {"image": image, "low_threshold": 0.4, "high_threshold": 0.8})
    assert out["image"].size == (64, 64) and out["image"].mode == "RGB"
    # A faint square: under the high threshold nothing is an edge.
    faint = Image.new("RGB", (64, 64), (100, 100, 100))
    ImageDraw.Draw(faint).rectangle((16, 16, 47, 47), fill=(110, 110, 110))
    assert not canny_edges(faint, 0.4, 0.8).any() and canny_edges(faint, 0.01, 0.05).any()
    with pytest.raises(InvalidGenerationRequest) as bad:
        canny(NullReporter(), {"image": image, "low_threshold": 0.9, "high_threshold": 0.5})
    assert bad.value.details["port"] == "low_threshold"
    assert ControlApplication("x", None).strength == 1.0 and ControlNetCache().loads == 0


@pytest.mark.parametrize("path", ["server/demo/canvases/controlnet.takeflow.json",
                                  "examples/controlnet.json"])  # fmt: skip
def test_the_demo_controlnet_canvas_runs_and_its_take_names_the_controlnet(
    path: str, diffusion_runtime: Any, project: Any, tiny_model_dir: Path
) -> None:
    import json

    from graph_runtime.canvas import CanvasGraph
    from graph_runtime.events import RecordingSink
    from graph_runtime.tasks import TaskStatus
    from nodes.diffusion.controlnet import DEMO_CONTROLNET, ensure_demo_controlnet

    home = diffusion_runtime.home.path
    demo_cn = ensure_demo_controlnet(home, tiny_model_dir)
    assert (
        demo_cn.name == DEMO_CONTROLNET and ensure_demo_controlnet(home, tiny_model_dir) == demo_cn
    )
    raw = json.loads((Path(__file__).resolve().parents[2] / path).read_text())
    for node in raw["nodes"]:  # smaller and quicker than the demo's 256 px, 8 steps
        for name, value in {"width": 64, "height": 64, "steps": 2}.items():
            if name in node["inputs"] and node["template"] != "text_overlay":
                node["inputs"][name] = {"kind": "literal", "value": value}
    graph = CanvasGraph.model_validate(raw)
    sink = RecordingSink()
    diffusion_runtime.runner.add_sink(sink)
    record = diffusion_runtime.runner.submit(graph, project_id="demo", shot="ch01/sc02/sh020")
    sink.wait_terminal(record.task_id, timeout=120)
    record = diffusion_runtime.runner.get(record.task_id)
    assert record.status == TaskStatus.COMPLETED, record.error
    take = project.takes.list("ch01/sc02/sh020")[0]
    (used,) = take.metadata["controlnets"]
    assert used["name"] == DEMO_CONTROLNET and used["sha256"].startswith("sha256:")


def test_a_literal_control_is_refused_on_the_port() -> None:
    from graph_runtime.canvas import CanvasGraph
    from graph_runtime.errors import GraphValidationError
    from graph_runtime.registry import TemplateRegistry
    from graph_runtime.validation import validate_graph

    graph = CanvasGraph.model_validate({"name": "c", "nodes": [
        {"id": "gen", "template": "image_generation", "inputs": {
            "prompt": {"kind": "literal", "value": "x"},
            "control": {"kind": "literal", "value": [{"controlnet": "a"}]}}}]})  # fmt: skip
    with pytest.raises(GraphValidationError) as bad:
        validate_graph(graph, TemplateRegistry.discover())
    (issue,) = bad.value.issues
    assert (issue.code, issue.node_id, issue.port) == ("invalid_type", "gen", "control")


def test_at_most_four_controlnets_stay_loaded(control_home: dict[str, Any]) -> None:
    from nodes.diffusion.controlnet import MAX_LOADED, resolve_controls

    home: TakeflowHome = control_home["home"]
    service = service_for(home)
    folder = home.path / "models" / "controlnet"
    for i in range(1):  # five files in all, with the four layouts
        (folder / f"copy{i}.safetensors").write_bytes(
            (folder / "comfy_cn.safetensors").read_bytes()
        )
    base = service.cache.get(service.models.resolve("demo"), "cpu").pipe
    cache = ControlNetCache(home.path / "cfg")
    names = [*control_home["names"].values(), "copy0.safetensors"]
    specs = [resolve_controls(service.models.folders, (ControlApplication(n, _hint(0)),))[0]
             for n in names]  # fmt: skip
    first = cache.pipeline(base, "text_to_image", (specs[0],))
    assert cache.pipeline(base, "text_to_image", (specs[0],)) is first  # the variant is kept
    for spec in specs[1:]:
        cache.model(spec, base)
    assert cache.loads == MAX_LOADED + 1 == 5
    cache.model(specs[-1], base)  # the newest stays loaded
    assert cache.loads == 5
    assert cache.pipeline(base, "text_to_image", (specs[0],)) is not first  # evicted: reloaded
    assert cache.loads == 6
    with pytest.raises(InvalidGenerationRequest):
        cache.pipeline(base, "inpaint", (specs[0],))
    service.close()
