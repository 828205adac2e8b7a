"""The lease sweeper of the distributed mode: tasks whose worker stopped renewing its lease
(killed, paused, cut off) end ``interrupted`` (their Dagster runs failed), and the queue jobs of
dead workers are retired or re-queued. Any number of processes may sweep."""

from __future__ import annotations

import logging
import threading

from dagster import DagsterInstance

from dagster_defs.distributed import DistributedRunner
from graph_runtime.events import TaskFailed

log = logging.getLogger(__name__)


class Sweeper:
    """Fails tasks whose worker stopped renewing its lease (killed, paused, cut off): epoch + 1
    (the old owner is fenced), ``task.failed`` with code ``interrupted``, its Dagster run marked
    failed, and queue jobs of dead workers retired (re-queued if their task never started).
    Any number of processes may sweep: each step is conditional under a row lock."""

    def __init__(self, runner: DistributedRunner, instance: DagsterInstance) -> None:
        self.runner = runner
        self.instance = instance

    def sweep(self) -> int:
        runner, failed = self.runner, 0
        error = {"code": "interrupted", "message": "the worker running this task stopped"}
        for record in runner.pg.expired():
            with runner.pg.transaction():
                ended = runner.pg.expire(record.task_id, error)
                if ended is not None:
                    runner.bus.publish(
                        ended.task_id, ended.project_id, TaskFailed.of(error, ended.trace_id)
                    )
            if ended is None:
                continue  # renewed meanwhile, or another sweeper was first
            failed += 1
            runner.backend.end_runs(ended, "the Takeflow worker running it stopped")
        with runner.pg.transaction() as conn:
            for job_id, _task_id in runner.jobs.stalled_jobs(conn, 3 * runner.settings.lease_s):
                # a job is a token of its queue: re-queued unless it claimed a task (that
                # task's lease ends it above)
                runner.jobs.retire(conn, job_id, requeue=not runner.turns.consumed(job_id))
        return failed

    def run_forever(self, stop: threading.Event) -> None:
        while not stop.wait(self.runner.settings.sweep_s):
            try:
                self.sweep()
            except Exception:  # the database may be briefly away: try again next round
                log.exception("sweep failed")
