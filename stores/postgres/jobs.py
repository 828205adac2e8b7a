"""The distributed job queue: procrastinate in the same PostgreSQL database as the task rows.

A job is inserted on the connection of the submit transaction (task row, ``task.submitted`` and
job commit together). Routing a task to a queue is ``dagster_defs.queue``'s.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import procrastinate

JOB_NAME = "takeflow.run_task"


def make_app(
    database_url: str, run_task: Callable[[str, str, int], Any] | None = None
) -> procrastinate.App:
    """The queue app. Producers (API replicas) pass no ``run_task``; workers pass theirs.
    (procrastinate is imported here: the embedded mode imports ``queue_for`` only.)"""
    import procrastinate
    from procrastinate import PsycopgConnector

    app = procrastinate.App(connector=PsycopgConnector(conninfo=database_url))

    def job(context: Any, task_id: str) -> None:
        if run_task is None:
            raise RuntimeError("this process only enqueues; run `takeflow worker`")
        run_task(task_id, context.job.queue, context.job.id)

    app.task(name=JOB_NAME, pass_context=True)(job)
    return app


class JobQueue:
    """Enqueues task jobs on a caller's connection (inside its transaction)."""

    def __init__(self, database_url: str) -> None:
        self.app = make_app(database_url)
        self._opened = False

    def open(self) -> None:
        if not self._opened:
            self.app.open()
            self._opened = True

    def ensure_schema(self, conn: Any) -> None:
        """Apply procrastinate's schema once per database (guarded by an advisory lock)."""
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (0x7A6B_F10F,))
            exists = conn.execute("SELECT to_regclass('procrastinate_jobs')").fetchone()
            if exists is None or exists[0] is None:
                conn.execute(self.app.schema_manager.get_schema())

    def defer(self, conn: Any, task_id: str, queue: str, priority: int) -> int:
        """Insert the job for ``task_id`` on ``conn`` (commits with the caller's transaction)."""
        self.open()
        job = self.app.tasks[JOB_NAME].configure(queue=queue, priority=priority, connection=conn)
        return int(job.defer(task_id=task_id))

    def close(self) -> None:
        if self._opened:
            self.app.close()
            self._opened = False

    @staticmethod
    def stalled_jobs(conn: Any, stale_s: float) -> list[tuple[int, str]]:
        """Jobs taken by a worker that stopped heartbeating: ``(job id, task id)``."""
        rows = conn.execute(
            "SELECT j.id, j.args->>'task_id' FROM procrastinate_jobs j "
            "LEFT JOIN procrastinate_workers w ON w.id = j.worker_id "
            "WHERE j.status = 'doing' AND j.task_name = %s AND (w.id IS NULL OR "
            "w.last_heartbeat < now() - make_interval(secs => %s))",
            (JOB_NAME, stale_s),
        ).fetchall()
        return [(int(r[0]), str(r[1])) for r in rows]

    @staticmethod
    def retire(conn: Any, job_id: int, requeue: bool) -> None:
        """End a stalled job: back to ``todo`` when its task never started, else ``failed``."""
        if requeue:
            conn.execute(
                "SELECT procrastinate_retry_job_v2(%s, now(), NULL, NULL, NULL)", (job_id,)
            )
        else:
            conn.execute("SELECT procrastinate_finish_job_v1(%s, 'failed', FALSE)", (job_id,))
