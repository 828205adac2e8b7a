"""Compile a validated graph into a Dagster job: one op per node, links as dependencies.

Literal input values travel in run config (so the Dagster UI shows them and re-executions use
them), which lets one compiled job serve every graph of the same shape: jobs are cached by
structure, template versions and whether the run makes takes.

Ops declare the resource ``takeflow`` (``required_resource_keys``): an ``OpBridge`` that runs a
node (``run_node``) and records the take (``record_take``). Whoever compiles binds it: the
runner to its own bridge, the code location to one opened when a run executes.

No ``from __future__ import annotations`` here: Dagster reads the op functions' ``context``
annotation at definition time and refuses a string.
"""

import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from typing import Any, Protocol

from dagster import (
    DependencyDefinition,
    Field,
    GraphDefinition,
    In,
    JobDefinition,
    Nothing,
    OpDefinition,
    OpExecutionContext,
    Out,
    Output,
    ResourceDefinition,
    in_process_executor,
    logger,
)

from graph_runtime.validation import ExecutionPlan, PlannedNode

TAKES_OP = "takeflow_takes"
_NAME_RE = re.compile(r"[^A-Za-z0-9_]")

RESOURCE_KEY = "takeflow"


class OpBridge(Protocol):
    """What compiled ops reach as the resource ``takeflow``."""

    def run_node(
        self, context: OpExecutionContext, node: PlannedNode, values: dict[str, Any]
    ) -> Mapping[str, Any]: ...

    def record_take(
        self, context: OpExecutionContext, terminal_outputs: dict[str, Mapping[str, Any]]
    ) -> Iterator[Any]: ...


@logger
def _quiet_logger(_init_context: Any) -> logging.Logger:
    """Dagster's default console logger formats every event; Takeflow has its own events."""
    log = logging.getLogger("takeflow.dagster")
    if not log.handlers:
        log.addHandler(logging.NullHandler())
        log.propagate = False
    log.setLevel(logging.WARNING)
    return log


def op_names(plan: ExecutionPlan) -> dict[str, str]:
    """Node id -> unique Dagster op name."""
    names: dict[str, str] = {}
    used: set[str] = {TAKES_OP}
    for node in plan.nodes:
        base = _NAME_RE.sub("_", node.node_id)
        name, i = base, 2
        while name in used:
            name, i = f"{base}_{i}", i + 1
        used.add(name)
        names[node.node_id] = name
    return names


def job_name(plan: ExecutionPlan) -> str:
    base = _NAME_RE.sub("_", plan.graph.name).strip("_")[:40] or "graph"
    if not base[0].isalpha():
        base = f"g_{base}"
    return f"{base}__{plan.structure_hash[:10]}"


def run_config(plan: ExecutionPlan) -> dict[str, Any]:
    names = op_names(plan)
    return {
        "loggers": {"console": {}},
        "ops": {
            names[n.node_id]: {
                "config": {
                    "inputs": dict(n.literals),
                    "quality": plan.graph.node(n.node_id).properties.quality.value,  # type: ignore[union-attr]
                }
            }
            for n in plan.nodes
        },
    }


def _node_op(node: PlannedNode, op_name: str, upstream_ops: dict[str, str]) -> OpDefinition:
    input_for = {f"from_{upstream_ops[u]}": u for u in node.upstream}

    def compute(context: OpExecutionContext, inputs: Mapping[str, Any]) -> Iterator[Output[Any]]:
        values = dict(context.op_config["inputs"])
        upstream = {input_for[k]: v for k, v in inputs.items()}
        for port, (source, output) in node.links.items():
            values[port] = upstream[source][output]
        bridge: OpBridge = getattr(context.resources, RESOURCE_KEY)
        yield Output(dict(bridge.run_node(context, node, values)), "result")

    return OpDefinition(
        compute_fn=compute,
        name=op_name,
        ins={k: In() for k in input_for},
        outs={"result": Out()},
        config_schema={
            "inputs": Field(dict, is_required=False, default_value={}),  # Permissive()
            "quality": Field(str, is_required=False, default_value="standard"),
        },
        tags={"takeflow/node": node.node_id, "takeflow/template": node.template.ref},
        description=f"{node.template.name} ({node.template.ref})",
        code_version=node.template.version,
        required_resource_keys={RESOURCE_KEY},
    )


