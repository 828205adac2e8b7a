"""Dispatch in distributed mode: a procrastinate job queue in the same PostgreSQL database.

Why procrastinate (see docs/deploy.md for the measured overhead): the job row is inserted on the
connection that also inserts the task row and its ``task.submitted`` event, so a task (and a
batch) is queued all-or-none with no second system to keep consistent; workers wake by
LISTEN/NOTIFY and claim with ``FOR UPDATE SKIP LOCKED``; queues and priorities are native.

A job names the task it was deferred for, but it is a token of its queue: the worker runs the
queue's next task in fair turns between users (``stores.postgres.turns``). Whether a task still
runs, who owns it and its lease live in the task row (``stores.postgres.state``), which also
fences a worker that lost its lease.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from graph_runtime.validation import ExecutionPlan

if TYPE_CHECKING:
    import procrastinate

JOB_NAME = "takeflow.run_task"
CPU_QUEUE = "cpu"
GPU_QUEUE = "gpu"
# GPU queues by memory: a task needing V GB goes to the smallest tier >= V; a worker with N GB
# serves every tier <= N (H200: 141 GB). Beyond the largest tier: ``gpu-<ceil V>gb``.
VRAM_TIERS_GB = (4, 8, 12, 16, 24, 32, 48, 80, 96, 141)


def vram_tier(need_gb: float) -> int:
    for tier in VRAM_TIERS_GB:
        if need_gb <= tier:
            return tier
    return math.ceil(need_gb)


def queue_for(plan: ExecutionPlan) -> str:
    """Route by resource hints: ``gpu-<tier>gb`` for a task with GPU nodes (the tier that fits
    the largest ``vram_gb`` among them), ``cpu`` otherwise. A worker serves the queues it is
    started with (``worker_queues``)."""
    needs = [n.template.resources.vram_gb for n in plan.nodes if n.template.resources.gpu]
    if not needs:
        return CPU_QUEUE
    return f"{GPU_QUEUE}-{vram_tier(max(needs))}gb"


def model_for(plan: ExecutionPlan) -> str | None:
    """The model the task's first GPU node names (workers prefer tasks of models they hold)."""
    for node in plan.nodes:
        model = node.literals.get("model")
        if node.template.resources.gpu and isinstance(model, str) and model:
            return model
    return None


def worker_queues(specs: Sequence[str], vram_gb: float | None) -> list[str]:
    """The queues a worker started with ``--queues specs`` serves: ``gpu`` is every GPU tier
    that fits in ``vram_gb`` (all of them when unknown); other names are taken as they are."""
    tiers = [t for t in VRAM_TIERS_GB if vram_gb is None or t <= vram_gb]
    out: list[str] = []
    for spec in specs:
        names = [f"{GPU_QUEUE}-{t}gb" for t in tiers] if spec == GPU_QUEUE else [spec]
        out += [n for n in names if n not in out]
    return out


def detect_vram_gb() -> float | None:
    """This process's first CUDA device's memory in GB (None without CUDA or torch)."""
    try:
        import torch

        if not torch.cuda.is_available():
            return None
        return float(torch.cuda.get_device_properties(0).total_memory) / 2**30
    except Exception:  # no torch, a broken driver: memory unknown
        return None


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
