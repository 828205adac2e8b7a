"""Checks a ComfyUI "API format" prompt before translation: node types, links, inputs, values.

Ranges of inputs that map one to one onto a Takeflow template input are not checked here: the
translated graph goes through Takeflow's own validation and its issues come back on the ComfyUI
node and input they came from (``server.comfy.translate``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from server.comfy.catalog import LINK_TYPES, Catalog, Input, NodeType
from server.comfy.errors import NodeErrors, PromptRejected, input_error, is_link


def as_int(value: Any) -> int:
    """ComfyUI's lenient integer: ints, integral floats and numeric strings."""
    if isinstance(value, bool):
        raise ValueError("a boolean is not an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        return int(value.strip())
    raise ValueError(f"{value!r} is not an integer")


def as_float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("a boolean is not a number")
    if isinstance(value, int | float | str):
        return float(value)
    raise ValueError(f"{value!r} is not a number")


def check_shape(prompt: Any) -> Mapping[str, Any]:
    """The prompt is an object of nodes, each with a known ``class_type``."""
    if prompt is None:
        raise PromptRejected("no_prompt", "No prompt provided", 'send {"prompt": {...}}')
    if not isinstance(prompt, dict) or not prompt:
        raise PromptRejected(
            "invalid_prompt",
            "Invalid prompt: the prompt must be a non-empty object of nodes keyed by node id",
        )
    for node_id, node in prompt.items():
        if not isinstance(node, dict) or not isinstance(node.get("class_type"), str):
            raise PromptRejected(
                "invalid_prompt",
                "Cannot execute because a node is missing the class_type property.",
                f"Node ID '#{node_id}'",
                {"node_id": node_id},
            )
        if not isinstance(node.get("inputs", {}), dict):
            raise PromptRejected(
                "invalid_prompt",
                "Invalid prompt: a node's inputs must be an object",
                f"Node ID '#{node_id}'",
                {"node_id": node_id},
            )
    return prompt


def check_node_types(prompt: Mapping[str, Any], catalog: Catalog) -> None:
    """Unknown class types: ComfyUI's ``missing_node_type``, naming each one."""
    unknown = {
        str(nid): str(node["class_type"])
        for nid, node in prompt.items()
        if catalog.get(node["class_type"]) is None
    }
    if not unknown:
        return
    node_errors = {
        nid: {
            "errors": [
                input_error(
                    "missing_node_type",
                    f"Node '{cls}' not found. Takeflow does not provide this node type.",
                    f"Node ID '#{nid}'",
                )
            ],
            "dependent_outputs": [],
            "class_type": cls,
        }
        for nid, cls in unknown.items()
    }
    first_id, first_cls = next(iter(unknown.items()))
    names = ", ".join(sorted(set(unknown.values())))
    raise PromptRejected(
        "missing_node_type",
        f"Node '{first_cls}' not found. Takeflow does not provide this node type."
        if len(unknown) == 1
        else f"Node types not found: {names}.",
        f"Node ID '#{first_id}'",
        {"node_id": first_id, "class_type": first_cls, "node_title": first_cls,
         "class_types": sorted(set(unknown.values()))},
        node_errors,
    )  # fmt: skip


def output_nodes(prompt: Mapping[str, Any], catalog: Catalog) -> list[str]:
    outputs = [nid for nid, node in prompt.items() if _type(catalog, node).output_node]
    if not outputs:
        raise PromptRejected(
            "prompt_no_outputs",
            "Prompt has no outputs",
            "add a SaveImage, PreviewImage or SaveImageWebsocket node",
        )
    return outputs


def _type(catalog: Catalog, node: Mapping[str, Any]) -> NodeType:
    found = catalog.get(node["class_type"])
    assert found is not None  # check_node_types ran first
    return found


def needed_nodes(prompt: Mapping[str, Any], outputs: list[str]) -> list[str]:
    """The output nodes and their ancestors (what runs), each once."""
    seen: list[str] = []
    stack = list(outputs)
    while stack:
        nid = stack.pop()
        if nid in seen or nid not in prompt:
            continue
        seen.append(nid)
        for value in prompt[nid].get("inputs", {}).values():
            if is_link(value):
                stack.append(str(value[0]))
    return seen


def _check_literal(catalog: Catalog, spec: Input, value: Any) -> dict[str, Any] | None:
    config = catalog.input_config(spec)
    name = spec.name

    def bad(type_: str, message: str, details: str) -> dict[str, Any]:
        return input_error(type_, message, details, name, config, value)

    if spec.kind in LINK_TYPES:
        return bad(
            "bad_linked_input",
            "Bad linked input, must be a length-2 list of [string, int]",
            f"{name}: connect it to a {spec.kind} output",
        )
    try:
        if spec.kind == "INT":
            number: float = as_int(value)
        elif spec.kind == "FLOAT":
            number = as_float(value)
        elif spec.kind == "COMBO":
            choices = catalog.choices(spec)
            if value not in choices:
                shown = choices if len(choices) <= 20 else [*choices[:20], "..."]
                why = f" ({spec.refused[str(value)]})" if str(value) in spec.refused else ""
                return bad("value_not_in_list", "Value not in list",
                           f"{name}: '{value}' not in {shown}{why}")  # fmt: skip
            return None
        elif spec.kind == "BOOLEAN":
            if not isinstance(value, bool):
                raise ValueError(f"{value!r} is not a boolean")
            return None
        else:
            if not isinstance(value, str | int | float) or isinstance(value, bool):
                raise ValueError(f"{value!r} is not a string")
            return None
    except ValueError as exc:
        return bad("invalid_input_type", f"Failed to convert an input value to a {spec.kind} value",
                   f"{name}, {value}, {exc}")  # fmt: skip
    if spec.limits_from is None:  # mapped inputs are range-checked by Takeflow's validation
        low, high = spec.options.get("min"), spec.options.get("max")
        if low is not None and number < low:
            return bad("value_smaller_than_min", f"Value {value} smaller than min of {low}", name)
        if high is not None and number > high:
            return bad("value_bigger_than_max", f"Value {value} bigger than max of {high}", name)
    return None


def check_inputs(
    prompt: Mapping[str, Any], catalog: Catalog, needed: list[str], errors: NodeErrors
) -> None:
    """Every input of every node that runs: present, well linked, of the right type."""
    for nid in needed:
        node = prompt[nid]
        node_type = _type(catalog, node)
        inputs = node.get("inputs", {})
        for spec in node_type.inputs:
            if spec.name not in inputs:
                if spec.required:
                    errors.add(nid, input_error(
                        "required_input_missing", "Required input is missing", spec.name,
                        spec.name, catalog.input_config(spec), None))  # fmt: skip
                continue
            value = inputs[spec.name]
            if isinstance(value, list):
                problem = _check_link(prompt, catalog, spec, value)
            else:
                problem = _check_literal(catalog, spec, value)
            if problem is not None:
                errors.add(nid, problem)


def _check_link(
    prompt: Mapping[str, Any], catalog: Catalog, spec: Input, value: list[Any]
) -> dict[str, Any] | None:
    config = catalog.input_config(spec)

    def bad(type_: str, message: str, details: str) -> dict[str, Any]:
        return input_error(type_, message, details, spec.name, config, value)

    if not is_link(value):
        return bad("bad_linked_input", "Bad linked input, must be a length-2 list of [string, int]",
                   spec.name)  # fmt: skip
    source_id, index = str(value[0]), int(value[1])
    source = prompt.get(source_id)
    if source is None:
        return bad("bad_linked_input", "Bad linked input: the linked node does not exist",
                   f"{spec.name}: node '{source_id}' is not in the prompt")  # fmt: skip
    outputs = _type(catalog, source).outputs
    if not 0 <= index < len(outputs):
        return bad("bad_linked_input", "Bad linked input: no such output",
                   f"{spec.name}: node '{source_id}' ({source['class_type']}) has "
                   f"{len(outputs)} outputs, not an output {index}")  # fmt: skip
    received = outputs[index]
    wanted = spec.kind
    if received != wanted:
        return input_error(
            "return_type_mismatch",
            "Return type mismatch between linked nodes",
            f"{spec.name}, received_type({received}) mismatch input_type({wanted})",
            spec.name, config, value,
        )  # fmt: skip
    return None


def validate_prompt(
    prompt: Any, catalog: Catalog
) -> tuple[Mapping[str, Any], list[str], list[str]]:
    """Check a prompt whole; returns it with its output node ids and the node ids that run."""
    checked = check_shape(prompt)
    check_node_types(checked, catalog)
    outputs = output_nodes(checked, catalog)
    needed = needed_nodes(checked, outputs)
    errors = NodeErrors(checked, outputs)
    check_inputs(checked, catalog, needed, errors)
    errors.raise_if_any()
    return checked, outputs, needed


def validate_partial(
    prompt: Any, catalog: Catalog, targets: Any = None
) -> tuple[Mapping[str, Any], list[str], list[str], dict[str, Any]]:
    """Check a prompt as ComfyUI does: only the output nodes named in ``targets``
    (``partial_execution_targets``; all when None), and the valid outputs run while the
    invalid ones come back as ``node_errors``. Returns the prompt, the outputs that run, the
    nodes that run and the ``node_errors``; raises when no output is valid."""
    checked = check_shape(prompt)
    check_node_types(checked, catalog)
    outputs = output_nodes(checked, catalog)
    if targets is not None:
        if not isinstance(targets, list) or not all(isinstance(t, str | int) for t in targets):
            raise PromptRejected(
                "invalid_prompt",
                "Invalid prompt: partial_execution_targets must be a list of node ids",
            )
        wanted = {str(t) for t in targets}
        outputs = [nid for nid in outputs if nid in wanted]
        if not outputs:
            raise PromptRejected(
                "prompt_no_outputs",
                "Prompt has no outputs",
                "partial_execution_targets names no output node of the prompt",
            )
    errors = NodeErrors(checked, outputs)
    check_inputs(checked, catalog, needed_nodes(checked, outputs), errors)
    if not errors:
        return checked, outputs, needed_nodes(checked, outputs), {}
    report = errors.report()
    failed = {out for entry in report.values() for out in entry["dependent_outputs"]}
    valid = [nid for nid in outputs if nid not in failed]
    if not valid:
        errors.raise_if_any()
    return checked, valid, needed_nodes(checked, valid), report
