"""Sweeps expand a graph with InvokeAI's batch semantics: zip in a group, product across groups."""

from __future__ import annotations

from typing import Any

import pytest

from graph_runtime.canvas import LiteralInput
from graph_runtime.sweeps import Sweep, SweepError, expand_sweep, set_inputs
from tests.conftest import load_graph


def _literal(item_graph: Any, target: str) -> Any:
    node_id, port = target.split(".")
    value = item_graph.node(node_id).inputs[port]
    assert isinstance(value, LiteralInput)
    return value.value


def test_groups_are_a_product_and_runs_repeat_the_whole() -> None:
    graph = load_graph("poster")
    sweep = Sweep.parse(
        {
            "runs": 2,
            "groups": [
                [{"input": "grain.seed", "values": [1, 2]}],
                [{"input": "mix.opacity", "values": [0.1, 0.2, 0.3]}],
            ],
        }
    )
    items = expand_sweep(graph, sweep)
    assert sweep.size() == len(items) == 12
    combos = [(i.run, i.values["grain.seed"], i.values["mix.opacity"]) for i in items]
    assert combos[:6] == [
        (1, 1, 0.1),
        (1, 1, 0.2),
        (1, 1, 0.3),
        (1, 2, 0.1),
        (1, 2, 0.2),
        (1, 2, 0.3),
    ]
    assert combos[6:] == [(2, s, o) for _, s, o in combos[:6]]
    assert [i.index for i in items] == list(range(12))
    for item in items:
        assert _literal(item.graph, "grain.seed") == item.values["grain.seed"]
        assert _literal(item.graph, "mix.opacity") == item.values["mix.opacity"]
        assert item.graph.structure_hash() == graph.structure_hash()
    assert items[0].metadata("b1") == {
        "batch_id": "b1",
        "index": 0,
        "run": 1,
        "values": {"grain.seed": 1, "mix.opacity": 0.1},
    }
    # the source graph is untouched
    assert _literal(graph, "grain.seed") == 42


def test_fields_in_one_group_are_zipped() -> None:
    sweep = Sweep.parse(
        {
            "groups": [
                [
                    {"input": "sky.start_color", "values": ["#000000", "#ffffff"]},
                    {"input": "title.text", "values": ["night", "day"]},
                ]
            ]
        }
    )
    items = expand_sweep(load_graph("poster"), sweep)
    assert [dict(i.values) for i in items] == [
        {"sky.start_color": "#000000", "title.text": "night"},
        {"sky.start_color": "#ffffff", "title.text": "day"},
    ]


def test_short_form_makes_one_group_per_input() -> None:
    sweep = Sweep.parse({"values": {"grain.seed": [1, 2, 3], "title.text": ["a", "b"]}, "runs": 1})
    assert len(sweep.groups) == 2
    assert len(expand_sweep(load_graph("poster"), sweep)) == 6


def test_unequal_zipped_lists_are_refused_with_the_lengths() -> None:
    sweep = Sweep.parse(
        {
            "groups": [
                [
                    {"input": "grain.seed", "values": [1, 2, 3]},
                    {"input": "title.text", "values": ["a", "b"]},
                ]
            ]
        }
    )
    with pytest.raises(SweepError, match=r"group 1 are zipped.*grain.seed has 3, title.text has 2"):
        expand_sweep(load_graph("poster"), sweep)


def test_unknown_node_suggests_the_closest() -> None:
    sweep = Sweep.parse({"values": {"grian.seed": [1, 2]}})
    with pytest.raises(SweepError, match="no node 'grian'; did you mean 'grain'"):
        expand_sweep(load_graph("poster"), sweep)


def test_linked_inputs_cannot_be_swept() -> None:
    with pytest.raises(SweepError, match=r"'mix.base' is linked to another node"):
        set_inputs(load_graph("poster"), {"mix.base": "x"})


def test_bad_documents_are_one_error() -> None:
    with pytest.raises(SweepError, match=r"groups.0.0.input: String should match pattern"):
        Sweep.parse({"groups": [[{"input": "no_dot", "values": [1]}]]})
    with pytest.raises(SweepError, match=r"values: List should have at least 1 item|values"):
        Sweep.parse({"groups": [[{"input": "a.b", "values": []}]]})
    with pytest.raises(SweepError, match="runs"):
        Sweep.parse({"runs": 0})
    with pytest.raises(SweepError, match="more than the limit of 1000"):
        too_many = Sweep.parse({"values": {"grain.seed": list(range(1001))}})
        expand_sweep(load_graph("poster"), too_many)


def test_an_input_twice_is_refused() -> None:
    sweep = Sweep.parse(
        {
            "groups": [
                [{"input": "grain.seed", "values": [1]}],
                [{"input": "grain.seed", "values": [2]}],
            ]
        }
    )
    with pytest.raises(SweepError, match=r"'grain\.seed' appears in more than one field"):
        expand_sweep(load_graph("poster"), sweep)
