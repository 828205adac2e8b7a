"""ComfyUI inpaint and outpaint: the translation in isolation, then API-format workflows posted
to ``serve --demo --comfy-port`` (an ordinary and a 9-channel inpainting checkpoint) with the
images read back and checked: pixels outside the mask unchanged, the outpaint at its padded size.
"""

from __future__ import annotations

import io
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from graph_runtime.canvas import CanvasGraph
from graph_runtime.validation import validate_graph
from server.comfy.catalog import Catalog
from server.comfy.errors import PromptRejected
from tests.comfy.client import ComfyClient, of_prompt, txt2img, until_done
from tests.comfy.conftest import comfy_server
from tests.comfy.test_translate import REGISTRY, limits, nodes_of, translate
from tests.server.harness import ServerProcess

pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)


def inpaint_prompt(ckpt: str = "demo", image: str = "plate.png", mask: str = "mask.png",
                   grow: int = 0, denoise: float = 1.0) -> dict[str, Any]:  # fmt: skip
    """LoadImage + LoadImageMask + VAEEncodeForInpaint + KSampler + SaveImage."""
    prompt = txt2img(seed=3, ckpt=ckpt, steps=2)
    del prompt["5"]
    prompt["3"]["inputs"].update(latent_image=["12", 0], denoise=denoise)
    prompt["10"] = {"class_type": "LoadImage", "inputs": {"image": image}}
    prompt["11"] = {"class_type": "LoadImageMask", "inputs": {"image": mask, "channel": "alpha"}}
    prompt["12"] = {"class_type": "VAEEncodeForInpaint",
                    "inputs": {"pixels": ["10", 0], "vae": ["4", 2], "mask": ["11", 0],
                               "grow_mask_by": grow}}  # fmt: skip
    return prompt


def outpaint_prompt(ckpt: str = "demo-inpaint") -> dict[str, Any]:
    """LoadImage + ImagePadForOutpaint + VAEEncodeForInpaint + KSampler + SaveImage."""
    prompt = inpaint_prompt(ckpt)
    del prompt["11"]
    prompt["13"] = {"class_type": "ImagePadForOutpaint",
                    "inputs": {"image": ["10", 0], "left": 16, "top": 0, "right": 8,
                               "bottom": 8, "feathering": 0}}  # fmt: skip
    prompt["12"]["inputs"].update(pixels=["13", 0], mask=["13", 1])
    return prompt


def plate() -> Image.Image:
    rng = np.random.default_rng(4)
    return Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), "RGB")


def mask_png() -> bytes:
    """Transparent (= the mask, as LoadImageMask's alpha) over a 24x24 square, opaque elsewhere."""
    image = Image.new("RGBA", (64, 64), (0, 0, 0, 255))
    image.paste((0, 0, 0, 0), (20, 20, 44, 44))
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


# -- translation ------------------------------------------------------------------------------


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    (tmp_path / "plate.png").write_bytes(png(plate()))
    (tmp_path / "mask.png").write_bytes(mask_png())
    return Catalog(lambda: ["demo"], lambda: ["plate.png", "mask.png"], limits)


def test_inpaint_translates_to_load_mask_and_inpaint(catalog: Catalog, tmp_path: Path) -> None:
    translation = translate(inpaint_prompt(grow=6, denoise=0.5), catalog, tmp_path)
    nodes = nodes_of(translation)
    (sampler,) = translation.samplers["3"]
    node = nodes[sampler]
    assert node["template"] == "inpaint"
    assert (node["strength"], node["steps"], node["grow"]) == (0.5, 4, 6)
    mask = nodes[node["mask"][0]]
    assert mask["template"] == "load_mask" and node["mask"][1] == "mask"
    assert (mask["channel"], mask["invert"], mask["threshold"]) == ("alpha", True, 0.0)
    assert nodes[node["image"][0]]["template"] == "load_asset"
    assert sorted(translation.imports.values()) == ["mask.png", "plate.png"]
    assert any("composites" in n for n in translation.notes)
    validate_graph(CanvasGraph.model_validate(translation.graph), REGISTRY)


def test_outpaint_and_conditioning_and_noise_mask(catalog: Catalog, tmp_path: Path) -> None:
    translation = translate(outpaint_prompt("demo"), catalog, tmp_path)
    nodes = nodes_of(translation)
    node = nodes[translation.samplers["3"][0]]
    pad = nodes[node["image"][0]]
    assert pad["template"] == "pad_for_outpaint" and node["mask"] == (node["image"][0], "mask")
    assert (pad["left"], pad["right"], pad["bottom"], pad["fill"]) == (16, 8, 8, "gray")
    validate_graph(CanvasGraph.model_validate(translation.graph), REGISTRY)

    # InpaintModelConditioning: its prompts are the ones it was given.
    prompt = inpaint_prompt()
    prompt["12"] = {"class_type": "InpaintModelConditioning",
                    "inputs": {"positive": ["6", 0], "negative": ["7", 0], "vae": ["4", 2],
                               "pixels": ["10", 0], "mask": ["11", 0],
                               "noise_mask": False}}  # fmt: skip
    prompt["3"]["inputs"].update(positive=["12", 0], negative=["12", 1], latent_image=["12", 2])
    translation = translate(prompt, catalog, tmp_path)
    node = nodes_of(translation)[translation.samplers["3"][0]]
    assert node["template"] == "inpaint" and node["prompt"].startswith("masterpiece")
    assert node["negative_prompt"] == "bad hands"
    assert any("noise_mask" in n for n in translation.notes)

    # SetLatentNoiseMask over a VAEEncode; ImageToMask of the loaded image.
    prompt = inpaint_prompt(denoise=0.8)
    prompt["11"] = {"class_type": "ImageToMask", "inputs": {"image": ["10", 0], "channel": "red"}}
    prompt["14"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["10", 0], "vae": ["4", 2]}}
    prompt["12"] = {"class_type": "SetLatentNoiseMask",
                    "inputs": {"samples": ["14", 0], "mask": ["11", 0]}}  # fmt: skip
    nodes = nodes_of(translate(prompt, catalog, tmp_path))
    node = next(n for n in nodes.values() if n["template"] == "inpaint")
    assert nodes[node["mask"][0]]["template"] == "image_to_mask" and node["strength"] == 0.8


