"""Server validation errors, pinned on the editor's nodes (ComfyUI's ``node_errors``, typed)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class PinnedError:
    code: str
    message: str
    port: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.port is not None:
            out["port"] = self.port
        return out


@dataclass(frozen=True)
class NodeErrors:
    """Errors per node id, plus those that belong to the graph as a whole (or to unknown nodes)."""

    by_node: Mapping[str, tuple[PinnedError, ...]] = field(default_factory=dict)
    graph: tuple[PinnedError, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.by_node or self.graph)

    def to_dict(self) -> dict[str, Any]:
        return {
            "node_errors": {k: [e.to_dict() for e in v] for k, v in self.by_node.items()},
            "graph_errors": [e.to_dict() for e in self.graph],
        }


def pin_errors(body: Mapping[str, Any], node_ids: Iterable[str]) -> NodeErrors:
    """Sort a 422 body (``{"code": "invalid_graph", "errors": [...]}``) onto the canvas's nodes.

    An error naming a node that is not on the canvas stays visible at graph level, with the
    node id in its message, rather than vanishing.
    """
    known = set(node_ids)
    by_node: dict[str, list[PinnedError]] = {}
    graph: list[PinnedError] = []
    errors = body.get("errors")
    if not isinstance(errors, list):
        errors = [{"code": body.get("code", "error"), "message": body.get("message", "")}]
    for raw in errors:
        if not isinstance(raw, Mapping):
            continue
        node_id = raw.get("node_id")
        code, message = str(raw.get("code", "error")), str(raw.get("message", ""))
        error = PinnedError(code, message, raw.get("port"))
        if node_id in known:
            by_node.setdefault(str(node_id), []).append(error)
        elif node_id:
            graph.append(PinnedError(error.code, f"{node_id}: {error.message}", error.port))
        else:
            graph.append(error)
    return NodeErrors({k: tuple(v) for k, v in by_node.items()}, tuple(graph))
