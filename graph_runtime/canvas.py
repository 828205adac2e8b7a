"""The canvas document: a graph of template instances, parsed once into frozen models.

See ``docs/graph-format.md`` for the JSON format with an example.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from graph_runtime.tasks import DEFAULT_USER
from graph_runtime.templates import Quality

NODE_ID_PATTERN = r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$"
_SEGMENT = r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}"
# chapter/scene/shot; ``_cut`` names where a scene's (``ch/sc/_cut``) or a chapter's
# (``ch/_cut/_cut``) assembled cuts live (``graph_runtime.assembly``)
SHOT_PATTERN = re.compile(rf"^{_SEGMENT}/({_SEGMENT}/({_SEGMENT}|_cut)|_cut/_cut)$")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class LiteralInput(_Frozen):
    """A value typed into the node's form."""

    kind: Literal["literal"] = "literal"
    value: Any


class LinkInput(_Frozen):
    """The named output of another node."""

    kind: Literal["link"] = "link"
    node: str
    output: str


InputValue = Annotated[LiteralInput | LinkInput, Field(discriminator="kind")]


class Position(_Frozen):
    x: float
    y: float


class NodeProperties(_Frozen):
    """How a node runs (quality, bypass) and how the editor shows it (label, collapsed)."""

    quality: Quality = Quality.STANDARD
    label: str | None = None
    bypass: bool | None = None  # true: the node does not run; see graph_runtime/bypass.py
    collapsed: bool | None = None  # editor only


class Annotation(_Frozen):
    """A note or a group frame on the canvas: kept with the graph, never run or validated."""

    id: Annotated[str, Field(pattern=NODE_ID_PATTERN)]
    kind: Literal["note", "group"]
    text: Annotated[str, Field(max_length=20_000)] = ""
    position: Position
    width: Annotated[float, Field(gt=0, le=100_000)] | None = None
    height: Annotated[float, Field(gt=0, le=100_000)] | None = None


class CanvasNode(_Frozen):
    """One use of a template in a graph, with its wiring."""

    id: Annotated[str, Field(pattern=NODE_ID_PATTERN)]
    template: Annotated[str, Field(min_length=1, max_length=128)]
    inputs: dict[str, InputValue] = Field(default_factory=dict)
    properties: NodeProperties = NodeProperties()
    position: Position | None = None


def validate_shot(shot: str) -> str:
    """A shot is ``chapter/scene/shot``: three safe path segments."""
    if not SHOT_PATTERN.fullmatch(shot):
        raise ValueError(
            f"shot {shot!r} must look like 'chapter/scene/shot' "
            "(three segments of letters, digits, '-' or '_')"
        )
    return shot


class RunContext(_Frozen):
    """Where a run's results go and who asked for it."""

    project: str | None = None
    shot: str = "main/main/main"
    user: str = DEFAULT_USER

    @field_validator("shot")
    @classmethod
    def _shot(cls, v: str) -> str:
        return validate_shot(v)


class CanvasGraph(_Frozen):
    """A whole canvas: format version, nodes and the optional run context."""

    format: Literal["takeflow.graph/v1"] = "takeflow.graph/v1"
    name: str = "untitled"
    nodes: tuple[CanvasNode, ...] = Field(max_length=500)
    context: RunContext = RunContext()
    annotations: tuple[Annotation, ...] | None = Field(default=None, max_length=500)

    def node(self, node_id: str) -> CanvasNode | None:
        return next((n for n in self.nodes if n.id == node_id), None)

    def content_hash(self) -> str:
        """Hash of everything that changes results (not positions, labels, name or context)."""
        body = [
            {
                "id": n.id,
                "template": n.template,
                "quality": n.properties.quality.value,
                "inputs": {k: v.model_dump(mode="json") for k, v in sorted(n.inputs.items())},
                **_bypass_mark(n),
            }
            for n in sorted(self.nodes, key=lambda n: n.id)
        ]
        return _sha(body)

    def structure_hash(self) -> str:
        """Hash of the graph's shape: templates and links, not literal values."""
        body = [
            {
                "id": n.id,
                "template": n.template,
                "links": {
                    k: [v.node, v.output]
                    for k, v in sorted(n.inputs.items())
                    if isinstance(v, LinkInput)
                },
                **_bypass_mark(n),
            }
            for n in sorted(self.nodes, key=lambda n: n.id)
        ]
        return _sha(body)


def _bypass_mark(node: CanvasNode) -> dict[str, bool]:
    """A bypassed node changes what runs; an unbypassed one hashes as before bypass existed."""
    return {"bypass": True} if node.properties.bypass else {}


def _sha(body: Any) -> str:
    raw = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(raw).hexdigest()


def single_node_graph(
    template: str,
    inputs: dict[str, Any],
    quality: Quality = Quality.STANDARD,
    node_id: str = "node",
    context: RunContext | None = None,
) -> CanvasGraph:
    """The one-node graph behind ``POST /api/v1/functions/tasks``: every input is a literal."""
    return CanvasGraph(
        name=template,
        nodes=(
            CanvasNode(
                id=node_id,
                template=template,
                inputs={k: LiteralInput(value=v) for k, v in inputs.items()},
                properties=NodeProperties(quality=quality),
            ),
        ),
        context=context or RunContext(),
    )
