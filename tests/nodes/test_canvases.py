"""Every example canvas (``examples/`` and the demo project's) validates and runs, on the tiny
random-weight model with few steps."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from graph_runtime.canvas import CanvasGraph
from graph_runtime.tasks import TaskStatus
from graph_runtime.validation import validate_graph
from nodes.diffusion.controlnet import ensure_demo_controlnet
from nodes.diffusion.demo_lora import ensure_demo_lora
from nodes.diffusion.inpaint_demo import ensure_demo_inpaint_model
from nodes.diffusion.upscale_demo import ensure_demo_upscale_model
from nodes.diffusion.video_demo import ensure_demo_video_model
from stores.home import TakeflowHome
from tests.nodes.test_diffusion import run

pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)
ROOT = Path(__file__).resolve().parents[2]
CANVASES = sorted(
    [*ROOT.glob("examples/*.json"), *ROOT.glob("server/demo/canvases/*.takeflow.json")]
)
GENERATION = {"image_generation", "image_to_image"}
SHOT_VIDEO = ROOT / "server" / "demo" / "canvases" / "shot_video.takeflow.json"


@pytest.mark.parametrize("path", CANVASES, ids=lambda p: str(p.relative_to(ROOT)))
def test_example_canvas_validates_and_runs(
    path: Path, diffusion_home: TakeflowHome, tiny_model_dir: Path, diffusion_runtime: Any,
    project: Any,
) -> None:  # fmt: skip
    ensure_demo_lora(diffusion_home, tiny_model_dir)  # what `serve --demo` puts beside it
    ensure_demo_upscale_model(diffusion_home)
    text = path.read_text()
    if "demo-controlnet" in text:
        ensure_demo_controlnet(diffusion_home.path, tiny_model_dir)
    if "demo-inpaint" in text:
        ensure_demo_inpaint_model(diffusion_home)
    raw = json.loads(text)
    for node in raw["nodes"]:
        if node["template"].split("@")[0] in GENERATION:  # few steps: the pipes, not the art
            node["inputs"]["steps"] = {"kind": "literal", "value": 2}
    if "demo-video" in text:
        ensure_demo_video_model(diffusion_home)
    graph = CanvasGraph.model_validate(raw)
    validate_graph(graph, diffusion_runtime.registry)
    for node in raw["nodes"]:  # a continuity canvas reads a take of another shot: make it
        if node["template"] == "load_take":
            shot = node["inputs"]["shot"]["value"]
            first = CanvasGraph.model_validate_json(SHOT_VIDEO.read_text())
            made, _ = run(diffusion_runtime, first, project_id="demo", shot=shot)
            assert made.status == TaskStatus.COMPLETED, made.error
    record, _ = run(diffusion_runtime, graph, project_id="demo", shot="ch01/sc01/sh010")
    assert record.status == TaskStatus.COMPLETED, record.error
    assert project.takes.list("ch01/sc01/sh010")