def test_set_latent_noise_mask_needs_an_encoded_image(catalog: Catalog, tmp_path: Path) -> None:
    prompt = txt2img()
    prompt["11"] = {"class_type": "LoadImageMask", "inputs": {"image": "mask.png",
                                                              "channel": "alpha"}}  # fmt: skip
    prompt["12"] = {"class_type": "SetLatentNoiseMask",
                    "inputs": {"samples": ["5", 0], "mask": ["11", 0]}}  # fmt: skip
    prompt["3"]["inputs"]["latent_image"] = ["12", 0]
    with pytest.raises(PromptRejected) as rejected:
        translate(prompt, catalog, tmp_path)
    error = rejected.value.node_errors["3"]["errors"][0]
    assert error["extra_info"]["input_name"] == "latent_image"


# -- through the protocol ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def inpaint_server(
    tmp_path_factory: pytest.TempPathFactory, demo_model_dir: Path
) -> Iterator[tuple[ServerProcess, ComfyClient]]:
    from nodes.diffusion.inpaint_demo import build_random_inpaint_pipeline

    home = tmp_path_factory.mktemp("comfy-inpaint") / "home"
    build_random_inpaint_pipeline(home / "models" / "demo-inpaint", base=demo_model_dir)
    with comfy_server(home, demo=demo_model_dir) as pair:
        yield pair


def _run(client: ComfyClient, prompt: dict[str, Any]) -> tuple[dict[str, Any], Image.Image]:
    client_id = uuid.uuid4().hex
    ws = client.connect(client_id, timeout=120)  # the first prompt loads the model: quiet
    try:
        prompt_id = client.queue_prompt(prompt, client_id)["prompt_id"]
        messages = of_prompt(until_done(ws, prompt_id, timeout=120), prompt_id)
    finally:
        ws.close()
    assert [m for m in messages if isinstance(m, dict)][-2]["type"] == "execution_success"
    _, history = client.get(f"/history/{prompt_id}")
    entry = history[prompt_id]
    status, data = client.view(entry["outputs"]["9"]["images"][0])
    assert status == 200
    return entry, Image.open(io.BytesIO(data)).convert("RGB")


def test_inpaint_and_outpaint_workflows(inpaint_server: tuple[ServerProcess, ComfyClient]) -> None:
    server, client = inpaint_server
    source = plate()
    assert client.upload("plate.png", png(source))[0] == 200
    assert client.upload("mask.png", mask_png())[0] == 200
    _, info = client.get("/object_info")
    wanted = {"LoadImageMask", "VAEEncodeForInpaint", "ImagePadForOutpaint",
              "InpaintModelConditioning", "SetLatentNoiseMask", "ImageToMask"}  # fmt: skip
    assert wanted <= set(info)
    assert "demo-inpaint" in info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0]

    outside = np.ones((64, 64), bool)
    outside[20:44, 20:44] = False
    for ckpt in ("demo", "demo-inpaint"):
        entry, image = _run(client, inpaint_prompt(ckpt))
        result, before = np.asarray(image), np.asarray(source)
        assert image.size == (64, 64)
        assert np.array_equal(result[outside], before[outside]), ckpt  # bit for bit
        assert not np.array_equal(result[~outside], before[~outside]), ckpt
        take = server.ok("GET", "/api/v1/projects/comfyui/takes",
                         params={"task_id": entry["takeflow"]["task_id"]})[0]  # fmt: skip
        channels = 9 if ckpt == "demo-inpaint" else 4
        assert take["metadata"]["inpaint"]["unet_in_channels"] == channels
        assert take["metadata"]["model"] == ckpt
        assert any("composites" in n for n in take["metadata"]["comfyui_notes"])
        task = server.ok("GET", f"/api/v1/functions/tasks/{entry['takeflow']['task_id']}")
        assert task["status"] == "completed" and task["dagster_run_id"] and task["commit"]

    entry, image = _run(client, outpaint_prompt())
    assert image.size == (16 + 64 + 8, 64 + 8)
    result = np.asarray(image)
    assert np.array_equal(result[0:64, 16:80], np.asarray(source))  # the old image untouched
    assert entry["status"]["status_str"] == "success"


def test_demo_inpaint_model_is_copied_from_the_demo(tmp_path: Path, demo_model_dir: Path) -> None:
    """``serve --demo`` makes demo-inpaint from the built demo folder: same parts, 9-ch UNet."""
    from nodes.diffusion.demo import ensure_demo_model
    from stores.home import TakeflowHome

    home = TakeflowHome.resolve(tmp_path / "home")
    shutil.copytree(demo_model_dir, home.path / "models" / "demo")
    ensure_demo_model(home)
    models = home.config()["models"]
    assert models["demo-inpaint"]["demo"] is True and "Demo" in models["demo-inpaint"]["label"]
    folder = Path(models["demo-inpaint"]["path"])
    import json

    assert json.loads((folder / "unet" / "config.json").read_text())["in_channels"] == 9
    assert (folder / "vae").is_dir() and "Inpaint" in (folder / "model_index.json").read_text()
