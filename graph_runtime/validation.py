"""Validate a canvas graph against the template registry: every error at once, then a plan."""

from __future__ import annotations

import difflib
import graphlib
import math
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from graph_runtime.bypass import BypassRouter
from graph_runtime.canvas import CanvasGraph, CanvasNode, LinkInput, LiteralInput
from graph_runtime.errors import GraphIssue, GraphValidationError, TemplateNotFoundError
from graph_runtime.mapping import plan_mapping
from graph_runtime.registry import TemplateRegistry, split_ref
from graph_runtime.templates import FunctionTemplate, InputSpec, PortType, link_compatible


@dataclass(frozen=True)
class PlannedNode:
    """A validated node: its template, literal values (defaults and presets applied), links."""

    node_id: str
    template: FunctionTemplate
    literals: Mapping[str, Any]
    links: Mapping[str, tuple[str, str]]
    upstream: tuple[str, ...]
    mapped: tuple[str, ...] = ()  # input ports it runs once per element of (graph_runtime/mapping)
    list_outputs: tuple[str, ...] = ()  # outputs whose value is a list


_VALIDATED = object()  # only ``validate_graph`` holds it: a plan is the proof of validation


@dataclass(frozen=True)
class ExecutionPlan:
    """A graph that passed validation, in topological order. Only ``validate_graph`` makes
    one, so code that holds a plan never needs to validate again."""

    graph: CanvasGraph
    nodes: tuple[PlannedNode, ...]
    terminal: tuple[str, ...]
    content_hash: str
    structure_hash: str
    by_id: Mapping[str, PlannedNode] = field(repr=False, default_factory=dict)
    bypassed: tuple[str, ...] = ()  # nodes the run skips (see graph_runtime/bypass.py)
    proof: object = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.proof is not _VALIDATED:
            raise TypeError("an ExecutionPlan is made by validate_graph only")

    def node(self, node_id: str) -> PlannedNode:
        return self.by_id[node_id]

    def list_outputs(self, node_id: str) -> tuple[str, ...]:
        """The outputs of ``node_id`` that carry lists (declared, or made by mapping)."""
        return self.by_id[node_id].list_outputs


def _did_you_mean(word: str, options: list[str]) -> str:
    close = difflib.get_close_matches(word, options, n=1)
    return f"; did you mean '{close[0]}'?" if close else ""


def _check_literal(node: CanvasNode, spec: InputSpec, value: Any) -> GraphIssue | None:
    def issue(code: str, message: str) -> GraphIssue:
        return GraphIssue(code, message, node_id=node.id, port=spec.name)

    kind = spec.type
    ok_type = {
        PortType.TEXT: isinstance(value, str),
        PortType.INTEGER: isinstance(value, int) and not isinstance(value, bool),
        PortType.FLOAT: isinstance(value, int | float) and not isinstance(value, bool),
        PortType.BOOLEAN: isinstance(value, bool),
        PortType.ASSET: isinstance(value, str) and value.startswith("asset://"),
        PortType.IMAGE: False,
        PortType.MASK: False,
        PortType.CONTROL: False,
        PortType.MODEL: isinstance(value, str | dict),
        PortType.VIDEO: False,
    }.get(kind, True)
    if value is None and not spec.required:
        return None
    if not ok_type:
        if kind in (PortType.IMAGE, PortType.MASK):
            return issue(
                "type_mismatch",
                f"input '{spec.name}' takes an {kind.value}: connect it to a node's "
                f"{kind.value} output (or use load_asset for a file)",
            )
        article = "an" if kind.value[0] in "aeiou" else "a"
        expected = (
            "an 'asset://<id>' reference" if kind == PortType.ASSET else f"{article} {kind.value}"
        )
        return issue(
            "invalid_type",
            f"input '{spec.name}' expects {expected}, got {type(value).__name__} {value!r:.40}",
        )
    if kind in (PortType.INTEGER, PortType.FLOAT):
        problem = _number_problem(kind, value)
        if problem:
            return issue("out_of_range", f"input '{spec.name}' is {_short(value)}: {problem}")
    if spec.choices is not None and value not in spec.choices:
        hint = ""
        if isinstance(value, str):
            hint = _did_you_mean(value, [str(c) for c in spec.choices])
        allowed = ", ".join(repr(c) for c in spec.choices)
        return issue(
            "invalid_choice", f"input '{spec.name}' is {value!r}, not one of {allowed}{hint}"
        )
    if isinstance(value, int | float) and not isinstance(value, bool):
        if spec.minimum is not None and value < spec.minimum:
            return issue(
                "out_of_range",
                f"input '{spec.name}' is {value}, below the minimum {spec.minimum:g}",
            )
        if spec.maximum is not None and value > spec.maximum:
            return issue(
                "out_of_range",
                f"input '{spec.name}' is {value}, above the maximum {spec.maximum:g}",
            )
        step = spec.multiple_of
        if step and isinstance(value, int) and (value - spec.multiple_offset) % step:
            return issue("not_a_multiple", _multiple_message(node.id, spec, value, step))
    pattern = spec.pattern
    if pattern is not None and isinstance(value, str) and not re.fullmatch(pattern, value):
        form = f" ({spec.description})" if spec.description else ""
        return issue(
            "invalid_format",
            f"node '{node.id}': input '{spec.name}' is {_short(value)}, "
            f"not of the form{form} /{pattern}/",
        )
    return None


