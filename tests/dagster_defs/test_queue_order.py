"""The stored queue order of moved tasks (``dagster_defs.queue_order``); the distributed
queue's reorder is tested on a real cluster (tests/distributed/test_reorder_cluster.py)."""

from __future__ import annotations

from typing import Any

from dagster_defs.queue_order import (
    in_queue_order,
    persist_order,
    queue_order,
)
from graph_runtime.tasks import MemoryTaskStore, TaskRecord, TaskStatus


def record(task_id: str, created_at: float, **kw: Any) -> TaskRecord:
    return TaskRecord(task_id, {}, "film", "a/b/c", "ana", created_at=created_at, **kw)


def test_persisted_order_hands_the_same_keys_out_in_the_new_order() -> None:
    store = MemoryTaskStore()
    for n, task_id in enumerate(["a", "b", "c"]):
        store.save(record(task_id, 100.0 + n))
    store.save(record("done", 99.0, status=TaskStatus.COMPLETED))
    persist_order(store, ["c", "a", "b", "done"])
    stored = {t: store.get(t) for t in ("a", "b", "c", "done")}
    assert [queue_order(r) for r in (stored["c"], stored["a"], stored["b"])] == [99.0, 100.0, 101.0]
    queued = [r for r in stored.values() if r is not None and r.status == TaskStatus.QUEUED]
    assert [r.task_id for r in in_queue_order(queued)] == ["c", "a", "b"]
    assert "queue_order" not in stored["done"].metadata  # only a queued task is changed
