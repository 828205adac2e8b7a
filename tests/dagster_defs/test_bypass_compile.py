"""A bypassed node has no op in the compiled job, and re-running its config keeps the graph."""

from __future__ import annotations

from dagster_defs.compiler import op_names, run_config
from dagster_defs.run_plans import graph_of_run
from graph_runtime.registry import TemplateRegistry
from graph_runtime.validation import validate_graph
from tests.graph_runtime.test_bypass import chain


def test_bypassed_node_gets_no_op_and_its_run_config_gives_the_graph_back() -> None:
    graph = chain(bypass=("big",))
    plan = validate_graph(graph, TemplateRegistry.discover())

    assert "big" not in op_names(plan)
    config = run_config(plan)
    assert "big" not in config["ops"]
    again = graph_of_run(plan, config)
    assert again == graph
    assert again.node("big").properties.bypass is True  # type: ignore[union-attr]
