"""Size limits on what a request may ask for, each refused with a stable 4xx code.

JSON bodies are capped by Litestar (``ServerConfig.max_body_bytes``, 413 ``request_too_large``);
uploads stream under their own cap (413 ``upload_too_large``); graphs are capped here by node
and link count before they are parsed (413 ``graph_too_large``).
"""

from __future__ import annotations

from typing import Any

from server.errors import RequestError

DEFAULT_MAX_GRAPH_NODES = 500


class GraphTooLargeError(RequestError):
    code = "graph_too_large"
    http_status = 413


def check_graph_size(graph: dict[str, Any], max_nodes: int = DEFAULT_MAX_GRAPH_NODES) -> None:
    """Refuse a graph document with more than ``max_nodes`` nodes (or inputs per node)."""
    nodes = graph.get("nodes")
    if isinstance(nodes, list) and len(nodes) > max_nodes:
        raise GraphTooLargeError(
            f"a graph holds at most {max_nodes} nodes, this one has {len(nodes)}",
            limit=max_nodes,
            nodes=len(nodes),
        )
    if isinstance(nodes, list):
        for node in nodes:
            inputs = node.get("inputs") if isinstance(node, dict) else None
            if isinstance(inputs, dict) and len(inputs) > max_nodes:
                raise GraphTooLargeError(
                    f"a node holds at most {max_nodes} inputs", limit=max_nodes
                )
