"""Parameter sweeps: one graph expanded over lists of values for named node inputs.

The semantics are InvokeAI's batches: each *group* is a list of fields (``node_id.input`` plus a
list of values); the fields of one group are zipped (so they must have equal lengths), the groups
are combined as a Cartesian product (the first group varies slowest), and the whole is repeated
``runs`` times. Each combination becomes one graph whose literal inputs carry its values.

Sweep document (JSON, ``takeflow.sweep/v1``)::

    {"runs": 2,
     "groups": [
       [{"input": "grain.seed", "values": [1, 2]}],
       [{"input": "sky.start_color", "values": ["#000000", "#223344", "#ff0000"]},
        {"input": "label.text", "values": ["night", "dusk", "sunset"]}]
     ]}

``{"values": {"grain.seed": [1, 2]}}`` is a short form: each key is a group of its own.
"""

from __future__ import annotations

import difflib
import itertools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from graph_runtime.canvas import CanvasGraph, LinkInput, LiteralInput
from graph_runtime.errors import TakeflowError

MAX_SWEEP_ITEMS = 1000
INPUT_PATTERN = r"^[A-Za-z_][A-Za-z0-9_-]{0,63}\.[A-Za-z_][A-Za-z0-9_]{0,63}$"


class SweepError(TakeflowError):
    """A sweep that cannot be expanded: bad shape, unequal zipped lists, unknown node or input."""

    code = "invalid_sweep"
    http_status = 422


class SweepField(BaseModel):
    """One node input and the values it takes, in order."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    input: Annotated[str, Field(pattern=INPUT_PATTERN)]
    values: tuple[Any, ...] = Field(min_length=1)

    @property
    def node_id(self) -> str:
        return self.input.split(".", 1)[0]

    @property
    def port(self) -> str:
        return self.input.split(".", 1)[1]


class Sweep(BaseModel):
    """Groups of fields (zipped inside a group, Cartesian product across groups), ``runs`` times."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal["takeflow.sweep/v1"] = "takeflow.sweep/v1"
    groups: tuple[tuple[SweepField, ...], ...] = ()
    runs: Annotated[int, Field(ge=1, le=MAX_SWEEP_ITEMS)] = 1

    @model_validator(mode="before")
    @classmethod
    def _short_form(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "values" in data:
            values = data["values"]
            if not isinstance(values, Mapping):
                raise ValueError("'values' must map 'node_id.input' to a list of values")
            rest = {k: v for k, v in data.items() if k != "values"}
            short = [[{"input": k, "values": v}] for k, v in values.items()]
            rest["groups"] = [*rest.get("groups", []), *short]
            return rest
        return data

    @classmethod
    def parse(cls, raw: Mapping[str, Any] | str | bytes) -> Sweep:
        """Parse a sweep document, turning pydantic's errors into one ``SweepError``."""
        try:
            if isinstance(raw, str | bytes):
                return cls.model_validate_json(raw)
            return cls.model_validate(raw)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'sweep'}: {e['msg']}" for e in exc.errors()
            )
            raise SweepError(f"the sweep is invalid: {problems}") from None

    def size(self) -> int:
        """How many graphs the sweep makes (without expanding it)."""
        total = self.runs
        for group in self.groups:
            total *= len(group[0].values) if group else 1
        return total


@dataclass(frozen=True)
class SweepItem:
    """One combination: its position, repetition, the values it sets and the graph to run."""

    index: int
    run: int
    values: Mapping[str, Any]
    graph: CanvasGraph

    def metadata(self, batch_id: str | None = None) -> dict[str, Any]:
        """What the take records about this combination (under ``sweep``)."""
        return {
            "batch_id": batch_id,
            "index": self.index,
            "run": self.run,
            "values": dict(self.values),
        }


def set_inputs(graph: CanvasGraph, values: Mapping[str, Any]) -> CanvasGraph:
    """A copy of ``graph`` whose ``node_id.input`` literals are replaced by ``values``.

    Refuses unknown nodes and inputs that are links (a sweep changes values, not wiring).
    """
    by_node: dict[str, dict[str, Any]] = {}
    for target, value in values.items():
        node_id, _, port = target.partition(".")
        if not port:
            raise SweepError(f"{target!r} must name a node input as 'node_id.input'", input=target)
        by_node.setdefault(node_id, {})[port] = value
    known = [n.id for n in graph.nodes]
    for node_id, ports in by_node.items():
        node = graph.node(node_id)
        if node is None:
            close = difflib.get_close_matches(node_id, known, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise SweepError(
                f"the graph '{graph.name}' has no node '{node_id}'{hint}", node_id=node_id
            )
        for port in ports:
            if isinstance(node.inputs.get(port), LinkInput):
                raise SweepError(
                    f"input '{node_id}.{port}' is linked to another node; a sweep can only set "
                    "typed-in values",
                    node_id=node_id,
                    port=port,
                )
    nodes = tuple(
        n.model_copy(
            update={
                "inputs": {
                    **n.inputs,
                    **{p: LiteralInput(value=v) for p, v in by_node[n.id].items()},
                }
            }
        )
        if n.id in by_node
        else n
        for n in graph.nodes
    )
    return graph.model_copy(update={"nodes": nodes})


def _check(sweep: Sweep) -> None:
    seen: set[str] = set()
    for number, group in enumerate(sweep.groups, 1):
        if not group:
            raise SweepError(f"group {number} is empty; give it at least one field")
        lengths = {f.input: len(f.values) for f in group}
        if len(set(lengths.values())) > 1:
            listed = ", ".join(f"{k} has {n}" for k, n in lengths.items())
            raise SweepError(
                f"the fields of group {number} are zipped, so their lists must have equal "
                f"lengths ({listed}); make them equal or put the fields in separate groups",
                group=number,
            )
        for f in group:
            if f.input in seen:
                raise SweepError(f"input '{f.input}' appears in more than one field", input=f.input)
            seen.add(f.input)
    if sweep.size() > MAX_SWEEP_ITEMS:
        raise SweepError(
            f"the sweep makes {sweep.size()} graphs, more than the limit of {MAX_SWEEP_ITEMS}",
            size=sweep.size(),
        )


def combinations(sweep: Sweep) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(run, values)`` for every combination, runs outermost, then the groups' product."""
    _check(sweep)
    zipped = [
        [
            dict(zip((f.input for f in group), row, strict=True))
            for row in zip(*(f.values for f in group), strict=True)
        ]
        for group in sweep.groups
    ]
    for run in range(1, sweep.runs + 1):
        for parts in itertools.product(*zipped):
            values: dict[str, Any] = {}
            for part in parts:
                values.update(part)
            yield run, values


def expand_sweep(graph: CanvasGraph, sweep: Sweep) -> list[SweepItem]:
    """Every graph the sweep makes, in order. Raises ``SweepError`` before making any."""
    _check(sweep)
    for group in sweep.groups:  # fail on a bad node or linked input once, not per combination
        set_inputs(graph, {f.input: f.values[0] for f in group})
    return [
        SweepItem(index=i, run=run, values=values, graph=set_inputs(graph, values))
        for i, (run, values) in enumerate(combinations(sweep))
    ]