def _takes_op(terminal_ops: dict[str, str]) -> OpDefinition:
    input_for = {f"from_{op}": node_id for node_id, op in terminal_ops.items()}

    def compute(context: OpExecutionContext, inputs: Mapping[str, Any]) -> Iterator[Any]:
        bridge: OpBridge = getattr(context.resources, RESOURCE_KEY)
        yield from bridge.record_take(context, {input_for[k]: v for k, v in inputs.items()})
        yield Output(None, "result")

    return OpDefinition(
        compute_fn=compute,
        name=TAKES_OP,
        ins={k: In() for k in input_for},
        outs={"result": Out(Nothing, is_required=False)},
        description="Store the graph's terminal outputs as a take and record materializations",
        required_resource_keys={RESOURCE_KEY},
    )


class JobCompiler:
    """Builds (and caches) Dagster jobs for execution plans, bound to the ``takeflow`` resource."""

    def __init__(self, bridge: ResourceDefinition, max_cached: int = 256) -> None:
        self.resource_defs = {RESOURCE_KEY: bridge}
        self._max_cached = max_cached
        self._cache: OrderedDict[tuple[Any, ...], JobDefinition] = OrderedDict()
        self._lock = threading.Lock()
        self._plans_by_job: dict[str, ExecutionPlan] = {}
        self.builds = 0

    def register_plan(self, plan: ExecutionPlan) -> str:
        """Remember which plan a job name stands for (runs Dagster starts itself need it)."""
        name = job_name(plan)
        with self._lock:
            self._plans_by_job[name] = plan
        return name

    def plan_for_job(self, name: str) -> ExecutionPlan | None:
        with self._lock:
            return self._plans_by_job.get(name)

    def registered_plans(self) -> list[ExecutionPlan]:
        with self._lock:
            return list(self._plans_by_job.values())

    @staticmethod
    def cache_key(plan: ExecutionPlan, with_takes: bool) -> tuple[Any, ...]:
        return (
            plan.structure_hash,
            plan.graph.name,
            tuple(n.template.ref for n in plan.nodes),
            with_takes,
        )

    def job_for(self, plan: ExecutionPlan, with_takes: bool) -> JobDefinition:
        key = self.cache_key(plan, with_takes)
        with self._lock:
            job = self._cache.get(key)
            if job is not None:
                self._cache.move_to_end(key)
                return job
        job = self._build(plan, with_takes)
        self.register_plan(plan)
        with self._lock:
            self._cache[key] = job
            self.builds += 1
            while len(self._cache) > self._max_cached:
                self._cache.popitem(last=False)
        return job

    def _build(self, plan: ExecutionPlan, with_takes: bool) -> JobDefinition:
        names = op_names(plan)
        ops = [_node_op(n, names[n.node_id], names) for n in plan.nodes]
        deps: dict[str, dict[str, DependencyDefinition]] = {
            names[n.node_id]: {
                f"from_{names[u]}": DependencyDefinition(names[u], "result") for u in n.upstream
            }
            for n in plan.nodes
        }
        if with_takes:
            terminal_ops = {nid: names[nid] for nid in plan.terminal}
            ops.append(_takes_op(terminal_ops))
            deps[TAKES_OP] = {
                f"from_{op}": DependencyDefinition(op, "result") for op in terminal_ops.values()
            }
        graph = GraphDefinition(
            name=job_name(plan),
            node_defs=ops,
            dependencies=deps,
            description=f"Takeflow graph '{plan.graph.name}'",
        )
        return graph.to_job(
            executor_def=in_process_executor,
            logger_defs={"console": _quiet_logger},
            resource_defs=self.resource_defs,
            tags={"takeflow/graph": plan.graph.name},
        )
