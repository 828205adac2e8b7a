"""Bypass: a bypassed node leaves the plan, and its consumers read its pass-through input."""

from __future__ import annotations

from typing import Any

import pytest

from graph_runtime.canvas import CanvasGraph
from graph_runtime.errors import GraphValidationError
from graph_runtime.registry import TemplateRegistry
from graph_runtime.validation import validate_graph


@pytest.fixture(scope="module")
def registry() -> TemplateRegistry:
    return TemplateRegistry.discover()


def lit(value: Any) -> dict[str, Any]:
    return {"kind": "literal", "value": value}


def link(node: str, output: str) -> dict[str, Any]:
    return {"kind": "link", "node": node, "output": output}


def chain(*, bypass: tuple[str, ...] = (), **extra: dict[str, Any]) -> CanvasGraph:
    """sky -> small (resize) -> big (resize) -> label (text_overlay, text from title)."""
    nodes: list[dict[str, Any]] = [
        {"id": "title", "template": "text_prompt", "inputs": {"text": lit("HI")}},
        {"id": "sky", "template": "gradient_image",
         "inputs": {"width": lit(64), "height": lit(64)}},
        {"id": "small", "template": "resize",
         "inputs": {"image": link("sky", "image"), "width": lit(32), "height": lit(32)}},
        {"id": "big", "template": "resize",
         "inputs": {"image": link("small", "image"), "width": lit(128), "height": lit(128)}},
        {"id": "label", "template": "text_overlay",
         "inputs": {"image": link("big", "image"), "text": link("title", "text")}},
    ]  # fmt: skip
    for node in nodes:
        node.update(extra.get(node["id"], {}))
        if node["id"] in bypass:
            node["properties"] = {"bypass": True}
    return CanvasGraph.model_validate({"name": "chain", "nodes": nodes})


def test_bypassed_node_leaves_the_plan_and_its_consumer_reads_its_input(
    registry: TemplateRegistry,
) -> None:
    plan = validate_graph(chain(bypass=("big",)), registry)

    assert "big" not in [n.node_id for n in plan.nodes]
    assert plan.bypassed == ("big",)
    label = plan.node("label")
    assert label.links["image"] == ("small", "image")
    assert label.upstream == ("small", "title")
    assert plan.terminal == ("label",)


def test_chains_of_bypassed_nodes_resolve_to_the_first_running_source(
    registry: TemplateRegistry,
) -> None:
    plan = validate_graph(chain(bypass=("small", "big")), registry)

    assert [n.node_id for n in plan.nodes if n.node_id in ("small", "big")] == []
    assert plan.node("label").links["image"] == ("sky", "image")


def test_bypass_changes_both_hashes_and_only_when_on(registry: TemplateRegistry) -> None:
    plain = validate_graph(chain(), registry)
    off = validate_graph(chain(big={"properties": {"bypass": False}}), registry)
    on = validate_graph(chain(bypass=("big",)), registry)

    assert (off.content_hash, off.structure_hash) == (plain.content_hash, plain.structure_hash)
    assert on.structure_hash != plain.structure_hash  # a compiled job is never reused across it
    assert on.content_hash != plain.content_hash


def test_a_bypassed_node_is_not_checked_for_values_it_will_not_use(
    registry: TemplateRegistry,
) -> None:
    bad = {"inputs": {"image": link("small", "image"), "width": lit(-5)}}
    with pytest.raises(GraphValidationError, match="below the minimum"):
        validate_graph(chain(big=bad), registry)

    plan = validate_graph(chain(bypass=("big",), big=bad), registry)
    assert plan.bypassed == ("big",)


def test_consumed_output_without_a_compatible_input_is_pinned_to_the_bypassed_node(
    registry: TemplateRegistry,
) -> None:
    # title (text_prompt) has no linked input: its text cannot pass through to label.text
    with pytest.raises(GraphValidationError) as caught:
        validate_graph(chain(bypass=("title",)), registry)

    [issue] = caught.value.issues
    assert issue.code == "bypass_no_passthrough"
    assert (issue.node_id, issue.port) == ("title", "text")
    assert "'label.text' uses" in issue.message
    assert issue.to_dict()["consumer"] == "label"


def test_an_unconsumed_bypassed_node_is_just_skipped(registry: TemplateRegistry) -> None:
    graph = chain(bypass=("label",))
    plan = validate_graph(graph, registry)

    assert [n.node_id for n in plan.nodes if n.node_id == "label"] == []
    assert set(plan.terminal) == {"big", "title"}


def test_every_node_bypassed_is_an_error(registry: TemplateRegistry) -> None:
    graph = CanvasGraph.model_validate(
        {"nodes": [{"id": "t", "template": "text_prompt", "properties": {"bypass": True}}]}
    )
    with pytest.raises(GraphValidationError, match="every node is bypassed"):
        validate_graph(graph, registry)


def test_annotations_ride_along_and_change_no_hash(registry: TemplateRegistry) -> None:
    body = chain().model_dump(mode="json", exclude_none=True)
    body["annotations"] = [
        {"id": "n1", "kind": "note", "text": "try 512 next", "position": {"x": 0, "y": 0}},
        {"id": "g1", "kind": "group", "text": "Sky", "position": {"x": -20, "y": -20},
         "width": 400, "height": 300},
    ]  # fmt: skip
    annotated = CanvasGraph.model_validate(body)
    plan = validate_graph(annotated, registry)

    assert annotated.annotations is not None and annotated.annotations[0].text == "try 512 next"
    assert plan.content_hash == validate_graph(chain(), registry).content_hash
    assert len(plan.nodes) == 5
