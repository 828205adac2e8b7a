"""How a task ends once its run is over: completed (its take committed, its result on the
record), cancelled, or failed with the error that stopped it."""

from __future__ import annotations

import time

from dagster_defs.commits import ProjectHistories
from dagster_defs.lifecycle import TaskLifecycle
from dagster_defs.node_executor import TaskExecution
from dagster_defs.observability import TaskTelemetry
from graph_runtime.errors import TaskCancelledError
from graph_runtime.events import TaskCancelled, TaskCompleted, TaskFailed
from graph_runtime.projects import one_line
from graph_runtime.takes import ACTIVE_TAKE_FILE, shot_takes_dir
from graph_runtime.tasks import TaskResult, TaskStatus


class TaskCompletion:
    """Ends tasks through the lifecycle; commits takes through the project's commit queue."""

    def __init__(
        self, lifecycle: TaskLifecycle, histories: ProjectHistories, telemetry: TaskTelemetry
    ) -> None:
        self.lifecycle = lifecycle
        self.histories = histories
        self.telemetry = telemetry

    def conclude(self, execution: TaskExecution, success: bool, dagster_error: str | None) -> None:
        """End a task by how its run went: completed (with its commit), cancelled or failed."""
        record, signal = execution.record, execution.signal
        elapsed = time.perf_counter() - execution.started
        states, progress = execution.snapshot()
        trace_id = record.trace_id
        if success:
            result = self._result(execution, elapsed)
            finished = self.lifecycle.finish(
                record.task_id,
                TaskStatus.COMPLETED,
                TaskCompleted(
                    execution_time=result.execution_time or 0.0,
                    takes=result.takes,
                    outputs=result.outputs,
                    take=result.take,
                    commit=result.commit,
                    timings_ms=result.timings_ms,
                    trace_id=trace_id,
                ),
                node_states=states,
                progress=1.0,
                result=result,
            )
            if finished is not None:
                template_s = sum(execution.timings_ms.values()) / 1000
                self.telemetry.metrics.overhead_seconds.observe(max(0.0, elapsed - template_s))
        elif signal.error is None and (
            signal.cancel.is_set() or isinstance(execution.error, TaskCancelledError)
        ):
            node_id = execution.error.details.get("node_id") if execution.error else None
            self.lifecycle.finish(
                record.task_id,
                TaskStatus.CANCELLED,
                TaskCancelled(node_id=node_id, trace_id=trace_id),
                node_states=states,
                progress=progress,
            )
        else:
            error = (
                execution.error.to_dict()
                if execution.error
                else {"code": "internal_error", "message": dagster_error or "the run failed"}
            )
            self.lifecycle.finish(
                record.task_id,
                TaskStatus.FAILED,
                TaskFailed.of(error, trace_id),
                node_states=states,
                progress=progress,
                error=error,
            )

    def _result(self, execution: TaskExecution, elapsed: float) -> TaskResult:
        take, project, record = execution.take, execution.project, execution.record
        commit: str | None = None
        if take is not None and project is not None:
            message = (
                f"{take.take_id} of {take.shot} ({one_line(record.graph.get('name', 'graph'))})\n\n"
                f"Takeflow-Task: {record.task_id}\n"
            )
            paths = [take.directory]
            if take.active:  # the shot's first take wrote the shot's active.json
                paths.append(f"{shot_takes_dir(take.shot)}/{ACTIVE_TAKE_FILE}")
            commit = self.histories.commit(
                project, paths, message, self.telemetry.context(record.task_id)
            )
        return TaskResult(
            outputs={k: v.to_dict() for k, v in take.outputs.items()} if take else {},
            takes=[take.take_id] if take else [],
            take=take.to_dict() if take else None,
            commit=commit,
            execution_time=round(elapsed, 4),
            timings_ms=dict(execution.timings_ms),
        )
