"""The canvas document is parsed once into frozen models that refuse what they do not know."""

from __future__ import annotations

import pydantic
import pytest

from graph_runtime.canvas import CanvasGraph, LinkInput, LiteralInput


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(pydantic.ValidationError, match="colour"):
        CanvasGraph.model_validate({"nodes": [{"id": "a", "template": "number", "colour": "red"}]})


def test_inputs_are_literal_or_link_by_kind() -> None:
    graph = CanvasGraph.model_validate(
        {
            "nodes": [
                {
                    "id": "a",
                    "template": "number",
                    "inputs": {"value": {"kind": "literal", "value": 2}},
                },
                {
                    "id": "b",
                    "template": "number",
                    "inputs": {"value": {"kind": "link", "node": "a", "output": "value"}},
                },
            ]
        }
    )
    assert isinstance(graph.nodes[0].inputs["value"], LiteralInput)
    assert graph.nodes[1].inputs["value"] == LinkInput(node="a", output="value")
    with pytest.raises(pydantic.ValidationError, match="kind"):
        CanvasGraph.model_validate(
            {"nodes": [{"id": "a", "template": "number", "inputs": {"value": {"kind": "wire"}}}]}
        )


def test_models_are_frozen() -> None:
    graph = CanvasGraph.model_validate({"nodes": [{"id": "a", "template": "number"}]})
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        graph.nodes[0].id = "b"  # type: ignore[misc]


@pytest.mark.parametrize("shot", ["a/b", "../x/y", "a/b/c/d", "a/b/.."])
def test_shot_must_be_three_safe_segments(shot: str) -> None:
    with pytest.raises(pydantic.ValidationError, match="chapter/scene/shot"):
        CanvasGraph.model_validate({"nodes": [], "context": {"shot": shot}})


def test_node_ids_are_safe_names() -> None:
    with pytest.raises(pydantic.ValidationError, match="id"):
        CanvasGraph.model_validate({"nodes": [{"id": "../etc", "template": "number"}]})
