"""Per-frame mapping through the real runtime (Dagster, event log, node cache, takes in git):
video_to_frames -> an image template -> frames_to_video, zips, broadcasts, element-wise
progress, cancel between elements, a mapped node's cached list."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import av
import pytest
from PIL import Image

from dagster_defs.compiler import run_config
from graph_runtime.canvas import CanvasGraph
from graph_runtime.events import RecordingSink
from graph_runtime.registry import TemplateRegistry
from graph_runtime.tasks import TaskStatus
from graph_runtime.templates import FunctionTemplate, InputSpec, OutputSpec, PortType
from graph_runtime.validation import validate_graph
from stores.node_cache import DiskNodeCache
from tests.runtime.test_runner import run

SHOT = "ch01/sc03/sh030"
T = PortType
TOLERANCE = 16  # two H.264 generations (CRF 18, 4:2:0) of flat colours, per channel


def _lit(value: Any) -> dict[str, Any]:
    return {"kind": "literal", "value": value}


def _link(node: str, output: str) -> dict[str, Any]:
    return {"kind": "link", "node": node, "output": output}


def _fade(frames: int) -> list[dict[str, Any]]:
    """red -> blue over ``frames`` frames, then decoded back as a list (node ``frames``)."""
    size = {"width": _lit(64), "height": _lit(48)}
    return [
        {"id": "red", "template": "solid_image", "inputs": {**size, "color": _lit("#ff0000")}},
        {"id": "blue", "template": "solid_image", "inputs": {**size, "color": _lit("#0000ff")}},
        {"id": "clip", "template": "frames_to_video", "inputs": {
            "images": _link("red", "image"), "end_image": _link("blue", "image"),
            "frame_count": _lit(frames), "fps": _lit(12.0)}},
        {"id": "frames", "template": "video_to_frames",
         "inputs": {"video": _link("clip", "video")}},
    ]  # fmt: skip


def _inverted_video_graph() -> CanvasGraph:
    """Each frame inverted (difference against white, a constant image broadcast to every
    frame), then encoded again."""
    return CanvasGraph.model_validate({"name": "invert-frames", "nodes": [
        *_fade(6),
        {"id": "white", "template": "solid_image", "inputs": {
            "width": _lit(64), "height": _lit(48), "color": _lit("#ffffff")}},
        {"id": "inv", "template": "blend", "inputs": {
            "base": _link("frames", "images"), "overlay": _link("white", "image"),
            "mode": _lit("difference"), "opacity": _lit(1.0)}},
        {"id": "out", "template": "frames_to_video", "inputs": {
            "images": _link("inv", "image"), "fps": _lit(12.0)}},
    ]})  # fmt: skip


def _decode(path: str) -> list[Image.Image]:
    with av.open(path) as container:
        return [f.to_image() for f in container.decode(container.streams.video[0])]


def _close(pixel: tuple[int, ...], expected: tuple[float, ...]) -> bool:
    return all(abs(a - b) <= TOLERANCE for a, b in zip(pixel, expected, strict=True))


def test_every_frame_runs_through_an_image_template_and_back_to_video(
    runtime: Any, project: Any
) -> None:
    graph = _inverted_video_graph()
    record, sink = run(runtime, graph, project_id="demo", shot=SHOT)
    assert record.status == TaskStatus.COMPLETED, record.error
    take = project.takes.list(SHOT)[0]
    assert set(take.outputs) == {"video", "video_poster"}
    frames = _decode(str(project.abs(take.outputs["video"].path)))
    assert len(frames) == 6 and frames[0].size == (64, 48)
    for i, frame in enumerate(frames):
        t = i / 5  # the source: red blended towards blue; inverted: (255 t, 255, 255 (1 - t))
        expected = (255 * t, 255.0, 255 * (1 - t))
        assert _close(frame.convert("RGB").getpixel((32, 24)), expected), (i, expected)

    events = sink.for_task(record.task_id)
    progress = [e.data for e in events if e.type == "task.progress" and e.data["node_id"] == "inv"]
    assert [p["element"] for p in progress] == [0, 1, 2, 3, 4, 5]
    assert {p["elements"] for p in progress} == {6}
    assert [p["node_progress"] for p in progress] == pytest.approx([(i + 1) / 6 for i in range(6)])
    assert progress[2]["message"] == "element 3 of 6"
    done = [e.data for e in events if e.type == "node.state" and e.data["node_id"] == "inv"
            and e.data["state"] == "completed"]  # fmt: skip
    assert done[0]["outputs"]["image"]["kind"] == "list"
    assert done[0]["outputs"]["image"]["length"] == 6

    # Run again: the mapped node comes from the node cache, and its cached value is the list.
    again, _ = run(runtime, graph, project_id="demo", shot=SHOT)
    assert again.status == TaskStatus.COMPLETED, again.error
    second = project.takes.list(task_id=again.task_id)[0]
    assert {"frames", "inv"} <= set(second.metadata["cached_nodes"])
    plan = validate_graph(graph, runtime.runner.registry)
    key = runtime.runner.executor.cache_keys(plan)["inv"]
    cached = runtime.runner.executor.node_cache.get(key)
    assert isinstance(cached["image"], list) and len(cached["image"]) == 6
    assert all(isinstance(i, Image.Image) for i in cached["image"])
    on_disk = DiskNodeCache(runtime.runner.executor.node_cache.root).get(key)  # no memory LRU
    assert on_disk is not None and len(on_disk["image"]) == 6
    again_frames = _decode(str(project.abs(second.outputs["video"].path)))
    assert len(again_frames) == 6


SMALL_FRAMES = CanvasGraph.model_validate({"name": "small-frames", "nodes": [
    *_fade(3),
    {"id": "small", "template": "resize", "inputs": {
        "image": _link("frames", "images"), "width": _lit(32), "height": _lit(24),
        "resample": _lit("nearest")}},
]})  # fmt: skip


def _check_small_frames(project: Any) -> None:
    take = project.takes.list(SHOT)[0]
    assert set(take.outputs) == {"image_000", "image_001", "image_002"}
    for i in range(3):
        image = Image.open(project.abs(take.outputs[f"image_{i:03d}"].path)).convert("RGB")
        assert image.size == (32, 24)
        t = i / 2
        assert _close(image.getpixel((16, 12)), (255 * (1 - t), 0.0, 255 * t)), i


def test_a_mapped_terminal_list_becomes_numbered_pngs(runtime: Any, project: Any) -> None:
    record, _ = run(runtime, SMALL_FRAMES, project_id="demo", shot=SHOT)
    assert record.status == TaskStatus.COMPLETED, record.error
    _check_small_frames(project)


def test_a_run_dagster_starts_itself_maps_too(runtime: Any, project: Any) -> None:
    """A launch from the Dagster UI (or a schedule tick): the run is adopted as a task."""
    plan = runtime.runner.plan(SMALL_FRAMES)
    job = runtime.runner.compiler.job_for(plan, with_takes=True)
    launched = job.execute_in_process(
        run_config=run_config(plan),
        tags={"takeflow/project": "demo", "takeflow/shot": SHOT},
        instance=runtime.instance,
    )
    assert launched.success
    _check_small_frames(project)


# -- custom templates: exact values through the real runtime ----------------------------------


def _numbers(ctx: Any, inputs: Any) -> dict[str, Any]:
    return {"values": list(range(int(inputs["start"]), int(inputs["stop"])))}


def _pair(ctx: Any, inputs: Any) -> dict[str, Any]:
    ctx.progress(0.5, "pairing", "half way")
    return {"text": f"{inputs['a']}/{inputs['b']}/{inputs['k']}", "twice": [inputs["a"]] * 2}


def _slow(ctx: Any, inputs: Any) -> dict[str, Any]:
    ctx.services["calls"].append(inputs["a"])
    time.sleep(0.15)  # no progress of its own: only the runtime's per-element checks
    return {"value": inputs["a"]}


def _constant(ctx: Any, inputs: Any) -> dict[str, Any]:
    return {"value": 7}


def _count(ctx: Any, inputs: Any) -> dict[str, Any]:
    return {"count": len(inputs["items"])}


def _join(ctx: Any, inputs: Any) -> dict[str, Any]:
    return {"joined": " ".join(inputs["items"])}


def _tpl(fn: Any, inputs: tuple[InputSpec, ...], outputs: tuple[OutputSpec, ...]) -> Any:
    return FunctionTemplate(id=fn.__name__.strip("_"), version="1.0.0", name=fn.__name__,
                            category="testing", description="", inputs=inputs, outputs=outputs,
                            fn=fn, cacheable=fn is not _slow)  # fmt: skip


CUSTOM = (
    _tpl(_numbers, (InputSpec("start", T.INTEGER, default=0), InputSpec("stop", T.INTEGER)),
         (OutputSpec("values", T.INTEGER, is_list=True),)),
    _tpl(_pair, (InputSpec("a", T.INTEGER), InputSpec("b", T.INTEGER), InputSpec("k", T.INTEGER)),
         (OutputSpec("text", T.TEXT), OutputSpec("twice", T.INTEGER, is_list=True))),
    _tpl(_slow, (InputSpec("a", T.INTEGER),), (OutputSpec("value", T.INTEGER),)),
    _tpl(_constant, (), (OutputSpec("value", T.INTEGER),)),
    _tpl(_count, (InputSpec("items", T.INTEGER, accepts_list=True),),
         (OutputSpec("count", T.INTEGER),)),
    _tpl(_join, (InputSpec("items", T.TEXT, accepts_list=True),), (OutputSpec("joined", T.TEXT),)),
)  # fmt: skip


def _with_custom(runtime: Any) -> None:
    runtime.runner.registry = TemplateRegistry([*runtime.runner.registry, *CUSTOM])


def test_two_list_inputs_zip_and_scalars_are_broadcast(runtime: Any, project: Any) -> None:
    _with_custom(runtime)
    graph = CanvasGraph.model_validate({"name": "zip", "nodes": [
        {"id": "three", "template": "numbers", "inputs": {"stop": _lit(3)}},
        {"id": "five", "template": "numbers", "inputs": {"start": _lit(10), "stop": _lit(15)}},
        {"id": "seven", "template": "constant"},
        {"id": "pair", "template": "pair", "inputs": {
            "a": _link("three", "values"), "b": _link("five", "values"),
            "k": _link("seven", "value")}},
        {"id": "count", "template": "count", "inputs": {"items": _link("pair", "twice")}},
        {"id": "join", "template": "join", "inputs": {"items": _link("pair", "text")}},
    ]})  # fmt: skip
    record, sink = run(runtime, graph, project_id="demo", shot=SHOT)
    assert record.status == TaskStatus.COMPLETED, record.error
    progress = [e.data for e in sink.for_task(record.task_id)
                if e.type == "task.progress" and e.data["node_id"] == "pair"]  # fmt: skip
    # the template's own progress, scaled into its element's share, then each element's end
    assert [p["node_progress"] for p in progress] == pytest.approx(
        [x / 10 for x in (1, 2, 3, 4, 5, 6, 7, 8, 9, 10)]
    )
    assert progress[2] == {**progress[2], "element": 1, "elements": 5, "stage": "pairing",
                           "message": "element 2 of 5: half way"}  # fmt: skip
    take = project.takes.list(SHOT)[0]
    text = Path(project.abs(take.outputs["joined"].path)).read_text()
    # five elements: 'three' is shorter, its last element (2) repeats; 'seven' is broadcast
    assert text == "0/10/7 1/11/7 2/12/7 2/13/7 2/14/7"
    # a list output of a mapped node is flattened; a list-accepting input collects it whole
    assert Path(project.abs(take.outputs["count"].path)).read_text().strip() == "10"


def test_cancel_stops_between_elements(runtime: Any) -> None:
    _with_custom(runtime)
    calls: list[int] = []
    runtime.runner.executor.services["calls"] = calls
    graph = CanvasGraph.model_validate({"name": "slow", "nodes": [
        {"id": "many", "template": "numbers", "inputs": {"stop": _lit(40)}},
        {"id": "slow", "template": "slow", "inputs": {"a": _link("many", "values")}},
    ]})  # fmt: skip
    started = threading.Event()

    class Watch:
        def emit(self, event: Any) -> None:
            if event.type == "task.progress" and event.data.get("node_id") == "slow":
                started.set()

    runtime.runner.add_sink(Watch())
    sink = RecordingSink()
    runtime.runner.add_sink(sink)
    record = runtime.runner.submit(graph)
    assert started.wait(30)
    runtime.runner.cancel(record.task_id)
    end = sink.wait_terminal(record.task_id, timeout=20)
    assert end.type == "task.cancelled" and end.data["node_id"] == "slow"
    assert 1 <= len(calls) < 40
    assert calls == list(range(len(calls)))  # in order, none after the cancel
    states = [e.data["state"] for e in sink.for_task(record.task_id)
              if e.type == "node.state" and e.data["node_id"] == "slow"]  # fmt: skip
    assert states[-1] == "cancelled"


def test_a_failing_element_names_its_index(runtime: Any) -> None:
    graph = CanvasGraph.model_validate({"name": "bad-frame", "nodes": [
        *_fade(3),
        {"id": "grow", "template": "scale_image", "inputs": {
            "image": _link("frames", "images"), "mode": _lit("size")}},
    ]})  # fmt: skip
    record, sink = run(runtime, graph)
    assert record.status == TaskStatus.FAILED
    failed = sink.for_task(record.task_id)[-1]
    assert failed.type == "task.failed" and failed.data["node_id"] == "grow"
    assert (failed.data["element"], failed.data["elements"]) == (0, 3)
    assert "input 'width'" in failed.data["message"]
