"""The editor document (Svelte Flow nodes and edges) and its conversion to and from graph/v1.

The browser keeps a canvas as Svelte Flow state: nodes carrying ``data`` (template, version,
literal ``values``, quality, label) and edges between handles named ``out-<port>`` and
``in-<port>``. ``to_graph`` turns that into the runtime's ``CanvasGraph`` (links become
``{"kind": "link"}`` inputs, literals ``{"kind": "literal"}``; a link wins over a literal on the
same port) and ``from_graph`` goes back. ``web/src/lib/graph.js`` is the same code in JavaScript;
``tests/ui_bridge`` pins both directions on shared fixtures.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from graph_runtime.canvas import (
    CanvasGraph,
    CanvasNode,
    InputValue,
    LinkInput,
    LiteralInput,
    NodeProperties,
    Position,
    RunContext,
)
from graph_runtime.errors import GraphIssue, GraphValidationError
from graph_runtime.registry import split_ref
from graph_runtime.templates import Quality

EDITOR_FORMAT: Literal["takeflow.editor/v1"] = "takeflow.editor/v1"
IN_PREFIX = "in-"
OUT_PREFIX = "out-"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class EditorNodeData(_Model):
    """What a node carries in the editor: its template and the values typed into its form."""

    template: Annotated[str, Field(min_length=1, max_length=128)]
    version: str | None = None
    values: dict[str, Any] = Field(default_factory=dict)
    quality: Quality = Quality.STANDARD
    label: str = ""
    bypass: bool = False
    collapsed: bool = False


class EditorNode(_Model):
    id: str
    type: str = "template"
    position: Position = Position(x=0, y=0)
    data: EditorNodeData


class EditorEdge(_Model):
    id: str | None = None
    source: str
    sourceHandle: str  # Svelte Flow's field names
    target: str
    targetHandle: str


class EditorDocument(_Model):
    """A canvas as the editor holds it (Svelte Flow extras such as ``selected`` are dropped)."""

    format: Literal["takeflow.editor/v1"] = EDITOR_FORMAT
    name: str = "untitled"
    nodes: list[EditorNode] = Field(default_factory=list, max_length=500)
    edges: list[EditorEdge] = Field(default_factory=list)
    context: RunContext = RunContext()


def handle_port(handle: str, prefix: str) -> str:
    """``"in-image"`` -> ``"image"`` (a handle without the prefix is taken as the port name)."""
    return handle.removeprefix(prefix)


def template_ref(data: EditorNodeData) -> str:
    """The reference a saved graph pins: template id plus major version (``blend@1``)."""
    if not data.version:
        return data.template
    return f"{data.template}@{data.version.split('.')[0]}"


def to_graph(doc: EditorDocument) -> CanvasGraph:
    """The graph/v1 model of an editor document; edges to unknown nodes are errors."""
    node_ids = {n.id for n in doc.nodes}
    issues: list[GraphIssue] = []
    links: dict[str, dict[str, LinkInput]] = {}
    for edge in doc.edges:
        port = handle_port(edge.targetHandle, IN_PREFIX)
        if edge.target not in node_ids or edge.source not in node_ids:
            missing = edge.target if edge.target not in node_ids else edge.source
            issues.append(
                GraphIssue(
                    "dangling_edge",
                    f"an edge into '{port}' refers to node '{missing}', which is not on the canvas",
                    node_id=edge.target if edge.target in node_ids else None,
                    port=port,
                )
            )
            continue
        links.setdefault(edge.target, {})[port] = LinkInput(
            node=edge.source, output=handle_port(edge.sourceHandle, OUT_PREFIX)
        )
    if issues:
        raise GraphValidationError(issues)
    nodes = []
    for node in doc.nodes:
        inputs: dict[str, InputValue] = {
            port: LiteralInput(value=value)
            for port, value in node.data.values.items()
            if value is not None
        }
        inputs.update(links.get(node.id, {}))
        nodes.append(
            CanvasNode(
                id=node.id,
                template=template_ref(node.data),
                inputs=dict(sorted(inputs.items())),
                properties=NodeProperties(
                    quality=node.data.quality,
                    label=node.data.label or None,
                    bypass=node.data.bypass or None,
                    collapsed=node.data.collapsed or None,
                ),
                position=Position(x=round(node.position.x), y=round(node.position.y)),
            )
        )
    return CanvasGraph(name=doc.name, nodes=tuple(nodes), context=doc.context)


def edge_id(source: str, output: str, target: str, port: str) -> str:
    return f"e-{source}-{output}-{target}-{port}"


def from_graph(graph: CanvasGraph, versions: dict[str, str] | None = None) -> EditorDocument:
    """The editor document of a graph; ``versions`` (template id -> full version) where known."""
    versions = versions or {}
    nodes: list[EditorNode] = []
    edges: list[EditorEdge] = []
    for i, node in enumerate(graph.nodes):
        template_id, pinned = split_ref(node.template)
        values: dict[str, Any] = {}
        for port, value in node.inputs.items():
            if isinstance(value, LinkInput):
                edges.append(
                    EditorEdge(
                        id=edge_id(value.node, value.output, node.id, port),
                        source=value.node,
                        sourceHandle=OUT_PREFIX + value.output,
                        target=node.id,
                        targetHandle=IN_PREFIX + port,
                    )
                )
            else:
                values[port] = value.value
        position = node.position or Position(x=40 + (i % 4) * 320, y=40 + (i // 4) * 260)
        nodes.append(
            EditorNode(
                id=node.id,
                position=position,
                data=EditorNodeData(
                    template=template_id,
                    version=versions.get(template_id) or _full_version(pinned),
                    values=values,
                    quality=node.properties.quality,
                    label=node.properties.label or "",
                    bypass=bool(node.properties.bypass),
                    collapsed=bool(node.properties.collapsed),
                ),
            )
        )
    return EditorDocument(name=graph.name, nodes=nodes, edges=edges, context=graph.context)


def _full_version(version: str | None) -> str | None:
    if version is None:
        return None
    parts = version.split(".")
    return ".".join(parts + ["0"] * (3 - len(parts)))


def parse_canvas(body: dict[str, Any]) -> CanvasGraph:
    """A graph/v1 or editor/v1 document, parsed once into the runtime's model."""
    if body.get("format") == EDITOR_FORMAT:
        return to_graph(EditorDocument.model_validate(body))
    return CanvasGraph.model_validate(body)
