"""Distributed mode: runs Dagster starts itself (UI launches and re-executions, schedule ticks)
become queue jobs like any other task, instead of running in the launching process.

``dagster.yaml`` of a distributed home names ``QueueRunLauncher``. Its ``launch_run`` stores a
queued task for the existing Dagster run (task row, ``task.submitted`` and the procrastinate job
in one transaction); a worker (``DistributedRunner.run_task``) claims it, finds the run's job in
the code location's saved canvases and executes that run in process against the same
PostgreSQL instance: take, commit and events as for a task submitted through the API.
``check_run_worker_health`` reads the task's lease; ``terminate`` cancels the task.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from dagster import Field, StringSource
from dagster._core.launcher import (
    CheckRunHealthResult,
    LaunchRunContext,
    RunLauncher,
    WorkerStatus,
)
from dagster._core.storage.dagster_run import DagsterRun
from dagster._serdes import ConfigurableClass, ConfigurableClassData

from dagster_defs.queue import CPU_QUEUE, JobQueue
from dagster_defs.run_plans import (
    PARENT_METADATA,
    PARENT_TAG,
    TASK_TAG,
    new_task_of_run,
)
from graph_runtime.events import TaskCancelled, TaskSubmitted
from graph_runtime.tasks import DEFAULT_USER, TaskRecord, TaskStatus
from stores.postgres.state import PostgresState
from stores.postgres.turns import QueueTurns

LAUNCHED = "launched_run"  # record metadata key: the Dagster run this task executes
QUEUE_TAG = "takeflow/queue"  # set on every saved canvas job (dagster_defs.definitions)


class QueueRunLauncher(RunLauncher, ConfigurableClass):
    """Enqueues runs on Takeflow's job queue (PostgreSQL) for ``takeflow worker`` processes."""

    def __init__(self, database_url: str, inst_data: ConfigurableClassData | None = None) -> None:
        self.database_url = database_url
        self._inst_data = inst_data
        self._state: PostgresState | None = None
        self._jobs: JobQueue | None = None
        self._lock = threading.Lock()
        super().__init__()

    @property
    def inst_data(self) -> ConfigurableClassData | None:
        return self._inst_data

    @classmethod
    def config_type(cls) -> dict[str, Any]:
        return {"database_url": Field(StringSource)}

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]
    ) -> QueueRunLauncher:
        return cls(database_url=config_value["database_url"], inst_data=inst_data)

    def _open(self) -> tuple[PostgresState, JobQueue]:
        """Connections only once a run is launched (every process loads the launcher)."""
        with self._lock:
            if self._state is None or self._jobs is None:
                self._state = PostgresState(self.database_url, pool_size=2)
                self._jobs = JobQueue(self.database_url)
            return self._state, self._jobs

    def _nodes(self, run: DagsterRun) -> list[str]:
        snapshot_id = run.execution_plan_snapshot_id
        if snapshot_id is None:
            return []
        snapshot = self._instance.get_execution_plan_snapshot(snapshot_id)
        return [k for k in snapshot.step_keys_to_execute if k != "takeflow_takes"]

    def launch_run(self, context: LaunchRunContext) -> None:
        run = context.dagster_run
        state, jobs = self._open()
        tags = run.tags
        task_id, parent_id, _ = new_task_of_run(run, state.get)
        queue = tags.get(QUEUE_TAG) or CPU_QUEUE
        record = TaskRecord(
            task_id=task_id,
            graph={},  # filled in by the worker from the code location's job
            project_id=tags.get("takeflow/project"),
            shot=tags.get("takeflow/shot") or "main/main/main",
            user=tags.get("takeflow/user") or DEFAULT_USER,
            dagster_run_id=run.run_id,
            metadata={
                LAUNCHED: run.run_id,
                "job_name": run.job_name,
                **({PARENT_METADATA: parent_id} if parent_id else {}),
            },
        )
        submitted = TaskSubmitted(
            shot_id=record.shot,
            nodes=self._nodes(run),
            estimated_time=0.0,
            batch_id=None,
            batch_size=None,
        )
        with state.transaction() as conn:
            state.save(record, queue)
            QueueTurns(state).enqueue(task_id, queue)
            state.append("task.submitted", task_id, record.project_id, submitted.to_data())
            jobs.defer(conn, task_id, queue, 0)
        # tags describe the run they are on: a re-execution's are its parent's until here
        self._instance.add_run_tags(
            run.run_id, {TASK_TAG: task_id, **({PARENT_TAG: parent_id} if parent_id else {})}
        )
        self._instance.report_engine_event(
            f"Queued as Takeflow task {task_id} on queue {queue!r}", run
        )

    def _task(self, run_id: str) -> TaskRecord | None:
        state, _ = self._open()
        with state.pool.connection() as conn:
            row = conn.execute(
                "SELECT task_id FROM takeflow_tasks WHERE record->>'dagster_run_id' = %s "
                "ORDER BY created_at DESC LIMIT 1",
                (run_id,),
            ).fetchone()
        return state.get(row[0]) if row else None

    def terminate(self, run_id: str) -> bool:
        """Cancel the run's task: at once while queued, at its next progress point once
        running (the owning worker reads the flag with its heartbeat)."""
        record = self._task(run_id)
        if record is None:
            return False
        state, _ = self._open()
        if record.status == TaskStatus.QUEUED:
            with state.transaction():
                ended = state.transition(
                    record.task_id, (TaskStatus.QUEUED,), status=TaskStatus.CANCELLED
                )
                if ended is not None:
                    state.append(
                        "task.cancelled", ended.task_id, ended.project_id, TaskCancelled().to_data()
                    )
            if ended is not None:
                run = self._instance.get_run_by_id(run_id)
                if run is not None:
                    self._instance.report_run_canceled(run)
                return True
        return state.request_cancel(record.task_id)

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        """From the task row: queued or running under a live lease is RUNNING; a running task
        whose lease ran out is FAILED (its worker stopped; the sweeper ends it)."""
        record = self._task(run.run_id)
        if record is None:
            return CheckRunHealthResult(WorkerStatus.NOT_FOUND, "no Takeflow task for this run")
        if record.status == TaskStatus.COMPLETED:
            return CheckRunHealthResult(WorkerStatus.SUCCESS)
        if record.status in (TaskStatus.FAILED, TaskStatus.CANCELLED):
            return CheckRunHealthResult(WorkerStatus.FAILED, f"task {record.status.value}")
        if record.status == TaskStatus.QUEUED:
            return CheckRunHealthResult(WorkerStatus.RUNNING, "queued", run_worker_id=None)
        state, _ = self._open()
        with state.pool.connection() as conn:
            row = conn.execute(
                "SELECT owner, lease_until > now() FROM takeflow_tasks WHERE task_id = %s",
                (record.task_id,),
            ).fetchone()
        if row is None or not row[1]:
            return CheckRunHealthResult(WorkerStatus.FAILED, "the worker's lease expired")
        return CheckRunHealthResult(WorkerStatus.RUNNING, run_worker_id=row[0])

    def dispose(self) -> None:
        if self._jobs is not None:
            self._jobs.close()
        if self._state is not None:
            self._state.close()
