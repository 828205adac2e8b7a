"""The plan a run that Dagster started executes: its job's graph with the values of its own run
config, validated again.

A job stands for a graph *shape* (``compiler.job_name``); the values live in run config. A UI
launch, a schedule tick or a re-execution therefore carries the values that must run, and the
task's graph, its node cache keys and its take's recorded inputs must all come from them, never
from the saved canvas the job was built from. The base graph (whose wiring, positions and names
are kept) is the re-executed task's own graph when the run names one, else the job's plan.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from dagster import DagsterRun

from dagster_defs.compiler import op_names
from graph_runtime.canvas import CanvasGraph, LinkInput, LiteralInput
from graph_runtime.errors import TakeflowError
from graph_runtime.tasks import DEFAULT_USER, TaskRecord, TaskStatus
from graph_runtime.templates import Quality
from graph_runtime.validation import ExecutionPlan

Validate = Callable[[CanvasGraph], ExecutionPlan]
TASK_TAG = "takeflow/task_id"
LAUNCHED = "launched_run"  # record metadata key: the Dagster run this task executes
PARENT_TAG = "takeflow/parent_task_id"
PARENT_METADATA = "parent_task_id"  # task (and take) metadata: the task a run re-executes


class RunConfigError(TakeflowError):
    """A Dagster run's config does not fit its job's graph."""

    code = "invalid_run_config"
    http_status = 422


def graph_of_run(base: ExecutionPlan, config: Mapping[str, Any]) -> CanvasGraph:
    """``base.graph`` with each node's typed-in values and quality taken from run ``config``
    (``ops.<op>.config.inputs`` / ``.quality``, as ``compiler.run_config`` writes them).

    A value equal to what validation filled in for an input the graph leaves empty (a template
    default) stays empty, so re-running unchanged config gives back the same graph (same hash).
    """
    ops = config.get("ops") or {}
    if not isinstance(ops, Mapping):
        raise RunConfigError("run config 'ops' must be a mapping of op names to their config")
    nodes = []
    names = op_names(base)
    for node in base.graph.nodes:
        op = names.get(node.id)  # a bypassed node has no op
        op_config = (ops.get(op) or {}).get("config") or {} if op else {}
        if not op_config:
            nodes.append(node)
            continue
        planned = base.node(node.id).literals
        given = op_config.get("inputs")
        inputs: dict[str, Any] = {k: v for k, v in node.inputs.items() if isinstance(v, LinkInput)}
        if not isinstance(given, Mapping):
            given = {k: v.value for k, v in node.inputs.items() if isinstance(v, LiteralInput)}
        for port, value in given.items():
            if port in inputs:
                continue  # a linked input: its value comes from upstream, whatever config says
            if port not in node.inputs and port in planned and planned[port] == value:
                continue  # the template's default, filled in by validation
            inputs[port] = LiteralInput(value=value)
        quality = op_config.get("quality", node.properties.quality.value)
        try:
            properties = node.properties.model_copy(update={"quality": Quality(quality)})
        except ValueError:
            raise RunConfigError(
                f"node '{node.id}': quality {quality!r} is not one of "
                f"{', '.join(q.value for q in Quality)}",
                node_id=node.id,
            ) from None
        nodes.append(node.model_copy(update={"inputs": inputs, "properties": properties}))
    return base.graph.model_copy(update={"nodes": tuple(nodes)})


def base_plan(
    job_plan: ExecutionPlan, parent: TaskRecord | None, validate: Validate
) -> ExecutionPlan:
    """What a run's config is applied to: the stored graph of the task it re-executes when that
    has the job's shape (it keeps that task's name and layout), else the job's plan."""
    if parent is None or not parent.graph:
        return job_plan
    try:
        graph = CanvasGraph.model_validate(parent.graph)
        if graph.structure_hash() == job_plan.structure_hash:
            return validate(graph)
    except (ValueError, TakeflowError):  # unreadable, or its templates changed since
        pass
    return job_plan


def run_task_id(run: DagsterRun) -> str:
    """The task id made from a Dagster run's id (runs that carry no task id of their own)."""
    return f"task_{run.run_id.replace('-', '')[:16]}"


def parent_task(
    run: DagsterRun, get_task: Callable[[str], TaskRecord | None]
) -> tuple[str | None, TaskRecord | None]:
    """The task a run re-executes, on first sight of the run (its id and record): the
    ``takeflow/task_id`` it carries from its parent run (Dagster copies the parent's tags),
    when that names a stored task. The copied ``takeflow/parent_task_id`` is the parent's own
    parent, so it is not read here."""
    tagged = run.tags.get(TASK_TAG)
    found = get_task(tagged) if tagged else None
    return (tagged, found) if found is not None else (None, None)


def new_task_of_run(
    run: DagsterRun, get_task: Callable[[str], TaskRecord | None]
) -> tuple[str, str | None, TaskRecord | None]:
    """On first sight of a run: the id of the task it becomes (never its parent's) and the
    task it re-executes (id and record), if any."""
    parent_id, parent = parent_task(run, get_task)
    tagged = run.tags.get(TASK_TAG)
    return (tagged if tagged and tagged != parent_id else run_task_id(run)), parent_id, parent


@dataclass(frozen=True)
class AdoptedRun:
    """A Dagster-started run as a Takeflow task: its record (running), the plan it executes,
    the tags that make the run describe that task, and the error that refuses it, if any."""

    record: TaskRecord
    plan: ExecutionPlan
    tags: dict[str, str]
    error: TakeflowError | None = None


def adopted_run(
    run: DagsterRun,
    job_plan: ExecutionPlan,
    validate: Validate,
    get_task: Callable[[str], TaskRecord | None],
    queued: TaskRecord | None = None,
) -> AdoptedRun:
    """The task for ``run``: a new task id (never its parent's), the run config's graph and
    values validated (``error`` set, with the job's plan in their place, when they are not
    valid), project, shot and user from the run's tags. ``queued``: the task the launcher
    already made for the run (distributed mode), with the parent it found."""
    tags = run.tags
    if queued is None:  # first sight of the run
        task_id, parent_id, parent = new_task_of_run(run, get_task)
    else:
        task_id, parent_id = queued.task_id, queued.metadata.get(PARENT_METADATA)
        parent = get_task(parent_id) if parent_id else None
    error: TakeflowError | None = None
    graph = job_plan.graph
    try:
        graph = graph_of_run(base_plan(job_plan, parent, validate), run.run_config)
        plan = validate(graph)
    except TakeflowError as exc:  # ``graph``: what the config asked for, kept on the record
        plan, error = job_plan, exc
    shot = tags.get("takeflow/shot") or graph.context.shot
    user = tags.get("takeflow/user") or DEFAULT_USER
    record = TaskRecord(
        task_id=task_id,
        graph=graph.model_dump(mode="json"),
        project_id=tags.get("takeflow/project") or graph.context.project,
        shot=shot,
        user=user,
        status=TaskStatus.RUNNING,
        started_at=time.time(),
        node_states={n.node_id: "queued" for n in plan.nodes},
        dagster_run_id=run.run_id,
        metadata={PARENT_METADATA: parent_id} if parent_id else {},
    )
    new_tags = {
        TASK_TAG: task_id,
        "takeflow/graph_hash": plan.content_hash if error is None else "",
        "takeflow/shot": shot,
        "takeflow/user": user,
    }
    if record.project_id:
        new_tags["takeflow/project"] = record.project_id
    if parent_id:
        new_tags[PARENT_TAG] = parent_id
    return AdoptedRun(record, plan, new_tags, error)
