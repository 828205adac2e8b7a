"""``load_take`` through the real runtime (Dagster, take store, git): a shot's active take or a
named one read into another shot's graph, the take it read recorded in the new take, the node
cache keyed by the take's content (moving the active take never gives a stale result), and bad
inputs refused (at validation where the form is wrong, naming the input when it runs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from graph_runtime.canvas import CanvasGraph
from graph_runtime.errors import GraphValidationError
from graph_runtime.registry import TemplateRegistry
from graph_runtime.tasks import TaskStatus
from graph_runtime.templates import FunctionTemplate
from nodes.builtin import TEMPLATES
from tests.runtime.test_runner import run

SHOT_A, SHOT_B = "ch01/sc01/sh010", "ch01/sc01/sh020"


def _graph(*nodes: dict[str, Any]) -> CanvasGraph:
    return CanvasGraph.model_validate({"name": "continuity", "nodes": list(nodes)})


def _lit(value: Any) -> dict[str, Any]:
    return {"kind": "literal", "value": value}


def _solid(runtime: Any, color: str) -> None:
    graph = _graph({"id": "paint", "template": "solid_image", "inputs": {
        "width": _lit(8), "height": _lit(6), "color": _lit(color)}})  # fmt: skip
    record, _ = run(runtime, graph, project_id="demo", shot=SHOT_A)
    assert record.status == TaskStatus.COMPLETED, record.error


def _reader(take: str = "active", output: str = "", shot: str = SHOT_A) -> CanvasGraph:
    return _graph(
        {"id": "prev", "template": "load_take",
         "inputs": {"shot": _lit(shot), "take": _lit(take), "output": _lit(output)}},
        {"id": "big", "template": "resize",
         "inputs": {"image": {"kind": "link", "node": "prev", "output": "image"},
                    "width": _lit(4), "height": _lit(4)}},
    )  # fmt: skip


def _color(project: Any, record: Any) -> tuple[int, ...]:
    take = project.takes.list(task_id=record.task_id)[0]
    with Image.open(project.abs(take.outputs["image"].path)) as image:
        return tuple(image.convert("RGB").getpixel((1, 1)))


def _take_json(project: Any, record: Any) -> dict[str, Any]:
    take = project.takes.list(task_id=record.task_id)[0]
    return json.loads(Path(project.abs(f"{take.directory}/take.json")).read_text())


@pytest.fixture
def two_takes(runtime: Any, project: Any) -> Any:
    _solid(runtime, "#ff0000")  # take_001
    _solid(runtime, "#0000ff")  # take_002
    project.takes.set_active(SHOT_A, "take_002")
    return project


def test_reads_the_active_take_and_records_it(runtime: Any, two_takes: Any) -> None:
    project = two_takes
    record, _ = run(runtime, _reader(), project_id="demo", shot=SHOT_B)
    assert record.status == TaskStatus.COMPLETED, record.error
    assert _color(project, record) == (0, 0, 255)
    source = project.takes.get(SHOT_A, "take_002").outputs["image"]
    recorded = _take_json(project, record)
    assert recorded["source_take"] == {
        "shot": SHOT_A, "take_id": "take_002", "output": "image", "sha256": source.sha256,
        "file": source.path,
    }  # fmt: skip
    assert recorded["node_metadata"]["prev"]["source_take"]["take_id"] == "take_002"


def test_a_named_take_is_read_whatever_is_active(runtime: Any, two_takes: Any) -> None:
    record, _ = run(runtime, _reader("take_001"), project_id="demo", shot=SHOT_B)
    assert record.status == TaskStatus.COMPLETED, record.error
    assert _color(two_takes, record) == (255, 0, 0)
    assert _take_json(two_takes, record)["source_take"]["take_id"] == "take_001"


def test_moving_the_active_take_changes_the_result_not_a_stale_cache(
    runtime: Any, two_takes: Any
) -> None:
    project = two_takes
    first, _ = run(runtime, _reader(), project_id="demo", shot=SHOT_B)
    assert _color(project, first) == (0, 0, 255)
    again, _ = run(runtime, _reader(), project_id="demo", shot=SHOT_B)
    assert _color(project, again) == (0, 0, 255)  # nothing moved: both nodes from the cache
    assert sorted(_take_json(project, again)["cached_nodes"]) == ["big", "prev"]

    project.takes.set_active(SHOT_A, "take_001")
    moved, _ = run(runtime, _reader(), project_id="demo", shot=SHOT_B)
    assert moved.status == TaskStatus.COMPLETED, moved.error
    assert _color(project, moved) == (255, 0, 0)  # the new active take, read again
    facts = _take_json(project, moved)
    assert facts["cached_nodes"] == [] and facts["source_take"]["take_id"] == "take_001"


@pytest.mark.parametrize(
    ("inputs", "port"),
    [({"shot": "sh010"}, "shot"), ({"shot": "ch01/sc01/../x"}, "shot"),
     ({"take": "latest"}, "take"), ({"take": "take_1"}, "take")],
)  # fmt: skip
def test_a_malformed_shot_or_take_is_refused_at_validation(
    runtime: Any, inputs: dict[str, str], port: str
) -> None:
    values = {"shot": SHOT_A, "take": "active", **inputs}
    graph = _graph({"id": "prev", "template": "load_take",
                    "inputs": {k: _lit(v) for k, v in values.items()}})  # fmt: skip
    with pytest.raises(GraphValidationError) as caught:
        runtime.runner.submit(graph, project_id="demo", shot=SHOT_B)
    (issue,) = caught.value.issues
    assert (issue.code, issue.node_id, issue.port) == ("invalid_format", "prev", port)
    assert f"input '{port}'" in issue.message


@pytest.mark.parametrize(
    ("take", "output", "shot", "code", "field"),
    [("active", "", "ch09/sc01/sh010", "unknown_shot", "shot"),
     ("take_009", "", SHOT_A, "unknown_take", "take"),
     ("active", "nope", SHOT_A, "unknown_take_output", "output")],
)  # fmt: skip
def test_an_unknown_shot_take_or_output_fails_naming_the_input(
    runtime: Any, two_takes: Any, take: str, output: str, shot: str, code: str, field: str
) -> None:
    record, _ = run(runtime, _reader(take, output, shot), project_id="demo", shot=SHOT_B)
    assert record.status == TaskStatus.FAILED
    error = record.error
    assert (error["code"], error["field"], error["node_id"]) == (code, field, "prev")
    assert f"input '{field}'" in error["message"]
    assert two_takes.takes.list(SHOT_B) == []


def test_a_take_moved_while_the_task_ran_is_not_cached_as_the_one_it_started_with(
    runtime: Any, two_takes: Any
) -> None:
    """The cache key names take_002 (active when the task starts); the active take moves to
    take_001 before the node reads it. The result (red) must not be cached as take_002's."""
    project = two_takes
    moves = ["take_001"]

    def moving(t: FunctionTemplate) -> FunctionTemplate:
        def fn(ctx: Any, inputs: Any) -> Any:
            if moves:
                project.takes.set_active(SHOT_A, moves.pop())
            return t.fn(ctx, inputs)

        return FunctionTemplate(**{**t.__dict__, "fn": fn}) if t.id == "load_take" else t

    runtime.runner.registry = TemplateRegistry([moving(t) for t in TEMPLATES])
    moved, _ = run(runtime, _reader(), project_id="demo", shot=SHOT_B)
    assert _color(project, moved) == (255, 0, 0)  # what the node read when it ran

    project.takes.set_active(SHOT_A, "take_002")  # back to the take the first key named
    again, _ = run(runtime, _reader(), project_id="demo", shot=SHOT_B)
    assert _color(project, again) == (0, 0, 255)
    assert _take_json(project, again)["cached_nodes"] == []


