"""ComfyUI's error shapes for ``POST /prompt``: a top-level ``error`` and per-node ``node_errors``.

``{"error": {"type", "message", "details", "extra_info"}, "node_errors": {node_id: {"errors":
[{"type", "message", "details", "extra_info"}], "dependent_outputs": [...], "class_type"}}}``
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class PromptRejected(Exception):
    """A prompt answered with 400 (429 with ``Retry-After`` when the queue is full) and
    ComfyUI's error body; nothing was queued."""

    def __init__(
        self,
        type_: str,
        message: str,
        details: str = "",
        extra_info: dict[str, Any] | None = None,
        node_errors: dict[str, Any] | None = None,
        status: int = 400,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
        self.type = type_
        self.message = message
        self.details = details
        self.extra_info = extra_info or {}
        self.node_errors = node_errors or {}

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "type": self.type,
                "message": self.message,
                "details": self.details,
                "extra_info": self.extra_info,
            },
            "node_errors": self.node_errors,
        }


def input_error(
    type_: str,
    message: str,
    details: str,
    input_name: str | None = None,
    input_config: Any = None,
    received: Any = None,
) -> dict[str, Any]:
    """One entry of a node's ``errors``."""
    extra: dict[str, Any] = {}
    if input_name is not None:
        extra["input_name"] = input_name
        if input_config is not None:
            extra["input_config"] = input_config
        extra["received_value"] = received
    return {"type": type_, "message": message, "details": details, "extra_info": extra}


class NodeErrors:
    """Collects per-node errors; ``raise_if_any`` turns them into ComfyUI's 400 answer."""

    def __init__(self, prompt: Mapping[str, Any], outputs: list[str]) -> None:
        self.prompt = prompt
        self.outputs = outputs
        self.errors: dict[str, list[dict[str, Any]]] = {}

    def add(self, node_id: str, error: dict[str, Any]) -> None:
        found = self.errors.setdefault(node_id, [])
        if error not in found:
            found.append(error)

    def __bool__(self) -> bool:
        return bool(self.errors)

    def _dependents(self, node_id: str) -> list[str]:
        """Output nodes that have ``node_id`` among their ancestors (or are it)."""
        found = []
        for out in self.outputs:
            seen, stack = set(), [out]
            while stack:
                current = stack.pop()
                if current == node_id:
                    found.append(out)
                    break
                if current in seen:
                    continue
                seen.add(current)
                node = self.prompt.get(current)
                inputs = node.get("inputs") if isinstance(node, dict) else None
                for value in (inputs or {}).values():
                    if is_link(value):
                        stack.append(str(value[0]))
        return found

    def report(self) -> dict[str, Any]:
        """ComfyUI's ``node_errors``: per node its errors, class and dependent outputs."""
        node_errors = {}
        for node_id, errors in self.errors.items():
            node = self.prompt.get(node_id)
            class_type = node.get("class_type") if isinstance(node, dict) else None
            node_errors[node_id] = {
                "errors": errors,
                "dependent_outputs": self._dependents(node_id),
                "class_type": class_type,
            }
        return node_errors

    def raise_if_any(self) -> None:
        if not self.errors:
            return
        node_errors = self.report()
        details = "; ".join(
            f"node {nid}: {e['message']}: {e['details']}"
            for nid, errs in self.errors.items()
            for e in errs
        )
        raise PromptRejected(
            "prompt_outputs_failed_validation",
            "Prompt outputs failed validation",
            details,
            node_errors=node_errors,
        )


def is_link(value: Any) -> bool:
    """A ``[source_node_id, output_index]`` pair."""
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str | int)
        and not isinstance(value[0], bool)
        and isinstance(value[1], int)
        and not isinstance(value[1], bool)
    )
