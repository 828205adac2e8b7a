"""Editor document <-> graph/v1, in Python and in the editor's JavaScript, on shared fixtures."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from graph_runtime.canvas import CanvasGraph
from graph_runtime.errors import GraphValidationError
from graph_runtime.registry import TemplateRegistry
from graph_runtime.validation import validate_graph
from ui_bridge.document import EditorDocument, from_graph, parse_canvas, to_graph

HERE = Path(__file__).parent
WEB = HERE.parent.parent / "web"


def fixture(name: str) -> dict:
    return json.loads((HERE / "fixtures" / name).read_text())


@pytest.fixture(scope="module")
def registry() -> TemplateRegistry:
    return TemplateRegistry.discover()


def test_editor_document_becomes_the_expected_graph() -> None:
    graph = to_graph(EditorDocument.model_validate(fixture("three_node.editor.json")))
    assert graph == CanvasGraph.model_validate(fixture("three_node.graph.json"))
    blend = graph.node("blend_1")
    assert blend is not None
    # the link wins over a stale literal typed into the same port before it was connected
    assert blend.inputs["base"].model_dump() == {
        "kind": "link",
        "node": "gradient_image_1",
        "output": "image",
    }


def test_converted_graph_validates_against_real_templates(registry: TemplateRegistry) -> None:
    doc = EditorDocument.model_validate(fixture("three_node.editor.json"))
    plan = validate_graph(to_graph(doc), registry)
    assert plan.terminal == ("blend_1",)
    assert [n.node_id for n in plan.nodes][-1] == "blend_1"


def test_graph_round_trips_through_the_editor_document() -> None:
    graph = CanvasGraph.model_validate(fixture("three_node.graph.json"))
    doc = from_graph(graph)
    assert {(e.source, e.sourceHandle, e.target, e.targetHandle) for e in doc.edges} == {
        ("gradient_image_1", "out-image", "blend_1", "in-base"),
        ("noise_image_1", "out-image", "blend_1", "in-overlay"),
    }
    noise = next(n for n in doc.nodes if n.id == "noise_image_1")
    assert noise.data.version == "1.0.0"
    assert noise.data.label == "grain"
    assert to_graph(doc) == graph


def test_graph_without_positions_gets_a_grid_layout() -> None:
    graph = CanvasGraph.model_validate(
        {"nodes": [{"id": f"n{i}", "template": "number"} for i in range(5)]}
    )
    positions = [(n.position.x, n.position.y) for n in from_graph(graph).nodes]
    assert len(set(positions)) == 5


def test_edge_to_a_missing_node_is_an_error_on_the_target() -> None:
    body = fixture("three_node.editor.json")
    body["edges"].append(
        {
            "source": "ghost",
            "sourceHandle": "out-image",
            "target": "blend_1",
            "targetHandle": "in-mask",
        }
    )
    with pytest.raises(GraphValidationError, match="refers to node 'ghost'") as info:
        to_graph(EditorDocument.model_validate(body))
    assert info.value.to_dict()["errors"][0]["node_id"] == "blend_1"
    assert info.value.to_dict()["errors"][0]["port"] == "mask"


def test_parse_canvas_accepts_both_formats() -> None:
    expected = CanvasGraph.model_validate(fixture("three_node.graph.json"))
    assert parse_canvas(fixture("three_node.editor.json")) == expected
    assert parse_canvas(fixture("three_node.graph.json")) == expected


def _node_eval(script: str) -> object:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the editor's JavaScript cannot be checked")
    out = subprocess.run(
        [node, "--input-type=module", "-e", script],
        cwd=WEB,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return json.loads(out.stdout)


def test_editor_javascript_makes_the_same_graph() -> None:
    doc = fixture("three_node.editor.json")
    script = (
        "import { toGraph } from './src/lib/graph.js';"
        f"const doc = {json.dumps(doc)};"
        "const g = toGraph(doc.nodes, doc.edges, {name: doc.name, ...doc.context});"
        "console.log(JSON.stringify(g));"
    )
    from_js = CanvasGraph.model_validate(_node_eval(script))
    assert from_js == CanvasGraph.model_validate(fixture("three_node.graph.json"))


def test_editor_javascript_reads_graphs_like_python() -> None:
    graph = fixture("three_node.graph.json")
    script = (
        "import { fromGraph } from './src/lib/graph.js';"
        f"const g = {json.dumps(graph)};"
        "const d = fromGraph(g, {});"
        "const out = {format: 'takeflow.editor/v1', name: g.name, context: g.context, ...d};"
        "console.log(JSON.stringify(out));"
    )
    from_js = EditorDocument.model_validate(_node_eval(script))
    from_py = from_graph(CanvasGraph.model_validate(graph))
    assert from_js == from_py


def test_bypass_collapse_and_annotations_survive_both_editors() -> None:
    graph = fixture("three_node.graph.json")
    blend = next(n for n in graph["nodes"] if n["id"] == "blend_1")
    blend["properties"] = {**blend.get("properties", {}), "bypass": True, "collapsed": True}
    model = CanvasGraph.model_validate(graph)
    assert to_graph(from_graph(model)) == model

    graph["annotations"] = [
        {"id": "note_1", "kind": "note", "text": "hi", "position": {"x": 1, "y": 2}},
        {"id": "g", "kind": "group", "text": "Sky", "position": {"x": 0, "y": 0},
         "width": 300, "height": 200},
    ]  # fmt: skip
    script = (
        "import { toGraph, fromGraph } from './src/lib/graph.js';"
        f"const g = {json.dumps(graph)};"
        "const d = fromGraph(g, {});"
        "console.log(JSON.stringify(toGraph(d.nodes, d.edges, {name: g.name, ...g.context})));"
    )
    from_js = CanvasGraph.model_validate(_node_eval(script))
    assert from_js == CanvasGraph.model_validate(graph)
