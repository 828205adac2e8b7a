"""The Dagster side of a task: compile its plan, execute it as a run (with a code origin) on the
persistent instance, be the ``takeflow`` resource its ops call, adopt runs Dagster started
itself, turn takes into asset materializations, and end runs whose process stopped.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from dagster import (
    AssetMaterialization,
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    JobDefinition,
    MetadataValue,
    OpExecutionContext,
    ResourceDefinition,
    RunsFilter,
)
from dagster._core.events import DagsterEvent, DagsterEventType, EngineEventData
from dagster._core.execution.plan.objects import StepFailureData
from dagster._core.execution.stats import StepEventStatus
from dagster._utils.error import SerializableErrorInfo

from dagster_defs.asset_keys import (
    SavedCanvasIndex,
    file_url,
    node_asset_key,
    take_asset_key,
)
from dagster_defs.compiler import JobCompiler, run_config
from dagster_defs.execution import execute_existing_run, execute_with_origin
from dagster_defs.node_executor import NodeExecutor, TaskExecution
from dagster_defs.take_lineage import source_takes
from dagster_defs.take_recorder import RecordedTake, TakeRecorder
from graph_runtime.tasks import TaskRecord
from graph_runtime.validation import ExecutionPlan, PlannedNode
from nodes.values import thumbnail_markdown
from stores.graph_shapes import GraphShapes

log = logging.getLogger(__name__)
DEFAULT_PUBLIC_URL = "http://127.0.0.1:8470"  # config.json "public_url": where takes are linked
UNFINISHED = [
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
    DagsterRunStatus.CANCELING,
]

# (execution, run succeeded, Dagster's own error) -> None: ends the task (the runner's).
Conclude = Callable[[TaskExecution, bool, str | None], None]
# (context, plan of the run's job) -> the live execution of an adopted run (a new task).
Adopt = Callable[[OpExecutionContext, ExecutionPlan], TaskExecution]


def run_tags(record: TaskRecord, plan: ExecutionPlan) -> dict[str, str]:
    tags = {
        "takeflow/task_id": record.task_id,
        "takeflow/shot": record.shot,
        "takeflow/graph_hash": plan.content_hash,
        "takeflow/user": record.user,
    }
    if record.project_id:
        tags["takeflow/project"] = record.project_id
    if record.batch_id:
        tags["takeflow/batch_id"] = record.batch_id
    return tags


def take_materializations(
    recorded: RecordedTake, record: TaskRecord, public_url: str
) -> Iterator[AssetMaterialization]:
    """One materialization per take output (``asset_keys.take_asset_key``), with a
    project-relative path and a link to the file through Takeflow's API."""
    take = recorded.take
    previews = {f.name: thumbnail_markdown(f) for f in recorded.files}
    for name, stored in take.outputs.items():
        preview = previews.get(name)
        yield AssetMaterialization(
            asset_key=take_asset_key(take.project_id, record.shot, name.replace(".", "__")),
            # the thumbnail goes in the description: the UI renders it inline (markdown metadata
            # is folded behind "[Show Markdown]")
            description=f"{take.take_id} of {record.shot}" + (f"\n\n{preview}" if preview else ""),
            metadata={
                "take_id": take.take_id,
                "take_number": take.number,
                "path": MetadataValue.path(stored.path),
                "url": MetadataValue.url(
                    f"{public_url.rstrip('/')}{file_url(take.project_id, stored.path)}"
                ),
                "task_id": record.task_id,
                "content_type": stored.content_type,
                "size": stored.size,
                "seed": MetadataValue.json(recorded.seeds),
                **_sources(take.metadata),
            },
        )


