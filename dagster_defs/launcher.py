"""Distributed mode: runs Dagster starts itself (UI launches and re-executions, schedule ticks)
become queue jobs like any other task, instead of running in the launching process.

``dagster.yaml`` of a distributed home names ``QueueRunLauncher``. Its ``launch_run`` queues a
task for the existing Dagster run through the same intake and lifecycle verbs as every other door
(queue limits under the intake lock, task row, ``task.submitted`` and the procrastinate job in one
transaction; a refusal fails the launch with ``queue_full``); a worker
(``QueueWorker.run_task``) claims it, finds the run's job in
the code location's saved canvases and executes that run in process against the same
PostgreSQL instance: take, commit and events as for a task submitted through the API.
``check_run_worker_health`` reads the task's lease; ``terminate`` cancels the task (the
lifecycle's ``cancel_queued`` while it waits, the owner's cancel flag once it runs).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
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

from dagster_defs.distributed import JobQueuePool
from dagster_defs.intake import QueueLimits, TaskIntake
from dagster_defs.lifecycle import TaskLifecycle
from dagster_defs.observability import RunnerMetrics, TaskTelemetry
from dagster_defs.queue import CPU_QUEUE
from dagster_defs.run_plans import (
    LAUNCHED,
    PARENT_METADATA,
    PARENT_TAG,
    TASK_TAG,
    new_task_of_run,
)
from dagster_defs.settings import ClusterSettings
from graph_runtime.events import EventBus
from graph_runtime.scheduling import ThroughputEstimate
from graph_runtime.tasks import DEFAULT_USER, TaskRecord, TaskStatus
from stores.home import TakeflowHome
from stores.postgres.cluster import ClusterStore
from stores.postgres.jobs import JobQueue
from stores.postgres.state import PostgresState

QUEUE_TAG = "takeflow/queue"  # set on every saved canvas job (dagster_defs.definitions)


class QueueRunLauncher(RunLauncher, ConfigurableClass):
    """Enqueues runs on Takeflow's job queue (PostgreSQL) for ``takeflow worker`` processes."""

    def __init__(self, database_url: str, inst_data: ConfigurableClassData | None = None) -> None:
        self.database_url = database_url
        self._inst_data = inst_data
        self._parts: _LaunchParts | None = None
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

    def _open(self) -> _LaunchParts:
        """Connections only once a run is launched (every process loads the launcher)."""
        with self._lock:
            if self._parts is None:
                home = TakeflowHome(Path(self._instance.root_directory).parent)
                self._parts = _LaunchParts.open(self.database_url, home)
            return self._parts

    def _nodes(self, run: DagsterRun) -> list[str]:
        snapshot_id = run.execution_plan_snapshot_id
        if snapshot_id is None:
            return []
        snapshot = self._instance.get_execution_plan_snapshot(snapshot_id)
        return [k for k in snapshot.step_keys_to_execute if k != "takeflow_takes"]

    def launch_run(self, context: LaunchRunContext) -> None:
        """Queue a task for the run (``QueueFullError`` over a queue limit: nothing stored, the
        launch fails with that message)."""
        run = context.dagster_run
        parts = self._open()
        tags = run.tags
        task_id, parent_id, _ = new_task_of_run(run, parts.state.get)
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
        parts.intake.queue_run(
            record, self._nodes(run), lambda: parts.pool.put_job(task_id, queue, 0)
        )
        # tags describe the run they are on: a re-execution's are its parent's until here
        self._instance.add_run_tags(
            run.run_id, {TASK_TAG: task_id, **({PARENT_TAG: parent_id} if parent_id else {})}
        )
        self._instance.report_engine_event(
            f"Queued as Takeflow task {task_id} on queue {queue!r}", run
        )

    def terminate(self, run_id: str) -> bool:
        """Cancel the run's task: at once while queued, at its next progress point once
        running (the owning worker reads the flag with its heartbeat)."""
        parts = self._open()
        record = parts.cluster.task_of_run(run_id)
        if record is None:
            return False
        if (
            record.status == TaskStatus.QUEUED
            and parts.lifecycle.cancel_queued(record.task_id) is not None
        ):
            run = self._instance.get_run_by_id(run_id)
            if run is not None:
                self._instance.report_run_canceled(run)
            return True
        return parts.state.request_cancel(record.task_id)

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        """From the task row: queued or running under a live lease is RUNNING; a running task
        whose lease ran out is FAILED (its worker stopped; the sweeper ends it)."""
        parts = self._open()
        record = parts.cluster.task_of_run(run.run_id)
        if record is None:
            return CheckRunHealthResult(WorkerStatus.NOT_FOUND, "no Takeflow task for this run")
        if record.status == TaskStatus.COMPLETED:
            return CheckRunHealthResult(WorkerStatus.SUCCESS)
        if record.status in (TaskStatus.FAILED, TaskStatus.CANCELLED):
            return CheckRunHealthResult(WorkerStatus.FAILED, f"task {record.status.value}")
        if record.status == TaskStatus.QUEUED:
            return CheckRunHealthResult(WorkerStatus.RUNNING, "queued", run_worker_id=None)
        holder = parts.cluster.lease_holder(record.task_id)
        if holder is None:
            return CheckRunHealthResult(WorkerStatus.FAILED, "the worker's lease expired")
        return CheckRunHealthResult(WorkerStatus.RUNNING, run_worker_id=holder)

    def dispose(self) -> None:
        if self._parts is not None:
            self._parts.close()


@dataclass
class _LaunchParts:
    """The intake and lifecycle of a launching process (the Dagster webserver or daemon): the
    same verbs and limits as the API's runner, over the shared database."""

    state: PostgresState
    jobs: JobQueue
    pool: JobQueuePool
    lifecycle: TaskLifecycle
    intake: TaskIntake
    cluster: ClusterStore

    @classmethod
    def open(cls, database_url: str, home: TakeflowHome) -> _LaunchParts:
        from stores.redis_fanout import RedisPublisher

        config = home.config()
        settings = ClusterSettings.resolve(config)
        state = PostgresState(database_url, pool_size=2)
        jobs = JobQueue(database_url)
        pool = JobQueuePool(state, jobs)
        cluster = ClusterStore(state)
        bus = EventBus(state)
        if settings is not None and settings.redis_url:
            bus.add_sink(RedisPublisher(settings.redis_url, state))
        lifecycle = TaskLifecycle(state, bus, TaskTelemetry(RunnerMetrics()), state.transaction)
        intake = TaskIntake(
            pool, lifecycle, None, ThroughputEstimate(0), lambda: cluster.count("running"),
            QueueLimits.from_config(config), cluster.intake,
        )  # fmt: skip
        return cls(state, jobs, pool, lifecycle, intake, cluster)

    def close(self) -> None:
        self.jobs.close()
        self.state.close()
