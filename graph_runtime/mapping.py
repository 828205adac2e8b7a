"""Per-element mapping: a list output (``OutputSpec.is_list``, e.g. ``video_to_frames``' images)
linked to an input that takes one value makes that node run once per element.

Rules (decided statically by ``validate_graph``, carried out by the node executor):

- A node *maps* over each linked input that receives a list and does not itself accept one
  (``InputSpec.accepts_list``). A list-accepting input gets the whole list (it collects).
- A mapped node runs once per element; every output of a mapped node is a list (one value per
  element; an output that is itself a list, ``is_list``, is concatenated, not nested). So the
  mapping continues downstream until a list-accepting input collects it.
- Several mapped inputs are zipped to the longest list; a shorter list repeats its last element.
  An empty list makes zero runs (every output an empty list).
- Everything else (literals, links from non-list outputs) is the same for every element.

Pure: no I/O, no runtime imports.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from graph_runtime.templates import FunctionTemplate

MAX_ELEMENT_EVENTS = 100  # progress events a mapped node sends for finished elements, at most


def plan_mapping(
    order: Iterable[str],
    templates: Mapping[str, FunctionTemplate],
    links: Mapping[str, Mapping[str, tuple[str, str]]],
) -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    """Node id -> (the input ports it maps over, its outputs that carry lists), for the nodes in
    ``order`` (topological: every node after the nodes it links from)."""
    planned: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}
    for nid in order:
        template = templates[nid]
        node_links = links.get(nid, {})
        mapped = tuple(
            spec.name
            for spec in template.inputs
            if spec.name in node_links
            and not spec.accepts_list
            and node_links[spec.name][1] in planned.get(node_links[spec.name][0], ((), ()))[1]
        )
        outputs = tuple(o.name for o in template.outputs if mapped or o.is_list)
        planned[nid] = (mapped, outputs)
    return planned


def as_list(value: Any) -> list[Any]:
    """A list value as a list (a lone value, which a list output should not give, as one)."""
    return list(value) if isinstance(value, list | tuple) else [value]


def element_count(values: Mapping[str, Any], mapped: Sequence[str]) -> int:
    """How many times a node mapping over ``mapped`` runs: the longest list (0 if one is empty)."""
    lengths = [len(as_list(values[port])) for port in mapped]
    return 0 if not lengths or min(lengths) == 0 else max(lengths)


def element_inputs(values: Mapping[str, Any], mapped: Sequence[str], index: int) -> dict[str, Any]:
    """The inputs of element ``index``: each mapped list's element (its last one past its end),
    every other value as it is."""
    out = dict(values)
    for port in mapped:
        items = as_list(values[port])
        out[port] = items[min(index, len(items) - 1)]
    return out


def merge_outputs(
    results: Sequence[Mapping[str, Any]], template: FunctionTemplate
) -> dict[str, list[Any]]:
    """The outputs of a mapped node: per declared output the list of the elements' values
    (list outputs concatenated)."""
    merged: dict[str, list[Any]] = {o.name: [] for o in template.outputs}
    for result in results:
        for spec in template.outputs:
            if spec.is_list:
                merged[spec.name].extend(as_list(result[spec.name]))
            else:
                merged[spec.name].append(result[spec.name])
    return merged


def element_fraction(index: int, count: int, fraction: float) -> float:
    """A node's progress while element ``index`` of ``count`` is ``fraction`` done."""
    return min(1.0, (index + max(0.0, min(1.0, fraction))) / max(count, 1))


def element_message(index: int, count: int, message: str = "") -> str:
    """``element 3 of 10`` (1-based for people), then the template's own message."""
    prefix = f"element {index + 1} of {count}"
    return f"{prefix}: {message}" if message else prefix


def reports_element(index: int, count: int) -> bool:
    """Whether finishing element ``index`` sends a progress event: every one up to
    ``MAX_ELEMENT_EVENTS`` elements, else evenly spaced ones and the last."""
    step = -(-count // MAX_ELEMENT_EVENTS)  # ceil
    return (index + 1) % step == 0 or index == count - 1


def map_elements(
    template: FunctionTemplate,
    values: Mapping[str, Any],
    mapped: Sequence[str],
    call: Callable[[int, int, dict[str, Any]], Mapping[str, Any]],
) -> dict[str, list[Any]]:
    """Run ``call(index, count, inputs)`` for each element in order and merge the outputs."""
    count = element_count(values, mapped)
    results = [call(i, count, element_inputs(values, mapped, i)) for i in range(count)]
    return merge_outputs(results, template)
