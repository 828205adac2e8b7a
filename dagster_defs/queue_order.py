"""Reordering waiting tasks: a user moves one of their queued tasks up or down their own line.

The move is made in the queue (``TaskQueue.move``: only among the same user's waiting tasks of
the same priority, so it never jumps another user's turn) and kept in the task store: each moved
task's record gets ``metadata["queue_order"]`` (a sort key, the creation time by default), which
``TaskRunner.recover`` follows when it queues the waiting tasks again after a restart. The
distributed queue keeps the order in its task rows instead (``stores.postgres.turns``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from graph_runtime.errors import TakeflowError
from graph_runtime.tasks import TaskRecord, TaskStatus, TaskStore

ORDER_KEY = "queue_order"


class TaskNotPendingError(TakeflowError):
    """Only a task still waiting in the queue can be moved."""

    code = "task_not_pending"
    http_status = 409


def queue_order(record: TaskRecord) -> float:
    """Where a waiting task stands among its user's: its stored order, else its creation time."""
    value = record.metadata.get(ORDER_KEY)
    return float(value) if isinstance(value, int | float) else record.created_at


def in_queue_order(records: Sequence[TaskRecord]) -> list[TaskRecord]:
    """Waiting tasks in the order they were queued, moves included (for re-queueing)."""
    return sorted(records, key=lambda r: (queue_order(r), r.created_at, r.task_id))


def not_pending(record: TaskRecord) -> TaskNotPendingError:
    return TaskNotPendingError(
        f"task '{record.task_id}' is {record.status.value}: only a queued task can be moved",
        task_id=record.task_id,
        status=record.status.value,
    )


def persist_order(store: TaskStore, band: Sequence[str]) -> None:
    """Store ``band`` (task ids, in their new order) as the tasks' ``queue_order``: the same
    sort keys they had, handed out in the new order. A task that left the queue meanwhile is
    skipped (``transition`` only changes a queued record)."""
    records = [r for r in (store.get(t) for t in band) if r is not None]
    keys = sorted(queue_order(r) for r in records)
    by_id = {r.task_id: r for r in records}
    for task_id, key in zip((t for t in band if t in by_id), keys, strict=True):
        record = by_id[task_id]
        if queue_order(record) == key:
            continue
        metadata: dict[str, Any] = {**record.metadata, ORDER_KEY: key}
        store.transition(task_id, (TaskStatus.QUEUED,), metadata=metadata)
