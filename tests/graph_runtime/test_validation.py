"""Validation reports every error at once, each pinned to its node and port with a stable code."""

from __future__ import annotations

import pytest

from graph_runtime.canvas import CanvasGraph, CanvasNode, LinkInput, LiteralInput
from graph_runtime.errors import GraphIssue, GraphValidationError
from graph_runtime.registry import TemplateRegistry
from graph_runtime.validation import validate_graph
from tests.conftest import load_graph


@pytest.fixture(scope="module")
def registry() -> TemplateRegistry:
    return TemplateRegistry.discover()


def issues_of(graph: CanvasGraph, registry: TemplateRegistry) -> list[GraphIssue]:
    with pytest.raises(GraphValidationError) as caught:
        validate_graph(graph, registry)
    return caught.value.issues


def find(issues: list[GraphIssue], code: str, node: str) -> GraphIssue:
    matches = [i for i in issues if i.code == code and i.node_id == node]
    assert matches, f"no {code} on {node}; got {[(i.code, i.node_id) for i in issues]}"
    return matches[0]


def test_every_error_kind_reported_at_once(registry: TemplateRegistry) -> None:
    issues = issues_of(load_graph("invalid_everything"), registry)

    assert "did you mean 'noise_image'" in find(issues, "unknown_template", "a").message
    assert (
        "no version '9.0.0' (known: 1.0.0)" in find(issues, "unknown_template_version", "b").message
    )
    unknown = find(issues, "unknown_input", "c")
    assert unknown.port == "widht" and "did you mean 'width'" in unknown.message
    missing = find(issues, "missing_input", "c")
    assert missing.port == "image" and "required input 'image'" in missing.message
    # an image cannot be typed in: the hint says what to connect
    assert missing.message.endswith("connect a node that makes one"), missing.message
    mismatch = find(issues, "type_mismatch", "d")
    assert mismatch.message == "input 'image' takes image but 'p.text' gives text"
    assert "'ghost', which is not in the graph" in find(issues, "dangling_link", "e").message
    rng = find(issues, "out_of_range", "e")
    assert rng.port == "width" and "above the maximum 4096" in rng.message
    assert (
        "has no such output (its outputs: image, seed)"
        in find(issues, "unknown_output", "f").message
    )
    choice = find(issues, "invalid_choice", "f")
    assert "did you mean 'lanczos'" in choice.message
    assert "expects an integer, got str 'seven'" in find(issues, "invalid_type", "g").message
    assert "used more than once" in find(issues, "duplicate_node_id", "g").message
    cycle = next(i for i in issues if i.code == "cycle")
    assert set(cycle.extra["nodes"]) == {"x", "y"}
    assert "form a cycle" in cycle.message and "remove one of these links" in cycle.message


def test_error_dict_shape_for_the_api(registry: TemplateRegistry) -> None:
    with pytest.raises(GraphValidationError) as caught:
        validate_graph(load_graph("invalid_everything"), registry)
    body = caught.value.to_dict()
    assert body["code"] == "invalid_graph"
    unknown = next(e for e in body["errors"] if e["code"] == "unknown_input")
    assert unknown == {
        "code": "unknown_input",
        "node_id": "c",
        "port": "widht",
        "message": "template 'resize' has no input 'widht'; did you mean 'width'?",
    }


def test_valid_graph_plans_in_topological_order(registry: TemplateRegistry) -> None:
    plan = validate_graph(load_graph("poster"), registry)
    order = [n.node_id for n in plan.nodes]
    assert order.index("sky") < order.index("mix") < order.index("label") < order.index("final")
    assert plan.terminal == ("final",)
    assert plan.node("final").literals["width"] == 512
    assert plan.node("mix").links == {"base": ("sky", "image"), "overlay": ("grain", "image")}


def test_integer_output_feeds_float_input(registry: TemplateRegistry) -> None:
    graph = CanvasGraph(
        nodes=(
            CanvasNode(id="n", template="noise_image"),
            CanvasNode(
                id="v", template="number", inputs={"value": LinkInput(node="n", output="seed")}
            ),
        )
    )
    plan = validate_graph(graph, registry)
    assert plan.terminal == ("v",)
    assert plan.node("v").links == {"value": ("n", "seed")}


def test_empty_graph_is_an_error(registry: TemplateRegistry) -> None:
    issues = issues_of(CanvasGraph(nodes=()), registry)
    assert [i.code for i in issues] == ["empty_graph"]


def test_content_hash_ignores_layout_but_not_values() -> None:
    base = load_graph("poster")
    moved = base.model_copy(
        update={"nodes": tuple(n.model_copy(update={"position": None}) for n in base.nodes)}
    )
    assert moved.content_hash() == base.content_hash()
    changed_nodes = list(base.nodes)
    changed_nodes[0] = changed_nodes[0].model_copy(
        update={"inputs": {"text": LiteralInput(value="OTHER")}}
    )
    changed = base.model_copy(update={"nodes": tuple(changed_nodes)})
    assert changed.content_hash() != base.content_hash()
    assert changed.structure_hash() == base.structure_hash()


def test_sizes_that_must_be_multiples_name_the_nearest_ones() -> None:
    from graph_runtime.templates import FunctionTemplate, InputSpec, OutputSpec, PortType

    tile = FunctionTemplate(
        id="tile", version="1.0.0", name="Tile", category="image", description="",
        inputs=(InputSpec("size", PortType.INTEGER, default=64, multiple_of=16),),
        outputs=(OutputSpec("image", PortType.IMAGE),), fn=lambda ctx, inputs: {},
    )  # fmt: skip
    assert tile.inputs_schema()["properties"]["size"]["multipleOf"] == 16
    graph = CanvasGraph(
        nodes=(CanvasNode(id="t", template="tile", inputs={"size": LiteralInput(value=70)}),)
    )
    (issue,) = issues_of(graph, TemplateRegistry([tile]))
    assert (issue.code, issue.port) == ("not_a_multiple", "size")
    assert issue.message == "input 'size' is 70, not a multiple of 16; try 64 or 80"