def _sources(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """``source_takes``: the takes a take read through ``load_take`` (continuity lineage)."""
    sources = source_takes(metadata)
    return {"source_takes": MetadataValue.json(sources)} if sources else {}


def node_materializations(
    execution: TaskExecution, canvas: str, take_id: str
) -> Iterator[AssetMaterialization]:
    """The saved canvas's node assets, materialized by the run that made ``take_id`` (cheap
    metadata: template, time, whether the node cache answered)."""
    project_id = execution.record.project_id or ""
    for node in execution.plan.nodes:
        yield AssetMaterialization(
            asset_key=node_asset_key(project_id, canvas, node.node_id),
            description=f"node '{node.node_id}' of {canvas}, for {take_id}",
            metadata={
                "template": node.template.ref,
                "cached": node.node_id in execution.cached_nodes,
                "duration_ms": float(execution.timings_ms.get(node.node_id, 0.0)),
                "task_id": execution.task_id,
                "take_id": take_id,
            },
        )


class DagsterBackend:
    """Executes tasks as Dagster runs; the ops' ``takeflow`` resource (an ``OpBridge``)."""

    def __init__(
        self,
        instance: DagsterInstance,
        executor: NodeExecutor,
        recorder: TakeRecorder,
        conclude: Conclude,
        adopt: Adopt,
        shapes: GraphShapes | None = None,
        public_url: str = DEFAULT_PUBLIC_URL,
    ) -> None:
        self.instance = instance
        self.public_url = public_url  # links to takes in materializations
        self.canvases = SavedCanvasIndex()
        self.shapes = shapes  # the graph of each job shape run, for the code location
        self.executor = executor
        self.recorder = recorder
        self._conclude = conclude
        self._adopt = adopt
        self.compiler = JobCompiler(ResourceDefinition.hardcoded_resource(self))
        self._live: dict[str, TaskExecution] = {}  # by Dagster run id
        self._ended: OrderedDict[str, TaskExecution] = OrderedDict()  # adopted runs that ended
        self._lock = threading.Lock()

    def running(self) -> list[TaskExecution]:
        with self._lock:
            return list(self._live.values())

    def execute(self, execution: TaskExecution) -> tuple[bool, str | None]:
        """Run the task's plan as Dagster run ``execution.run_id`` in this thread."""
        plan, record = execution.plan, execution.record
        with self._lock:
            self._live[execution.run_id] = execution
        try:
            job = self.compiler.job_for(plan, with_takes=execution.project is not None)
            self._remember_shape(job.name, plan)
            success = execute_with_origin(
                job, run_config(plan), self.instance, execution.run_id, run_tags(record, plan)
            )
            return success, None
        except Exception as exc:  # Dagster itself failed (config, storage)
            log.exception("dagster failed to run task %s", record.task_id)
            return False, f"{type(exc).__name__}: {exc}"
        finally:
            with self._lock:
                self._live.pop(execution.run_id, None)

    def _remember_shape(self, job_name: str, plan: ExecutionPlan) -> None:
        if self.shapes is None:
            return
        try:
            self.shapes.remember(job_name, plan.graph)
        except OSError as exc:  # only re-execution from the Dagster UI depends on it
            log.warning("could not store the graph of job %s: %s", job_name, exc)

    def execute_launched(
        self, execution: TaskExecution, job: JobDefinition, run: DagsterRun
    ) -> tuple[bool, str | None]:
        """Execute ``run``, which Dagster created and a run launcher queued, in this thread."""
        with self._lock:
            self._live[execution.run_id] = execution
        try:
            return execute_existing_run(job, run, self.instance), None
        except Exception as exc:
            log.exception("dagster failed to run task %s", execution.task_id)
            return False, f"{type(exc).__name__}: {exc}"
        finally:
            with self._lock:
                self._live.pop(execution.run_id, None)

    # -- the OpBridge, called from inside Dagster ops -----------------------------------

    def _execution_for(self, context: OpExecutionContext) -> TaskExecution:
        """The live task of a Dagster run; runs Dagster started itself (schedule ticks, UI
        launches and re-executions) are adopted as new tasks on first sight."""
        with self._lock:
            execution = self._live.get(context.run_id) or self._ended.get(context.run_id)
            if execution is None:
                plan = self.compiler.plan_for_job(context.job_name)
                if plan is None:
                    raise RuntimeError(
                        f"job {context.job_name!r} is not a Takeflow graph this code location knows"
                    )
                execution = self._adopt(context, plan)
                self._live[context.run_id] = execution
            return execution

    def _finish_adopted(self, execution: TaskExecution, success: bool) -> None:
        """End an adopted run's task; later steps of the run (independent branches Dagster
        still runs after a failure) find it ended instead of adopting the run again."""
        with self._lock:
            self._live.pop(execution.run_id, None)
            self._ended[execution.run_id] = execution
            while len(self._ended) > 256:
                self._ended.popitem(last=False)
        self._conclude(execution, success, None)

    def run_node(
        self, context: OpExecutionContext, node: PlannedNode, values: dict[str, Any]
    ) -> Mapping[str, Any]:
        """Run ``node`` with the task's own validated values (its plan), whatever job the op
        belongs to: a job stands for every graph of its shape."""
        execution = self._execution_for(context)
        if execution.run_id in self._ended or execution.error is not None:
            error = execution.error or RuntimeError("this run's task has already ended")
            if execution.adopted and execution.run_id not in self._ended:
                self._finish_adopted(execution, False)  # adoption refused the run's values
            raise error
        planned = execution.plan.node(node.node_id)
        values = {**planned.literals, **{port: values[port] for port in planned.links}}
        try:
            outputs = self.executor.run(execution, planned, values)
        except Exception:
            if execution.adopted:
                self._finish_adopted(execution, False)
            raise
        if execution.adopted and execution.project is None and planned is execution.plan.nodes[-1]:
            self._finish_adopted(execution, True)
        return outputs

    def record_take(
        self, context: OpExecutionContext, terminal_outputs: dict[str, Mapping[str, Any]]
    ) -> Iterator[Any]:
        execution = self._execution_for(context)
        if execution.project is None:  # a task without a project makes no take
            if execution.adopted and execution.run_id not in self._ended:
                self._finish_adopted(execution, True)
            return
        if execution.run_id in self._ended:
            raise execution.error or RuntimeError("this run's task has already ended")
        try:
            recorded = self.recorder.record(
                execution, terminal_outputs, context.run.tags.get("dagster/schedule_name")
            )
        except Exception:
            if execution.adopted:
                self._finish_adopted(execution, False)
            raise
        yield from take_materializations(recorded, execution.record, self.public_url)
        canvas = context.run.tags.get("takeflow/canvas") or self.canvases.canvas_for(
            execution.project, execution.plan.graph
        )
        if canvas is not None:
            yield from node_materializations(execution, canvas, recorded.take.take_id)
        if execution.adopted:
            self._finish_adopted(execution, True)

    # -- runs whose process stopped -----------------------------------------------------

    def _fail_open_steps(self, run: DagsterRun, message: str) -> None:
        """A step failure for each step the stopped process left started and unfinished, so the
        run's page lists it as failed, not "Executing"."""
        for stats in self.instance.get_run_step_stats(run.run_id):
            if stats.start_time is None or stats.end_time is not None:
                continue
            if stats.status not in (None, StepEventStatus.IN_PROGRESS):
                continue
            error = SerializableErrorInfo(message, [], "TaskInterruptedError")
            self.instance.report_dagster_event(
                DagsterEvent(
                    event_type_value=DagsterEventType.STEP_FAILURE.value,
                    job_name=run.job_name,
                    step_key=stats.step_key,
                    event_specific_data=StepFailureData(error=error, user_failure_data=None),
                    message=f'Step "{stats.step_key}" failed: {message}',
                ),
                run_id=run.run_id,
                log_level=logging.ERROR,
            )

    def end_runs(self, record: TaskRecord, reason: str) -> list[str]:
        """Say in the task's Dagster run why the task was interrupted (an engine event) and
        mark the run failed if it has not ended; the ids of the runs marked failed."""
        if record.dagster_run_id:
            run = self.instance.get_run_by_id(record.dagster_run_id)
            runs = [run] if run is not None else []
        else:
            runs = list(
                self.instance.get_runs(
                    RunsFilter(tags={"takeflow/task_id": record.task_id}, statuses=UNFINISHED)
                )
            )
        message = f"Takeflow task {record.task_id} was interrupted: {reason}"
        ended = []
        for run in runs:
            self.instance.report_engine_event(
                message,
                run,
                EngineEventData(
                    metadata={
                        "takeflow/task_id": MetadataValue.text(record.task_id),
                        "reason": MetadataValue.text(reason),
                    }
                ),
            )
            if run.status in UNFINISHED:
                self._fail_open_steps(run, message)
                self.instance.report_run_failed(run, message)
                ended.append(run.run_id)
        return ended
