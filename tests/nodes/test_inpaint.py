"""Inpaint on CPU with tiny random-weight models: an ordinary checkpoint (4-channel UNet) and an
inpainting one (9-channel, built and loaded back from its diffusers folder). Every pixel outside
the mask must come back bit for bit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from graph_runtime.canvas import CanvasGraph
from graph_runtime.tasks import TaskStatus
from graph_runtime.templates import NullReporter
from nodes.diffusion.demo import register_model
from nodes.diffusion.inpaint import TEMPLATES, inpaint
from nodes.diffusion.requests import INPAINT, GenerationRequest, InvalidGenerationRequest
from stores.home import TakeflowHome
from tests.nodes.conftest import service_for
from tests.nodes.test_diffusion import SHOT, run

pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)
FAST = {
    "steps": 3,
    "guidance": 7.5,
    "scheduler": "euler",
    "sigmas": "default",
    "seed": 5,
    "prompt": "a red door",
    "negative_prompt": "",
    "strength": 1.0,
    "grow": 0,
    "feather": 0,
}


@pytest.fixture(scope="module")
def inpaint_model_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    from nodes.diffusion.inpaint_demo import build_random_inpaint_pipeline

    folder = tmp_path_factory.mktemp("inpaint") / "demo-inpaint"
    return build_random_inpaint_pipeline(folder, base=tiny_model_dir)


def picture(width: int = 72, height: int = 64) -> Image.Image:
    rng = np.random.default_rng(3)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")


def box_mask(size: tuple[int, int], box: tuple[int, int, int, int]) -> Image.Image:
    mask = Image.new("L", size, 0)
    mask.paste(255, box)
    return mask


def call(diffusion_home: TakeflowHome, model: str, **inputs: Any) -> tuple[Any, NullReporter]:
    service = service_for(diffusion_home)
    ctx = NullReporter(services={"diffusion": service})
    try:
        return inpaint(ctx, {**FAST, "model": model, **inputs}), ctx
    finally:
        service.close()


@pytest.mark.parametrize("model", ["demo", "demo-inpaint"])
def test_inpaint_keeps_every_pixel_outside_the_mask(
    diffusion_home: TakeflowHome, inpaint_model_dir: Path, model: str
) -> None:
    register_model(diffusion_home, "demo-inpaint", inpaint_model_dir, demo=True)
    image = picture()
    mask = box_mask(image.size, (16, 8, 48, 40))
    out, ctx = call(diffusion_home, model, image=image, mask=mask, grow=4, feather=3)

    result = np.asarray(out["image"])
    before = np.asarray(image)
    assert out["image"].size == image.size == (72, 64)  # generated at 72x64 -> composited back
    grown = np.zeros((64, 72), bool)
    grown[4:44, 12:52] = True  # the box grown by 4 on every side
    assert np.array_equal(result[~grown], before[~grown])  # exact, outside the grown mask
    inside = np.asarray(mask) > 0
    assert np.abs(result[inside].astype(int) - before[inside]).mean() > 10  # it repainted
    channels = 9 if model == "demo-inpaint" else 4
    assert ctx.metadata["inpaint"]["unet_in_channels"] == channels
    assert ctx.metadata["model"] == model and ctx.metadata["demo"] is True


def test_sdxl_inpaint_keeps_every_pixel_outside_the_mask(
    diffusion_home: TakeflowHome, tiny_sdxl_dir: Path
) -> None:
    register_model(diffusion_home, "xl", tiny_sdxl_dir)
    image = picture(64, 64)
    mask = box_mask(image.size, (8, 16, 40, 48))
    out, ctx = call(diffusion_home, "xl", image=image, mask=mask, steps=2)
    keep = np.asarray(mask) == 0
    assert np.array_equal(np.asarray(out["image"])[keep], np.asarray(image)[keep])
    assert not np.array_equal(np.asarray(out["image"])[~keep], np.asarray(image)[~keep])
    assert ctx.metadata["inpaint"]["unet_in_channels"] == 4


def test_inpaint_in_a_graph_makes_a_take(diffusion_runtime: Any, project: Any) -> None:
    graph = CanvasGraph.model_validate({
        "name": "inpaint",
        "nodes": [
            {"id": "start", "template": "noise_image",
             "inputs": {"width": {"kind": "literal", "value": 64},
                        "height": {"kind": "literal", "value": 64}}},
            {"id": "half", "template": "gradient_image",
             "inputs": {"width": {"kind": "literal", "value": 64},
                        "height": {"kind": "literal", "value": 64},
                        "direction": {"kind": "literal", "value": "horizontal"}}},
            {"id": "mask", "template": "image_to_mask",
             "inputs": {"image": {"kind": "link", "node": "half", "output": "image"}}},
            {"id": "paint", "template": "inpaint",
             "inputs": {"image": {"kind": "link", "node": "start", "output": "image"},
                        "mask": {"kind": "link", "node": "mask", "output": "mask"},
                        "prompt": {"kind": "literal", "value": "sky"},
                        "steps": {"kind": "literal", "value": 2},
                        "seed": {"kind": "literal", "value": 3}}},
        ],
    })  # fmt: skip
    record, _ = run(diffusion_runtime, graph, project_id="demo", shot=SHOT)
    assert record.status == TaskStatus.COMPLETED, record.error
    take = project.takes.list(SHOT)[0]
    result = np.asarray(Image.open(project.abs(take.outputs["image"].path)).convert("RGB"))
    assert result.shape == (64, 64, 3)
    assert take.metadata["node_metadata"]["paint"]["inpaint"]["unet_in_channels"] == 4
    assert take.metadata["inpaint"]["composited"] is True


def test_masks_batch_separately() -> None:
    image = picture(64, 64)
    a = GenerationRequest("x", kind=INPAINT, width=64, height=64, image=image,
                          mask=box_mask((64, 64), (0, 0, 8, 8)))  # fmt: skip
    same = GenerationRequest("y", kind=INPAINT, width=64, height=64, image=picture(64, 64),
                             mask=box_mask((64, 64), (0, 0, 8, 8)))  # fmt: skip
    other = GenerationRequest("x", kind=INPAINT, width=64, height=64, image=image,
                              mask=box_mask((64, 64), (0, 0, 8, 16)))  # fmt: skip
    assert a.batch_key() == same.batch_key()
    assert a.batch_key() != other.batch_key()
    with pytest.raises(InvalidGenerationRequest) as caught:
        GenerationRequest("x", kind=INPAINT, width=64, height=64, image=image).check()
    assert caught.value.details["port"] == "mask"


def test_template_is_published() -> None:
    (template,) = TEMPLATES
    assert template.id == "inpaint"
    assert {"image", "mask", "strength", "grow", "feather", "model"} <= {
        i.name for i in template.inputs
    }


@pytest.mark.parametrize("canvas", ["inpaint", "outpaint"])
def test_demo_canvases_run_on_the_demo_inpainting_model(
    diffusion_runtime: Any, project: Any, inpaint_model_dir: Path, canvas: str
) -> None:
    import json

    register_model(diffusion_runtime.home, "demo-inpaint", inpaint_model_dir, demo=True)
    root = Path(__file__).resolve().parents[2]
    raw = json.loads((root / "server/demo/canvases" / f"{canvas}.takeflow.json").read_text())
    assert raw == json.loads((root / "examples" / f"{canvas}.json").read_text())
    for node in raw["nodes"]:  # quick: 2 steps
        if node["template"] == "inpaint":
            node["inputs"]["steps"] = {"kind": "literal", "value": 2}
    record, _ = run(diffusion_runtime, CanvasGraph.model_validate(raw), project_id="demo",
                    shot=SHOT)  # fmt: skip
    assert record.status == TaskStatus.COMPLETED, record.error
    take = project.takes.list(SHOT)[0]
    image = np.asarray(Image.open(project.abs(take.outputs["image"].path)).convert("RGB"))
    assert take.metadata["inpaint"]["unet_in_channels"] == 9
    assert image.shape == (256, 256, 3)
    if canvas == "outpaint":  # 192x192 padded by 32 left/right and 64 below; feather 16
        from nodes.builtin import gradient_image

        literals = {k: v["value"] for k, v in raw["nodes"][0]["inputs"].items()}
        photo = np.asarray(gradient_image(NullReporter(), {"direction": "vertical", **literals})
                           ["image"].convert("RGB"))  # fmt: skip
        assert np.array_equal(image[0:176, 48:208], photo[0:176, 16:176])


def test_same_masks_share_a_batched_call_and_different_masks_do_not(
    diffusion_home: TakeflowHome,
) -> None:
    """Three inpaints at once: the two with one mask run as one batch (each its own image and
    seed, each unchanged outside the mask), the third (another mask) alone."""
    import threading

    service = service_for(diffusion_home, max_batch_size=4, batch_window_ms=1500)
    one, other = box_mask((64, 64), (8, 8, 40, 40)), box_mask((64, 64), (24, 24, 56, 56))
    rng = np.random.default_rng(9)
    images = [Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)) for _ in range(3)]
    out: dict[int, Any] = {}

    def call(i: int, mask: Image.Image) -> None:
        ctx = NullReporter(services={"diffusion": service})
        out[i] = inpaint(ctx, {**FAST, "model": "demo", "seed": i, "image": images[i],
                               "mask": mask, "steps": 2})  # fmt: skip

    threads = [threading.Thread(target=call, args=(i, m))
               for i, m in enumerate((one, one, other))]  # fmt: skip
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert sorted(b.size for b in service.batches) == [1, 2]
        for i, mask in enumerate((one, one, other)):
            keep = np.asarray(mask) == 0
            assert np.array_equal(np.asarray(out[i]["image"])[keep], np.asarray(images[i])[keep])
            assert out[i]["seed"] == i
    finally:
        service.close()


def test_an_empty_mask_returns_the_image_and_a_small_image_is_refused() -> None:
    ctx = NullReporter()  # no diffusion service: neither case reaches the model
    image = picture(64, 64)
    out = inpaint(ctx, {**FAST, "model": "demo", "image": image, "mask": Image.new("L", (64, 64))})
    assert out["image"] is image and ctx.metadata["inpaint"] == {"empty_mask": True}
    with pytest.raises(InvalidGenerationRequest) as caught:
        inpaint(ctx, {**FAST, "model": "demo", "image": picture(40, 64),
                      "mask": box_mask((40, 64), (0, 0, 8, 8))})  # fmt: skip
    assert caught.value.details["port"] == "image" and "at least 64x64" in caught.value.message