def test_a_video_take_gives_its_video_and_its_first_frame(runtime: Any, project: Any) -> None:
    clip = _graph(
        {"id": "plate", "template": "solid_image",
         "inputs": {"width": _lit(16), "height": _lit(16), "color": _lit("#00ff00")}},
        {"id": "clip", "template": "frames_to_video",
         "inputs": {"images": {"kind": "link", "node": "plate", "output": "image"},
                    "end_image": {"kind": "link", "node": "dark", "output": "image"},
                    "frame_count": _lit(6), "fps": _lit(12.0)}},
        {"id": "dark", "template": "solid_image",
         "inputs": {"width": _lit(16), "height": _lit(16), "color": _lit("#000000")}},
    )  # fmt: skip
    record, _ = run(runtime, clip, project_id="demo", shot=SHOT_A)
    assert record.status == TaskStatus.COMPLETED, record.error
    record, _ = run(runtime, _reader(), project_id="demo", shot=SHOT_B)
    assert record.status == TaskStatus.COMPLETED, record.error
    red, green, blue = _color(project, record)  # the first frame: green, within the codec's 8
    assert red < 8 and green > 247 and blue < 8
    assert _take_json(project, record)["source_take"]["output"] == "video"

    alone = _graph({"id": "prev", "template": "load_take", "inputs": {"shot": _lit(SHOT_A)}})
    record, _ = run(runtime, alone, project_id="demo", shot=SHOT_B)  # the take, copied
    assert record.status == TaskStatus.COMPLETED, record.error
    copy = project.takes.list(task_id=record.task_id)[0]
    facts = _take_json(project, record)["media"]["video"]
    assert (facts["frame_count"], facts["fps"]) == (6, 12.0)
    assert {"video", "video_poster", "image", "take_id"} <= set(copy.outputs)


def test_an_image_take_alone_is_copied_without_a_video(runtime: Any, two_takes: Any) -> None:
    alone = _graph({"id": "prev", "template": "load_take", "inputs": {"shot": _lit(SHOT_A)}})
    record, _ = run(runtime, alone, project_id="demo", shot=SHOT_B)
    assert record.status == TaskStatus.COMPLETED, record.error
    copy = two_takes.takes.list(task_id=record.task_id)[0]
    assert "video" not in copy.outputs and copy.outputs["image"].content_type == "image/png"
