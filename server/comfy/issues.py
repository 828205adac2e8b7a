"""Takeflow's validation issues about a translated prompt, put back on the ComfyUI nodes and
inputs they came from (``node_errors`` of a 400)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from graph_runtime.errors import GraphIssue
from server.comfy.catalog import Catalog
from server.comfy.errors import NodeErrors, PromptRejected, input_error
from server.comfy.translate import Translation

_ISSUE_TYPES = {
    "invalid_choice": ("value_not_in_list", "Value not in list"),
    "invalid_type": ("invalid_input_type", "Failed to convert an input value"),
    "missing_input": ("required_input_missing", "Required input is missing"),
}


def map_issues(
    issues: list[GraphIssue],
    translation: Translation,
    prompt: Mapping[str, Any],
    outputs: list[str],
    catalog: Catalog,
) -> PromptRejected:
    """Takeflow's validation issues, as ComfyUI ``node_errors`` on the nodes they came from."""
    errors = NodeErrors(prompt, outputs)
    literals = {
        (n["id"], port): v.get("value")
        for n in translation.graph["nodes"]
        for port, v in n["inputs"].items()
    }
    templates = {n["id"]: n["template"] for n in translation.graph["nodes"]}
    unplaced: list[str] = []
    for issue in issues:
        where = translation.ports.get(f"{issue.node_id}|{issue.port}")
        if where is None:
            owner = translation.owners.get(issue.node_id or "")
            if owner is None:
                unplaced.append(issue.message)
                continue
            errors.add(owner, input_error("custom_validation_failed", "Takeflow refused the node",
                                          issue.message))  # fmt: skip
            continue
        comfy_node, comfy_input = where
        received = prompt[comfy_node].get("inputs", {}).get(comfy_input)
        type_, message = _ISSUE_TYPES.get(issue.code, ("custom_validation_failed", "Invalid value"))
        if issue.code == "out_of_range" and issue.node_id and issue.port:
            value = literals.get((issue.node_id, issue.port))
            limits = catalog.limits(templates[issue.node_id], issue.port)
            low = isinstance(value, int | float) and limits.minimum is not None
            if low and value < limits.minimum:  # type: ignore[operator]
                type_ = "value_smaller_than_min"
                message = f"Value {received} smaller than min of {limits.minimum:g}"
            else:
                type_ = "value_bigger_than_max"
                message = f"Value {received} bigger than max of {limits.maximum:g}"
        details = f"{comfy_input}: {issue.message}"
        errors.add(comfy_node, input_error(type_, message, details, comfy_input, None, received))
    if unplaced and not errors:
        return PromptRejected("invalid_prompt", "Invalid prompt", "; ".join(unplaced))
    try:
        errors.raise_if_any()
    except PromptRejected as rejected:
        return rejected
    return PromptRejected("invalid_prompt", "Invalid prompt", "; ".join(unplaced))
