"""Per-element mapping of lists (video frames) through templates that take one value: which nodes
map is decided statically by validation; the pure helpers zip, broadcast and merge."""

from __future__ import annotations

from typing import Any

import pytest

from graph_runtime.canvas import CanvasGraph
from graph_runtime.errors import GraphValidationError
from graph_runtime.mapping import element_count, element_inputs, merge_outputs
from graph_runtime.registry import TemplateRegistry
from graph_runtime.templates import FunctionTemplate, InputSpec, OutputSpec, PortType
from graph_runtime.validation import validate_graph

T = PortType


@pytest.fixture(scope="module")
def registry() -> TemplateRegistry:
    return TemplateRegistry.discover()


def _lit(value: Any) -> dict[str, Any]:
    return {"kind": "literal", "value": value}


def _link(node: str, output: str) -> dict[str, Any]:
    return {"kind": "link", "node": node, "output": output}


def _graph(*nodes: dict[str, Any]) -> CanvasGraph:
    return CanvasGraph.model_validate({"name": "mapped", "nodes": list(nodes)})


SOURCE = {"id": "src", "template": "solid_image", "inputs": {"width": _lit(16), "height": _lit(16)}}
CLIP = {"id": "clip", "template": "frames_to_video", "inputs": {"images": _link("src", "image")}}
FRAMES = {
    "id": "frames",
    "template": "video_to_frames",
    "inputs": {"video": _link("clip", "video")},
}


def test_video_templates_declare_their_lists(registry: TemplateRegistry) -> None:
    to_frames = registry.get("video_to_frames")
    assert to_frames.output("images").is_list  # type: ignore[union-attr]
    assert not to_frames.output("frame_count").is_list  # type: ignore[union-attr]
    assert registry.get("frames_to_video").input("images").accepts_list  # type: ignore[union-attr]
    schema = to_frames.outputs_schema()["properties"]
    assert schema["images"]["x-list"] is True and "x-list" not in schema["frame_count"]
    images = registry.get("frames_to_video").inputs_schema()["properties"]["images"]
    assert images["x-accepts-list"] is True


def test_a_list_into_a_one_image_input_maps_until_a_list_input_collects_it(
    registry: TemplateRegistry,
) -> None:
    graph = _graph(
        SOURCE, CLIP, FRAMES,
        {"id": "small", "template": "resize",
         "inputs": {"image": _link("frames", "images"), "width": _lit(8), "height": _lit(8)}},
        {"id": "label", "template": "text_overlay",
         "inputs": {"image": _link("small", "image"), "text": _lit("hi")}},
        {"id": "out", "template": "frames_to_video", "inputs": {"images": _link("label", "image")}},
    )  # fmt: skip
    plan = validate_graph(graph, registry)
    assert plan.node("frames").mapped == () and plan.node("frames").list_outputs == ("images",)
    assert plan.node("small").mapped == ("image",)
    assert plan.node("small").list_outputs == ("image",)
    assert plan.node("label").mapped == ("image",)  # the mapping continues downstream
    assert plan.node("out").mapped == () and plan.node("out").list_outputs == ()
    assert plan.node("clip").mapped == () and plan.node("src").list_outputs == ()
    assert plan.list_outputs("small") == ("image",) and plan.list_outputs("out") == ()


def test_two_list_inputs_both_map_and_a_constant_image_is_broadcast(
    registry: TemplateRegistry,
) -> None:
    graph = _graph(
        SOURCE, CLIP, FRAMES,
        {"id": "frames2", "template": "video_to_frames",
         "inputs": {"video": _link("clip", "video")}},
        {"id": "both", "template": "blend",
         "inputs": {"base": _link("frames", "images"), "overlay": _link("frames2", "images")}},
        {"id": "one", "template": "blend",
         "inputs": {"base": _link("frames", "images"), "overlay": _link("src", "image")}},
    )  # fmt: skip
    plan = validate_graph(graph, registry)
    assert plan.node("both").mapped == ("base", "overlay")
    assert plan.node("one").mapped == ("base",)  # overlay: one image, the same for every frame


def test_a_real_type_mismatch_is_still_refused(registry: TemplateRegistry) -> None:
    graph = _graph(
        SOURCE,
        CLIP,
        FRAMES,
        {"id": "cut", "template": "trim", "inputs": {"video": _link("frames", "images")}},
    )
    with pytest.raises(GraphValidationError) as caught:
        validate_graph(graph, registry)
    [issue] = caught.value.issues
    assert (issue.code, issue.node_id, issue.port) == ("type_mismatch", "cut", "video")


def test_a_bypassed_node_passes_the_list_on(registry: TemplateRegistry) -> None:
    graph = _graph(
        SOURCE, CLIP, FRAMES,
        {"id": "skip", "template": "resize", "properties": {"bypass": True},
         "inputs": {"image": _link("frames", "images")}},
        {"id": "label", "template": "text_overlay", "inputs": {"image": _link("skip", "image")}},
    )  # fmt: skip
    plan = validate_graph(graph, registry)
    assert plan.node("label").links["image"] == ("frames", "images")
    assert plan.node("label").mapped == ("image",)


def _lister(**flags: bool) -> FunctionTemplate:
    return FunctionTemplate(
        id="lister", version="1.0.0", name="Lister", category="testing", description="",
        inputs=(InputSpec("items", T.INTEGER, accepts_list=flags.get("accepts", False)),),
        outputs=(OutputSpec("many", T.INTEGER, is_list=True), OutputSpec("one", T.INTEGER)),
        fn=lambda ctx, inputs: {"many": [1, 2], "one": 3},
    )  # fmt: skip


def test_a_mapped_node_makes_every_output_a_list() -> None:
    registry = TemplateRegistry([_lister()])
    graph = _graph(
        {"id": "a", "template": "lister"},
        {"id": "b", "template": "lister", "inputs": {"items": _link("a", "many")}},
        {"id": "c", "template": "lister", "inputs": {"items": _link("b", "one")}},
    )
    plan = validate_graph(graph, registry)
    assert plan.node("a").list_outputs == ("many",)
    assert plan.node("b").mapped == ("items",)
    assert plan.node("b").list_outputs == ("many", "one")
    assert plan.node("c").mapped == ("items",)  # b's 'one' is a list now: one per element


def test_zip_repeats_the_shorter_lists_last_element_and_broadcasts_constants() -> None:
    values = {"a": [1, 2, 3], "b": [10, 20], "k": 5}
    assert element_count(values, ("a", "b")) == 3
    rows = [element_inputs(values, ("a", "b"), i) for i in range(3)]
    assert rows == [
        {"a": 1, "b": 10, "k": 5},
        {"a": 2, "b": 20, "k": 5},
        {"a": 3, "b": 20, "k": 5},
    ]
    assert element_count({"a": [1, 2], "b": []}, ("a", "b")) == 0


def test_merge_collects_per_element_outputs_and_flattens_list_outputs() -> None:
    template = _lister()
    merged = merge_outputs([{"many": [1, 2], "one": 3}, {"many": [4], "one": 5}], template)
    assert merged == {"many": [1, 2, 4], "one": [3, 5]}
    assert merge_outputs([], template) == {"many": [], "one": []}
