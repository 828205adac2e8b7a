"""The Dagster side of a task: compile its plan, execute it as a run (with a code origin) on the
persistent instance, be the ``takeflow`` resource its ops call, adopt runs Dagster started
itself, turn takes into asset materializations, and end runs whose process stopped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from dagster import (
    AssetKey,
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
from dagster._core.events import EngineEventData

from dagster_defs.compiler import JobCompiler, run_config
from dagster_defs.execution import execute_existing_run, execute_with_origin
from dagster_defs.node_executor import NodeExecutor, TaskExecution
from dagster_defs.take_recorder import RecordedTake, TakeRecorder
from graph_runtime.tasks import DEFAULT_USER, TaskRecord, TaskStatus
from graph_runtime.validation import ExecutionPlan, PlannedNode
from nodes.values import thumbnail_markdown

log = logging.getLogger(__name__)
UNFINISHED = [
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
    DagsterRunStatus.CANCELING,
]

# (execution, run succeeded, Dagster's own error) -> None: ends the task (the runner's).
Conclude = Callable[[TaskExecution, bool, str | None], None]
# (context, plan, record of the new task) -> the live execution of an adopted run.
Adopt = Callable[[OpExecutionContext, ExecutionPlan, TaskRecord], TaskExecution]


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
    recorded: RecordedTake, record: TaskRecord, locate: Callable[[str], str]
) -> Iterator[Any]:
    """One materialization per take output, keyed ``takeflow/<project>/<shot path>/<output>``."""
    take = recorded.take
    chapter, scene, shot = record.shot.split("/")
    previews = {f.name: thumbnail_markdown(f) for f in recorded.files}
    for name, stored in take.outputs.items():
        preview = previews.get(name)
        extra = {"preview": MetadataValue.md(preview)} if preview else {}
        yield AssetMaterialization(
            asset_key=AssetKey(
                ["takeflow", take.project_id, chapter, scene, shot, name.replace(".", "__")]
            ),
            description=f"{take.take_id} of {record.shot}",
            metadata={
                "take_id": take.take_id,
                "take_number": take.number,
                "path": MetadataValue.path(locate(stored.path)),
                "task_id": record.task_id,
                "content_type": stored.content_type,
                "size": stored.size,
                "seed": MetadataValue.json(recorded.seeds),
                **extra,
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
    ) -> None:
        self.instance = instance
        self.executor = executor
        self.recorder = recorder
        self._conclude = conclude
        self._adopt = adopt
        self.compiler = JobCompiler(ResourceDefinition.hardcoded_resource(self))
        self._live: dict[str, TaskExecution] = {}  # by Dagster run id
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
        re-execution) are adopted as new tasks on first sight."""
        with self._lock:
            execution = self._live.get(context.run_id)
            if execution is None:
                execution = self._adopted(context)
                self._live[context.run_id] = execution
            return execution

    def _adopted(self, context: OpExecutionContext) -> TaskExecution:
        plan = self.compiler.plan_for_job(context.job_name)
        if plan is None:
            raise RuntimeError(
                f"job {context.job_name!r} is not a Takeflow graph this code location knows"
            )
        tags = dict(context.run.tags)
        task_id = tags.get("takeflow/task_id") or f"task_{context.run_id.replace('-', '')[:16]}"
        record = TaskRecord(
            task_id=task_id,
            graph=plan.graph.model_dump(mode="json"),
            project_id=tags.get("takeflow/project") or plan.graph.context.project,
            shot=tags.get("takeflow/shot") or plan.graph.context.shot,
            user=tags.get("takeflow/user") or DEFAULT_USER,
            status=TaskStatus.RUNNING,
            started_at=time.time(),
            node_states={n.node_id: "queued" for n in plan.nodes},
            dagster_run_id=context.run_id,
        )
        return self._adopt(context, plan, record)

    def _finish_adopted(self, execution: TaskExecution, success: bool) -> None:
        with self._lock:
            self._live.pop(execution.run_id, None)
        self._conclude(execution, success, None)

    def run_node(
        self, context: OpExecutionContext, node: PlannedNode, values: dict[str, Any]
    ) -> Mapping[str, Any]:
        execution = self._execution_for(context)
        try:
            outputs = self.executor.run(execution, node, values)
        except Exception:
            if execution.adopted:
                self._finish_adopted(execution, False)
            raise
        if execution.adopted and execution.project is None and node is execution.plan.nodes[-1]:
            self._finish_adopted(execution, True)
        return outputs

    def record_take(
        self, context: OpExecutionContext, terminal_outputs: dict[str, Mapping[str, Any]]
    ) -> Iterator[Any]:
        execution = self._execution_for(context)
        try:
            recorded = self.recorder.record(
                execution, terminal_outputs, context.run.tags.get("dagster/schedule_name")
            )
        except Exception:
            if execution.adopted:
                self._finish_adopted(execution, False)
            raise
        assert execution.project is not None
        yield from take_materializations(recorded, execution.record, execution.project.location)
        if execution.adopted:
            self._finish_adopted(execution, True)

    # -- runs whose process stopped -----------------------------------------------------

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
                self.instance.report_run_failed(run, message)
                ended.append(run.run_id)
        return ended
