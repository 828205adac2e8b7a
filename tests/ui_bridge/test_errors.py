"""Validation errors from the real validator, pinned on the right editor nodes."""

from __future__ import annotations

import pytest

from graph_runtime.canvas import CanvasGraph
from graph_runtime.errors import GraphValidationError
from graph_runtime.registry import TemplateRegistry
from graph_runtime.validation import validate_graph
from ui_bridge.errors import pin_errors


def _errors_of(graph: dict) -> dict:
    with pytest.raises(GraphValidationError) as info:
        validate_graph(CanvasGraph.model_validate(graph), TemplateRegistry.discover())
    return info.value.to_dict()


def test_each_error_lands_on_its_node_and_port() -> None:
    body = _errors_of(
        {
            "nodes": [
                {
                    "id": "size",
                    "template": "noise_image",
                    "inputs": {"width": {"kind": "literal", "value": 99999}},
                },
                {
                    "id": "mix",
                    "template": "blend",
                    "inputs": {
                        "base": {"kind": "link", "node": "size", "output": "image"},
                        "mode": {"kind": "literal", "value": "screem"},
                    },
                },
                {"id": "typo", "template": "gradiant_image"},
            ]
        }
    )
    pinned = pin_errors(body, ["size", "mix", "typo"])
    assert {e.port for e in pinned.by_node["size"]} == {"width"}
    assert "above the maximum" in pinned.by_node["size"][0].message
    ports = {e.port: e for e in pinned.by_node["mix"]}
    assert "overlay" in ports  # required and unconnected
    assert "did you mean 'screen'" in ports["mode"].message
    assert pinned.by_node["typo"][0].code == "unknown_template"
    assert not pinned.graph


def test_errors_of_nodes_not_on_the_canvas_stay_visible() -> None:
    body = {
        "code": "invalid_graph",
        "errors": [
            {"code": "empty_graph", "message": "the graph has no nodes"},
            {"code": "dangling_link", "message": "links to x", "node_id": "gone", "port": "a"},
        ],
    }
    pinned = pin_errors(body, ["other"])
    assert not pinned.by_node
    assert [e.message for e in pinned.graph] == ["the graph has no nodes", "gone: links to x"]
    assert pinned.to_dict()["graph_errors"][1] == {
        "code": "dangling_link",
        "message": "gone: links to x",
        "port": "a",
    }


def test_a_non_graph_error_becomes_one_graph_level_error() -> None:
    pinned = pin_errors({"code": "project_not_found", "message": "no project 'x'"}, [])
    assert [(e.code, e.message) for e in pinned.graph] == [("project_not_found", "no project 'x'")]
    assert bool(pinned)
