"""``InputSpec`` constraints checked at validation: a multiple with an offset (``8k+1``) and a
pattern, each in the JSON Schema and in a message naming node and input."""

from __future__ import annotations

from typing import Any

from graph_runtime.canvas import CanvasGraph, CanvasNode, LiteralInput
from graph_runtime.errors import GraphIssue, GraphValidationError
from graph_runtime.registry import TemplateRegistry
from graph_runtime.templates import FunctionTemplate, InputSpec, OutputSpec, PortType
from graph_runtime.validation import validate_graph

CLIP = FunctionTemplate(
    id="clip", version="1.0.0", name="Clip", category="video", description="",
    inputs=(InputSpec("frames", PortType.INTEGER, default=5, multiple_of=4, multiple_offset=1),
            InputSpec("bounded", PortType.INTEGER, default=9, minimum=9, multiple_of=8,
                      multiple_offset=1),
            InputSpec("code", PortType.TEXT, "two letters", default="ab", pattern="[a-z]{2}")),
    outputs=(OutputSpec("n", PortType.INTEGER),), fn=lambda ctx, inputs: {"n": 1},
)  # fmt: skip


def _issues(**values: Any) -> list[GraphIssue]:
    inputs = {k: LiteralInput(value=v) for k, v in values.items()}
    graph = CanvasGraph(nodes=(CanvasNode(id="c", template="clip", inputs=inputs),))
    try:
        validate_graph(graph, TemplateRegistry([CLIP]))
    except GraphValidationError as exc:
        return exc.issues
    return []


def test_a_multiple_with_an_offset_is_checked_and_named() -> None:
    assert _issues(frames=1) == [] and _issues(frames=9, bounded=17) == []
    (issue,) = _issues(frames=8)
    assert (issue.code, issue.node_id, issue.port) == ("not_a_multiple", "c", "frames")
    assert issue.message == "node 'c': input 'frames' must be 4k+1: 1, 5, 9, ..., got 8; try 5 or 9"
    (issue,) = _issues(bounded=16)  # the examples start at the minimum
    assert issue.message == (
        "node 'c': input 'bounded' must be 8k+1: 9, 17, 25, ..., got 16; try 9 or 17"
    )
    (issue,) = _issues(bounded=10)  # 1 is below the minimum: not suggested
    assert issue.message.endswith("got 10; try 9 or 17")


def test_a_pattern_is_matched_in_full() -> None:
    assert _issues(code="xy") == []
    (issue,) = _issues(code="xyz")
    assert (issue.code, issue.port) == ("invalid_format", "code")
    assert issue.message == (
        "node 'c': input 'code' is 'xyz', not of the form (two letters) /[a-z]{2}/"
    )


def test_the_schema_shows_the_constraints() -> None:
    props = CLIP.inputs_schema()["properties"]
    assert (props["frames"]["x-multiple-of"], props["frames"]["x-multiple-offset"]) == (4, 1)
    assert "multipleOf" not in props["frames"]
    assert props["code"]["pattern"] == "[a-z]{2}"
