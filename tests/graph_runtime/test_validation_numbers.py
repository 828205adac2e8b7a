"""Numbers a template could not hold are refused at validation, named by node and port,
instead of failing at run time (issue 19: a ``number`` of 10^400 passed, then overflowed)."""

from __future__ import annotations

import pytest

from graph_runtime.canvas import CanvasGraph, CanvasNode, LiteralInput
from graph_runtime.errors import GraphValidationError
from graph_runtime.registry import TemplateRegistry
from graph_runtime.templates import FunctionTemplate, InputSpec, OutputSpec, PortType
from graph_runtime.validation import validate_graph

PORTS = FunctionTemplate(
    id="ports", version="1.0.0", name="Ports", category="value", description="",
    inputs=(InputSpec("f", PortType.FLOAT, default=0.0),
            InputSpec("i", PortType.INTEGER, default=0)),
    outputs=(OutputSpec("value", PortType.FLOAT),), fn=lambda ctx, inputs: {},
)  # fmt: skip


def issue_for(port: str, value: object) -> tuple[str, str | None, str | None, str]:
    graph = CanvasGraph(
        nodes=(CanvasNode(id="p1", template="ports", inputs={port: LiteralInput(value=value)}),)
    )
    with pytest.raises(GraphValidationError) as caught:
        validate_graph(graph, TemplateRegistry([PORTS]))
    (issue,) = caught.value.issues
    return issue.code, issue.node_id, issue.port, issue.message


@pytest.mark.parametrize(
    ("port", "value", "problem"),
    [
        ("f", 10**400, "input 'f' is 1000000000000000000000000000000000000...: beyond the "
         "range of a 64-bit float"),
        ("f", float("inf"), "input 'f' is inf: not a finite number"),
        ("f", float("nan"), "input 'f' is nan: not a finite number"),
        ("i", 2**63, "input 'i' is 9223372036854775808: beyond a signed 64-bit integer"),
        ("i", -(10**5000), "input 'i' is an integer of more than 4300 digits: beyond a signed "
         "64-bit integer"),
    ],
    ids=["float 10^400", "inf", "nan", "int 2^63", "int -10^5000"],
)  # fmt: skip
def test_numbers_out_of_reach_are_refused(port: str, value: object, problem: str) -> None:
    assert issue_for(port, value) == ("out_of_range", "p1", port, problem)


def test_numbers_in_reach_pass() -> None:
    for port, value in (("f", 1e308), ("f", 2**1000), ("i", 2**63 - 1), ("i", -(2**63))):
        graph = CanvasGraph(
            nodes=(CanvasNode(id="p1", template="ports", inputs={port: LiteralInput(value=value)}),)
        )
        validate_graph(graph, TemplateRegistry([PORTS]))
