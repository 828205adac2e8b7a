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
from nodes.diffusion.requests import SIGMA_SCHEDULERS, GenerationRequest
from server.comfy.bridge import Event, Limits
from server.comfy.catalog import (
    REFUSED_SAMPLERS,
    SAMPLER_NOTES,
    SAMPLERS,
    SCHEDULERS,
    SIGMA_SAMPLERS,
    SIGMAS,
    Catalog,
)
from server.comfy.errors import PromptRejected
from server.comfy.issues import map_issues
from server.comfy.store import PromptRow
from server.comfy.stream import PromptStream, rebuild
from server.comfy.translate import Translation, Translator
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
    states = [
        o.text["data"]["nodes"] for o in outs if o.text and o.text["type"] == "progress_state"
    ]
    kinds = [k for k in kinds if k != "progress_state"]
    # progress_state: each node that is not pending, with its state; the sampler's steps
    assert states[0] == {"4": {**_state("4"), "state": "running"}} and states[0]["4"]["max"] == 1
    stepped = next(s for s in states if s.get("3", {}).get("value") == 1)
    assert stepped["3"] == {**_state("3"), "state": "running", "value": 1, "max": 2}
    assert all(n["state"] == "finished" for n in states[-1].values()) and "9" in states[-1]
    assert set(states[-1]) == {"3", "4", "5", "6", "7", "8", "9"}
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


def _state(nid: str) -> dict[str, Any]:
    return {"value": 0, "max": 1, "state": "running", "node_id": nid, "prompt_id": "p1",
            "display_node_id": nid, "parent_node_id": None, "real_node_id": nid}  # fmt: skip


def sampler_of(prompt: dict[str, Any], catalog: Catalog, tmp_path: Path) -> tuple[Any, Translation]:
    translation = translate(prompt, catalog, tmp_path)
    return nodes_of(translation)[translation.samplers["3"][0]], translation


@pytest.mark.parametrize("sampler_name", list(SAMPLERS))
def test_every_offered_sampler_runs_as_its_takeflow_sampler(
    catalog: Catalog, tmp_path: Path, sampler_name: str
) -> None:
    prompt = txt2img()
    prompt["3"]["inputs"].update(sampler_name=sampler_name, scheduler="karras")
    node, translation = sampler_of(prompt, catalog, tmp_path)
    assert node["scheduler"] == SAMPLERS[sampler_name]
    validate_graph(CanvasGraph.model_validate(translation.graph), REGISTRY)
    # What the diffusion service checks before it runs: the pair is one it can run.
    GenerationRequest(prompt="x", scheduler=node["scheduler"], sigmas=node["sigmas"]).check()
    sigma_capable = SAMPLERS[sampler_name] in SIGMA_SCHEDULERS
    assert node["sigmas"] == ("karras" if sigma_capable else "default")
    noted = " ".join(translation.notes)
    assert ("'karras'" in noted) is not sigma_capable
    assert (SAMPLER_NOTES.get(sampler_name, "-") in noted) is (sampler_name in SAMPLER_NOTES)


@pytest.mark.parametrize(
    ("sampler_name", "scheduler", "sigmas", "approximated"),
    [
        ("euler", "normal", "default", False),
        ("dpmpp_2m", "karras", "karras", False),
        ("dpmpp_2m_sde", "exponential", "exponential", False),
        ("euler_ancestral", "karras", "default", True),  # no sigma spacing in diffusers
        ("ddim", "exponential", "default", True),
        ("euler", "simple", "default", True),
        ("heun", "sgm_uniform", "default", True),
        ("dpmpp_2m", "beta", "default", True),
    ],
)
def test_comfyui_schedulers_become_sigmas_or_a_recorded_note(
    catalog: Catalog,
    tmp_path: Path,
    sampler_name: str,
    scheduler: str,
    sigmas: str,
    approximated: bool,
) -> None:
    prompt = txt2img(batch=2)
    prompt["3"]["inputs"].update(sampler_name=sampler_name, scheduler=scheduler)
    translation = translate(prompt, catalog, tmp_path)
    nodes = nodes_of(translation)
    assert {nodes[n]["sigmas"] for n in translation.samplers["3"]} == {sigmas}
    assert translation.ports[f"{translation.samplers['3'][0]}|sigmas"] == ["3", "scheduler"]
    assert bool(translation.notes) is approximated
    if approximated:
        assert translation.notes == [
            next(n for n in translation.notes if f"'{scheduler}'" in n and "node 3" in n)
        ]
    validate_graph(CanvasGraph.model_validate(translation.graph), REGISTRY)


