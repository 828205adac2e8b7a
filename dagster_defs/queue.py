"""Dispatch in distributed mode: a procrastinate job queue in the same PostgreSQL database.

Why procrastinate (see docs/deploy.md for the measured overhead): the job row is inserted on the
connection that also inserts the task row and its ``task.submitted`` event, so a task (and a
batch) is queued all-or-none with no second system to keep consistent; workers wake by
LISTEN/NOTIFY and claim with ``FOR UPDATE SKIP LOCKED``; queues and priorities are native.

A job names the task it was deferred for, but it is a token of its queue: the worker runs the
queue's next task in fair turns between users (``stores.postgres.turns``). Whether a task still
runs, who owns it and its lease live in the task row (``stores.postgres.state``), which also
fences a worker that lost its lease. This module routes tasks to queues; the job queue itself
(procrastinate and its SQL) is ``stores.postgres.jobs``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from graph_runtime.validation import ExecutionPlan

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
