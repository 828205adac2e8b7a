"""Generated video through the real runtime (Dagster, take store, git + LFS) on the tiny
LTX-Video model: text_to_video and image_to_video takes decode back with the requested frame
count and fps, and one shot's take continues into the next: its last frame, extracted on the
canvas, is the conditioning frame the next shot's take records (read with ``load_take``)."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import pytest
from PIL import Image

from graph_runtime.canvas import CanvasGraph
from graph_runtime.errors import GraphValidationError
from graph_runtime.tasks import TaskStatus
from nodes.diffusion.video_demo import DEMO_VIDEO_MODEL, build_random_video_pipeline
from nodes.diffusion.video_generation import image_content_hash
from stores.home import TakeflowHome
from tests.runtime.test_runner import run

SHOT_A, SHOT_B = "ch01/sc01/sh010", "ch01/sc01/sh020"
CLIP = {"negative_prompt": "", "model": DEMO_VIDEO_MODEL, "width": 64, "height": 96,
        "steps": 3, "cfg": 3.0}  # fmt: skip


def _lit(value: Any) -> dict[str, Any]:
    return {"kind": "literal", "value": value}


def _link(node: str, output: str) -> dict[str, Any]:
    return {"kind": "link", "node": node, "output": output}


def _graph(name: str, *nodes: dict[str, Any]) -> CanvasGraph:
    return CanvasGraph.model_validate({"name": name, "nodes": list(nodes)})


def _inputs(**values: Any) -> dict[str, Any]:
    return {k: _lit(v) for k, v in {**CLIP, **values}.items()}


@pytest.fixture(scope="session")
def tiny_video_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_random_video_pipeline(tmp_path_factory.mktemp("video") / "tiny-ltx")


@pytest.fixture
def video_home(_isolated_home: Path, tiny_video_dir: Path) -> TakeflowHome:
    """The home with the tiny model as "demo-video" and a preview every 2 steps (set before the
    runtime opens, as its services read the config then)."""
    from nodes.diffusion.demo import register_model

    home = TakeflowHome.resolve(_isolated_home)
    register_model(home, DEMO_VIDEO_MODEL, tiny_video_dir, demo=True)
    home.update_config(diffusion={"preview_every": 2})
    return home


@pytest.fixture
def video_runtime(video_home: TakeflowHome, runtime: Any) -> Any:
    yield runtime
    service = runtime.runner.services.get("diffusion")
    if service is not None:
        service.close()


def _decode(path: Path) -> tuple[list[Image.Image], Fraction]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return [f.to_image() for f in container.decode(stream)], Fraction(stream.average_rate or 0)


def _take_json(project: Any, take: Any) -> dict[str, Any]:
    return json.loads(Path(project.abs(f"{take.directory}/take.json")).read_text())


def test_text_to_video_then_image_to_video_from_the_takes_last_frame(
    video_runtime: Any, project: Any
) -> None:
    # Shot A: a clip from a prompt.
    shot_a = _graph("shot a", {"id": "gen", "template": "text_to_video", "inputs": _inputs(
        prompt="a lighthouse at dusk", frames=17, fps=12.0, seed=3)})  # fmt: skip
    record, sink = run(video_runtime, shot_a, project_id="demo", shot=SHOT_A)
    assert record.status == TaskStatus.COMPLETED, record.error
    take_a = project.takes.list(SHOT_A)[0]
    assert {"video", "video_poster"} <= set(take_a.outputs)
    mp4_a = take_a.outputs["video"]
    assert mp4_a.path.endswith("take_001/video.mp4") and mp4_a.content_type == "video/mp4"
    frames_a, fps_a = _decode(Path(project.abs(mp4_a.path)))
    assert (len(frames_a), fps_a, frames_a[0].size) == (17, Fraction(12), (64, 96))
    facts = _take_json(project, take_a)
    assert facts["media"]["video"]["frame_count"] == 17 and facts["media"]["video"]["fps"] == 12.0
    assert facts["model"] == DEMO_VIDEO_MODEL and facts["demo"] is True
    assert facts["seed"] == 3
    assert project.repo.is_lfs_pointer(mp4_a.path)  # the commit holds the pointer
    progress = [e.data for e in sink.for_task(record.task_id) if e.type == "task.progress"]
    steps = [p["message"] for p in progress if p["stage"] == "denoising"]
    assert steps == ["step 1 of 3", "step 2 of 3", "step 3 of 3"]
    assert {p["stage"] for p in progress} >= {"loading", "denoising", "decoding", "encoding"}
    previews = [p["preview_path"] for p in progress if p.get("preview_path")]
    assert len(previews) == 1  # step 2 of 3: a frame of the clip being denoised, as a JPEG
    assert Path(project.abs(previews[0])).read_bytes()[:2] == b"\xff\xd8"

    # Shot A's active take feeds shot B on the canvas: load_take -> extract_frame(last) -> i2v.
    shot_b = _graph(
        "shot b",
        {"id": "prev", "template": "load_take",
         "inputs": {"shot": _lit(SHOT_A), "take": _lit("active")}},
        {"id": "last", "template": "extract_frame",
         "inputs": {"video": _link("prev", "video"), "mode": _lit("last")}},
        {"id": "gen", "template": "image_to_video",
         "inputs": {"image": _link("last", "image"),
                    **_inputs(prompt="the lighthouse beam sweeps", frames=9, fps=8.0, seed=4)}},
    )  # fmt: skip
    record, _ = run(video_runtime, shot_b, project_id="demo", shot=SHOT_B)
    assert record.status == TaskStatus.COMPLETED, record.error
    take_b = project.takes.list(SHOT_B)[0]
    frames_b, fps_b = _decode(Path(project.abs(take_b.outputs["video"].path)))
    assert (len(frames_b), fps_b) == (9, Fraction(8))
    assert project.repo.is_lfs_pointer(take_b.outputs["video"].path)

    # Continuity: shot B started from shot A's committed last frame, by content.
    last_of_a = image_content_hash(frames_a[-1])
    recorded = _take_json(project, take_b)
    assert recorded["conditioning_image_sha256"] == last_of_a
    assert recorded["conditioning_frame_sha256"] == last_of_a  # same size: used as it was
    first_frame = Image.open(project.abs(take_b.outputs["first_frame"].path))
    assert image_content_hash(first_frame) == last_of_a  # the PNG in the take, lossless
    assert image_content_hash(frames_a[0]) != last_of_a  # a frame that moved, not the first
    assert recorded["source_take"] == {
        "shot": SHOT_A, "take_id": "take_001", "output": "video", "sha256": mp4_a.sha256,
        "file": mp4_a.path,
    }  # fmt: skip


def test_a_bad_frame_count_is_refused_at_validation_naming_node_and_input(
    video_runtime: Any, project: Any
) -> None:
    graph = _graph("bad", {"id": "gen", "template": "text_to_video", "inputs": _inputs(
        prompt="x", frames=16, fps=12.0, seed=1)})  # fmt: skip
    with pytest.raises(GraphValidationError) as caught:
        video_runtime.runner.submit(graph, project_id="demo", shot=SHOT_A)
    (issue,) = caught.value.issues
    assert (issue.code, issue.node_id, issue.port) == ("not_a_multiple", "gen", "frames")
    assert issue.message == (
        "node 'gen': input 'frames' must be 8k+1: 9, 17, 25, ..., got 16; try 9 or 17"
    )
    assert project.takes.list(SHOT_A) == []


def test_the_demo_canvases_make_two_continuous_shots_that_assemble_into_the_scene(
    video_runtime: Any, project: Any
) -> None:
    """``serve --demo``'s shot_video then next_shot (as saved), then the scene's cut."""
    from graph_runtime.assembly import TEMPLATE_ID, AssemblyRequest, plan_assembly
    from graph_runtime.canvas import single_node_graph

    demo = Path(__file__).resolve().parents[2] / "server" / "demo" / "canvases"
    for name in ("shot_video", "next_shot"):
        graph = CanvasGraph.model_validate_json((demo / f"{name}.takeflow.json").read_text())
        record, _ = run(video_runtime, graph, project_id="demo", shot=graph.context.shot)
        assert record.status == TaskStatus.COMPLETED, record.error
    (take_a,) = project.takes.list(SHOT_A)
    (take_b,) = project.takes.list(SHOT_B)
    frames_a, _ = _decode(Path(project.abs(take_a.outputs["video"].path)))
    recorded = _take_json(project, take_b)
    assert recorded["conditioning_image_sha256"] == image_content_hash(frames_a[-1])
    assert recorded["source_take"]["take_id"] == take_a.take_id

    plan = plan_assembly(project, AssemblyRequest(scene="ch01/sc01"))
    assert [(s["shot"], s["take_id"]) for s in plan["shots"]] == [
        (SHOT_A, take_a.take_id), (SHOT_B, take_b.take_id)
    ]  # fmt: skip
    record, _ = run(video_runtime, single_node_graph(TEMPLATE_ID, {"plan": plan}),
                    project_id="demo", shot=plan["shot"])  # fmt: skip
    assert record.status == TaskStatus.COMPLETED, record.error
    (cut,) = project.takes.list("ch01/sc01/_cut")
    frames, fps = _decode(Path(project.abs(cut.outputs["video"].path)))
    assert (len(frames), fps) == (18, Fraction(8))  # 9 + 9 frames at the shots' 8 fps