def _multiple_message(node_id: str, spec: InputSpec, value: int, step: int) -> str:
    """Why ``value`` breaks ``multiple_of`` (and ``multiple_offset``), with the two nearest."""
    offset = spec.multiple_offset
    lower = value - (value - offset) % step
    if not offset:
        return (
            f"input '{spec.name}' is {value}, not a multiple of {step}; "
            f"try {lower} or {lower + step}"
        )
    first = offset % step
    if spec.minimum is not None and first < spec.minimum:
        first += math.ceil((spec.minimum - first) / step) * step
    examples = ", ".join(str(first + step * k) for k in range(3))
    near = [n for n in (lower, lower + step) if spec.minimum is None or n >= spec.minimum]
    return (
        f"node '{node_id}': input '{spec.name}' must be {step}k+{offset}: {examples}, ..., "
        f"got {value}; try {' or '.join(str(n) for n in near)}"
    )


MAX_INTEGER = 2**63 - 1  # what every consumer of an integer port (numpy, torch, SQLite) holds


def _number_problem(kind: PortType, value: int | float) -> str:
    """Why a number cannot be used at run time: not finite, or beyond what a 64-bit float
    (``float`` ports) or a signed 64-bit integer (``integer`` ports) can hold."""
    if isinstance(value, float):
        return "" if math.isfinite(value) else "not a finite number"
    if kind == PortType.FLOAT:
        try:
            float(value)
        except OverflowError:
            return "beyond the range of a 64-bit float"
        return ""
    return "" if -MAX_INTEGER - 1 <= value <= MAX_INTEGER else "beyond a signed 64-bit integer"


def _short(value: Any) -> str:
    """``repr`` for a message, cut to 40 characters (and safe for integers too long to print)."""
    try:
        text = repr(value)
    except ValueError:  # int beyond sys.get_int_max_str_digits()
        return "an integer of more than 4300 digits"
    return text if len(text) <= 40 else f"{text[:37]}..."


def _resolve_template(
    node: CanvasNode, registry: TemplateRegistry, issues: list[GraphIssue]
) -> FunctionTemplate | None:
    try:
        return registry.get(node.template)
    except TemplateNotFoundError as exc:
        _, version = split_ref(node.template)
        code = "unknown_template_version" if "version" in exc.details else "unknown_template"
        if version is None:
            code = "unknown_template"
        issues.append(GraphIssue(code, exc.message, node_id=node.id))
        return None


def _check_services(
    node_id: str, template: FunctionTemplate, available: Collection[str]
) -> list[GraphIssue]:
    have = ", ".join(f"'{s}'" for s in sorted(available)) or "none"
    return [
        GraphIssue(
            "missing_service",
            f"template '{template.id}' needs the '{name}' service, which this runtime does not "
            f"provide (services provided: {have}); install the pack that publishes it",
            node_id=node_id,
            extra={"service": name},
        )
        for name in template.requires
        if name not in available
    ]


