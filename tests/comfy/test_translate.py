"""The translation in isolation (no server): ComfyUI prompt -> Takeflow graph -> messages,
checked against the real template registry and Takeflow's real graph validation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from graph_runtime.canvas import CanvasGraph
from graph_runtime.errors import GraphValidationError
from graph_runtime.registry import TemplateRegistry
from graph_runtime.validation import validate_graph
from server.comfy.bridge import Event, Limits
from server.comfy.catalog import Catalog
from server.comfy.errors import PromptRejected
from server.comfy.store import PromptRow
from server.comfy.stream import PromptStream, rebuild
from server.comfy.translate import Translation, Translator, map_issues
from server.comfy.validate import validate_prompt
from tests.comfy.client import txt2img

REGISTRY = TemplateRegistry.discover()


def limits(template: str, port: str) -> Limits:
    spec = REGISTRY.get(template).input(port)
    assert spec is not None
    return Limits(spec.default, spec.minimum, spec.maximum, spec.multiple_of)


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    (tmp_path / "plate.png").write_bytes(b"\x89PNG not really")
    return Catalog(lambda: ["demo"], lambda: ["plate.png"], limits)


def translate(prompt: dict[str, Any], catalog: Catalog, input_dir: Path) -> Translation:
    checked, outputs, needed = validate_prompt(prompt, catalog)
    return Translator(checked, outputs, needed, catalog, input_dir).translate()


def nodes_of(translation: Translation) -> dict[str, dict[str, Any]]:
    return {
        n["id"]: {
            "template": n["template"],
            **{k: v.get("value", (v.get("node"), v.get("output"))) for k, v in n["inputs"].items()},
        }
        for n in translation.graph["nodes"]
    }


def test_batch_becomes_one_generation_per_image(catalog: Catalog, tmp_path: Path) -> None:
    prompt = txt2img(seed=2**32 - 1, batch=3, size=64)
    translation = translate(prompt, catalog, tmp_path)
    nodes = nodes_of(translation)
    assert list(translation.samplers) == ["3"] and len(translation.samplers["3"]) == 3
    seeds = [nodes[n]["seed"] for n in translation.samplers["3"]]
    assert seeds == [2**32 - 1, 0, 1]  # seed..seed+N-1, in Takeflow's 32-bit seed space
    first = nodes[translation.samplers["3"][0]]
    assert first["template"] == "image_generation" and first["prompt"].startswith("masterpiece")
    assert (first["negative_prompt"], first["guidance"], first["model"]) == ("bad hands", 8, "demo")
    assert translation.order == ["4", "5", "6", "7", "3", "8", "9"]
    assert [o.refs for o in translation.outputs] == [
        [(n, "image") for n in translation.samplers["3"]]
    ]
    validate_graph(CanvasGraph.model_validate(translation.graph), REGISTRY)  # Takeflow accepts it


def test_image_to_image_uses_comfyui_step_semantics(catalog: Catalog, tmp_path: Path) -> None:
    prompt = txt2img(steps=20)
    prompt["10"] = {"class_type": "LoadImage", "inputs": {"image": "plate.png"}}
    prompt["11"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["10", 0], "vae": ["4", 2]}}
    prompt["3"]["inputs"].update(latent_image=["11", 0], denoise=0.87)
    del prompt["5"]
    translation = translate(prompt, catalog, tmp_path)
    nodes = nodes_of(translation)
    sampler = nodes[translation.samplers["3"][0]]
    assert sampler["template"] == "image_to_image"
    assert sampler["strength"] == 0.87 and sampler["steps"] == 23  # int(23 * 0.87) == 20
    loader = next(n for n in nodes.values() if n["template"] == "load_asset")
    assert loader["asset"].startswith("asset://uploads/comfyui/")
    assert sampler["image"][0] == next(k for k, n in nodes.items() if n is loader)
    assert list(translation.imports.values()) == ["plate.png"]


@pytest.mark.parametrize(
    ("change", "node", "input_name"),
    [
        (lambda p: p["3"]["inputs"].update(denoise=0.5), "3", "denoise"),
        (
            lambda p: (
                p.update(
                    {
                        "12": {
                            "class_type": "KSampler",
                            "inputs": {**p["3"]["inputs"], "latent_image": ["3", 0]},
                        }
                    }
                )
                or p["8"]["inputs"].update(samples=["12", 0])
            ),
            "12",
            "latent_image",
        ),
        (lambda p: p["9"]["inputs"].update(filename_prefix="/abs/x"), "9", "filename_prefix"),
    ],
)
def test_unsupported_graphs_name_the_input(
    catalog: Catalog, tmp_path: Path, change: Any, node: str, input_name: str
) -> None:
    prompt = txt2img()
    change(prompt)
    with pytest.raises(PromptRejected) as rejected:
        translate(prompt, catalog, tmp_path)
    error = rejected.value.node_errors[node]["errors"][0]
    assert error["type"] == "custom_validation_failed"
    assert error["extra_info"]["input_name"] == input_name


def test_takeflow_issues_come_back_on_comfyui_inputs(catalog: Catalog, tmp_path: Path) -> None:
    prompt = txt2img(size=100, steps=0)
    prompt["3"]["inputs"]["cfg"] = 31.0
    translation = translate(prompt, catalog, tmp_path)  # ranges are Takeflow's to check
    with pytest.raises(GraphValidationError) as invalid:
        validate_graph(CanvasGraph.model_validate(translation.graph), REGISTRY)
    rejected = map_issues(list(invalid.value.issues), translation, prompt, ["9"], catalog)
    found = {
        (nid, e["extra_info"]["input_name"], e["type"])
        for nid, entry in rejected.node_errors.items()
        for e in entry["errors"]
    }
    assert found == {
        ("5", "width", "custom_validation_failed"),  # not a multiple of 8
        ("5", "height", "custom_validation_failed"),
        ("3", "steps", "value_smaller_than_min"),
        ("3", "cfg", "value_bigger_than_max"),
    }
    assert all(entry["dependent_outputs"] == ["9"] for entry in rejected.node_errors.values())


def event(seq: int, type_: str, **data: Any) -> Event:
    return Event(type_, "task_x", seq, 100 + seq, 1_800_000_000.0 + seq, data)


def test_live_and_rebuilt_streams_are_the_same(catalog: Catalog, tmp_path: Path) -> None:
    translation = translate(txt2img(batch=2), catalog, tmp_path)
    first, second = translation.samplers["3"]
    row = PromptRow(
        "p1", "task_x", 1, "c1", "u", "proj", 0.0, txt2img(), {}, ["9"], translation, None
    )
    url = "/api/v1/projects/proj/files/05_Cache/previews/task_x/a_001.png"
    events = [
        event(1, "task.submitted"),
        event(2, "task.started"),
        event(3, "node.state", node_id=first, state="running"),
        event(4, "node.state", node_id=second, state="running"),
        event(
            5,
            "task.progress",
            node_id=first,
            stage="denoising",
            message="step 1 of 2",
            preview_url=url,
        ),
        event(6, "task.progress", node_id=second, stage="denoising", message="step 1 of 2"),
        event(7, "task.progress", node_id=first, stage="denoising", message="step 2 of 2"),
        event(8, "task.completed"),
    ]
    history = {
        "outputs": {"9": {"images": []}},
        "status": {
            "status_str": "success",
            "completed": True,
            "messages": [["execution_success", {"prompt_id": "p1", "timestamp": 1}]],
        },
    }
    live = PromptStream(row)
    outs = [o for e in events for o in live.feed(e)]
    outs += live.feed(events[3])  # a duplicate event adds nothing
    outs += live.finish(history)
    rebuilt = rebuild(PromptRow(**{**row.__dict__, "history": history}), events)
    assert outs == rebuilt
    assert [o.index for o in outs] == list(range(1, len(outs) + 1))
    kinds = [o.text["type"] if o.text else "frame" for o in outs]
    assert kinds == [
        "execution_start",
        "execution_cached",
        "executing",
        "executing",
        "executing",
        "executing",
        "executing",
        "progress",
        "frame",
        "progress",
        "executing",
        "executing",
        "executed",
        "execution_success",
        "executing",
    ]
    assert outs[-1].final and outs[-1].text == {
        "type": "executing",
        "data": {"node": None, "display_node": None, "prompt_id": "p1"},
    }
