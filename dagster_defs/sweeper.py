"""The lease sweeper of the distributed mode: tasks whose worker stopped renewing its lease
(killed, paused, cut off) end ``interrupted`` (their Dagster runs failed), and the queue jobs of
dead workers are retired or re-queued. Any number of processes may sweep."""

from __future__ import annotations

import logging
import threading

from dagster_defs.runner import TaskRunner
from dagster_defs.settings import ClusterSettings
from stores.postgres.jobs import JobQueue
from stores.postgres.state import PostgresState
from stores.postgres.turns import QueueTurns

log = logging.getLogger(__name__)


class Sweeper:
    """Fails tasks whose worker stopped renewing its lease (killed, paused, cut off): epoch + 1
    (the old owner is fenced), ``task.failed`` with code ``interrupted`` through the lifecycle's
    ``expire`` verb, its Dagster run marked failed, and queue jobs of dead workers retired
    (re-queued if their task never started). Each step is conditional under a row lock."""

    def __init__(
        self, runner: TaskRunner, state: PostgresState, jobs: JobQueue, settings: ClusterSettings
    ) -> None:
        self.runner = runner
        self.state = state
        self.jobs = jobs
        self.settings = settings
        self.turns = QueueTurns(state)

    def sweep(self) -> int:
        """One round; how many tasks it failed."""
        failed = self.runner.end_expired(self.state.expired(), self.state.expire)
        with self.state.transaction() as conn:
            for job_id, _task_id in self.jobs.stalled_jobs(conn, 3 * self.settings.lease_s):
                # a job is a token of its queue: re-queued unless it claimed a task (that
                # task's lease ends it above)
                self.jobs.retire(conn, job_id, requeue=not self.turns.consumed(job_id))
        return failed

    def run_forever(self, stop: threading.Event) -> None:
        while not stop.wait(self.settings.sweep_s):
            try:
                self.sweep()
            except Exception:  # the database may be briefly away: try again next round
                log.exception("sweep failed")