def validate_graph(
    graph: CanvasGraph,
    registry: TemplateRegistry,
    available_services: Collection[str] | None = None,
) -> ExecutionPlan:
    """Check the whole graph; raise ``GraphValidationError`` with every issue, else plan it.

    ``available_services``: the service names the runtime provides; templates requiring others
    are refused (``missing_service``). ``None`` skips that check (no runtime at hand).
    """
    issues: list[GraphIssue] = []
    if not graph.nodes:
        issues.append(GraphIssue("empty_graph", "the graph has no nodes; add at least one"))

    nodes: dict[str, CanvasNode] = {}
    for node in graph.nodes:
        if node.id in nodes:
            issues.append(
                GraphIssue(
                    "duplicate_node_id",
                    f"node id '{node.id}' is used more than once; node ids must be unique",
                    node_id=node.id,
                )
            )
            continue
        nodes[node.id] = node

    templates = {nid: _resolve_template(n, registry, issues) for nid, n in nodes.items()}
    planned_literals: dict[str, dict[str, Any]] = {}
    planned_links: dict[str, dict[str, tuple[str, str]]] = {}
    deps: dict[str, set[str]] = {nid: set() for nid in nodes}

    for nid, node in nodes.items():
        template = templates[nid]
        literals: dict[str, Any] = {}
        links: dict[str, tuple[str, str]] = {}
        for port, value in node.inputs.items():
            if isinstance(value, LinkInput):
                source = nodes.get(value.node)
                if source is None:
                    issues.append(
                        GraphIssue(
                            "dangling_link",
                            f"input '{port}' links to node '{value.node}', which is not in the "
                            f"graph{_did_you_mean(value.node, list(nodes))}",
                            node_id=nid,
                            port=port,
                        )
                    )
                    continue
                deps[nid].add(value.node)
                links[port] = (value.node, value.output)
        if template is None:
            planned_links[nid] = links
            continue
        bypass = bool(node.properties.bypass)  # it does not run: only its links must hold
        if available_services is not None and not bypass:
            issues.extend(_check_services(nid, template, available_services))

        port_names = [p.name for p in template.inputs]
        for port in node.inputs:
            if template.input(port) is None:
                issues.append(
                    GraphIssue(
                        "unknown_input",
                        f"template '{template.id}' has no input '{port}'"
                        f"{_did_you_mean(port, port_names)}",
                        node_id=nid,
                        port=port,
                    )
                )

        preset = template.quality_presets.get(node.properties.quality, {})
        for spec in template.inputs:
            raw = node.inputs.get(spec.name)
            if isinstance(raw, LinkInput):
                source_template = templates.get(raw.node)
                if source_template is None:
                    continue
                out = source_template.output(raw.output)
                if out is None:
                    names = [o.name for o in source_template.outputs]
                    issues.append(
                        GraphIssue(
                            "unknown_output",
                            f"input '{spec.name}' links to output '{raw.output}' of node "
                            f"'{raw.node}', but template '{source_template.id}' has no such "
                            f"output{_did_you_mean(raw.output, names)} (its outputs: "
                            f"{', '.join(names)})",
                            node_id=nid,
                            port=spec.name,
                        )
                    )
                elif not link_compatible(out.type, spec.type):
                    issues.append(
                        GraphIssue(
                            "type_mismatch",
                            f"input '{spec.name}' takes {spec.type.value} but '{raw.node}."
                            f"{raw.output}' gives {out.type.value}",
                            node_id=nid,
                            port=spec.name,
                        )
                    )
                continue
            if bypass:
                continue
            if isinstance(raw, LiteralInput):
                value = raw.value
            elif spec.name in preset:
                value = preset[spec.name]
            else:
                value = spec.default
            if value is None:
                if spec.required:
                    issues.append(
                        GraphIssue(
                            "missing_input",
                            f"required input '{spec.name}' ({spec.type.value}) has no value; "
                            + (
                                "connect a node that makes one"
                                if spec.type in (PortType.IMAGE, PortType.MASK, PortType.VIDEO)
                                else "type one in or connect a node to it"
                            ),
                            node_id=nid,
                            port=spec.name,
                        )
                    )
                literals[spec.name] = None
                continue
            problem = _check_literal(node, spec, value)
            if problem:
                issues.append(problem)
            literals[spec.name] = value
        planned_literals[nid] = literals
        planned_links[nid] = links

    order: list[str] = []
    sorter = graphlib.TopologicalSorter(deps)
    try:
        order = list(sorter.static_order())
    except graphlib.CycleError as exc:
        cycle: list[str] = list(dict.fromkeys(exc.args[1]))
        loop = " -> ".join([*cycle, cycle[0]])
        issues.append(
            GraphIssue(
                "cycle",
                f"nodes form a cycle ({loop}); remove one of these links",
                node_id=cycle[0],
                extra={"nodes": cycle},
            )
        )

    bypassed = {nid for nid, n in nodes.items() if n.properties.bypass}
    if bypassed and order:
        planned_links, bypass_issues = BypassRouter(bypassed, templates, planned_links).reroute()
        issues.extend(bypass_issues)
        if nodes and bypassed == set(nodes):
            issues.append(
                GraphIssue("all_bypassed", "every node is bypassed; turn bypass off on one")
            )

    if issues:
        raise GraphValidationError(issues)

    consumed = {src for links in planned_links.values() for src, _ in links.values()}
    running = [nid for nid in order if nid not in bypassed]
    mapping = plan_mapping(running, templates, planned_links)  # type: ignore[arg-type]
    planned = tuple(
        PlannedNode(
            node_id=nid,
            template=templates[nid],  # type: ignore[arg-type]
            literals=planned_literals[nid],
            links=planned_links[nid],
            upstream=tuple(sorted({src for src, _ in planned_links[nid].values()})),
            mapped=mapping[nid][0],
            list_outputs=mapping[nid][1],
        )
        for nid in running
    )
    return ExecutionPlan(
        graph=graph,
        nodes=planned,
        terminal=tuple(n.node_id for n in planned if n.node_id not in consumed),
        content_hash=graph.content_hash(),
        structure_hash=graph.structure_hash(),
        by_id={n.node_id: n for n in planned},
        bypassed=tuple(sorted(bypassed)),
        proof=_VALIDATED,
    )