@pytest.mark.parametrize("sampler_name", ["dpmpp_sde", "dpmpp_2s_ancestral", "lms", "dpm_2"])
def test_samplers_without_a_faithful_counterpart_are_refused(
    catalog: Catalog, tmp_path: Path, sampler_name: str
) -> None:
    prompt = txt2img()
    prompt["3"]["inputs"]["sampler_name"] = sampler_name
    with pytest.raises(PromptRejected) as rejected:
        translate(prompt, catalog, tmp_path)
    assert rejected.value.type == "prompt_outputs_failed_validation"
    (error,) = rejected.value.node_errors["3"]["errors"]
    assert error["type"] == "value_not_in_list"
    assert error["extra_info"]["input_name"] == "sampler_name"
    assert error["extra_info"]["received_value"] == sampler_name
    assert f"'{sampler_name}' not in" in error["details"]
    assert REFUSED_SAMPLERS[sampler_name] in error["details"]


def test_object_info_offers_the_mapped_samplers_and_every_scheduler(catalog: Catalog) -> None:
    ksampler = catalog.describe(catalog.types["KSampler"])["input"]["required"]
    assert ksampler["sampler_name"][0] == list(SAMPLERS)
    assert ksampler["scheduler"][0] == list(SCHEDULERS)
    assert not set(SAMPLERS) & set(REFUSED_SAMPLERS)


def test_mapping_agrees_with_the_diffusion_templates() -> None:
    """The tables name only samplers and spacings the diffusion pack offers."""
    spec = REGISTRY.get("image_generation")
    offered = spec.input("scheduler")
    spacing = spec.input("sigmas")
    assert offered is not None and spacing is not None
    assert set(SAMPLERS.values()) <= set(offered.choices or ())
    assert set(SIGMAS.values()) == set(spacing.choices or ())
    assert SIGMA_SAMPLERS == SIGMA_SCHEDULERS


def test_heun_progress_counts_comfyui_steps(catalog: Catalog, tmp_path: Path) -> None:
    """diffusers' Heun reports each of its 2 * steps - 1 model calls; ComfyUI clients get one
    progress message (with its preview) per completed step, live and rebuilt alike."""
    prompt = txt2img(steps=3)
    prompt["3"]["inputs"]["sampler_name"] = "heun"
    translation = translate(prompt, catalog, tmp_path)
    (node,) = translation.samplers["3"]
    row = PromptRow("p2", "task_x", 1, "c1", "u", "proj", 0.0, prompt, {}, ["9"], translation, None)
    url = "/api/v1/projects/proj/files/05_Cache/previews/task_x/a_{:03d}.png"
    events = [event(1, "task.started"), event(2, "node.state", node_id=node, state="running")]
    events += [
        event(
            2 + i,
            "task.progress",
            node_id=node,
            stage="denoising",
            message=f"step {i} of 5",
            preview_url=url.format(i),
        )
        for i in range(1, 6)
    ]
    live = PromptStream(row)
    outs = [o for e in events for o in live.feed(e)]
    assert outs == rebuild(row, events)
    progress = [(o.text["data"]["value"], o.text["data"]["max"]) for o in outs
                if o.text and o.text["type"] == "progress"]  # fmt: skip
    assert progress == [(1, 3), (2, 3), (3, 3)]
    frames = [o.frame.path for o in outs if o.frame]
    assert frames == [f"05_Cache/previews/task_x/a_{i:03d}.png" for i in (1, 3, 5)]
