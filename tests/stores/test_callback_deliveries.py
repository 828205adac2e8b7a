"""The callback delivery table beside the task state, one contract for SQLite and PostgreSQL:
due once its task ended, leased to one sender, counted, durable."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from graph_runtime.tasks import TaskRecord, TaskStatus
from stores.callbacks import DELIVERED, FAILED, PENDING, CallbackDeliveries, open_deliveries
from stores.sqlite_state import SqliteState

ENDED = ("completed", "failed", "cancelled")


@pytest.fixture(params=["sqlite", "postgres"])
def state(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    if request.param == "sqlite":
        opened: Any = SqliteState(tmp_path / "state.db")
    else:
        from stores.postgres.state import PostgresState

        opened = PostgresState(request.getfixturevalue("pg_url"))
    yield opened
    opened.close()


def test_a_delivery_is_due_once_its_task_ended_and_is_leased_once(state: Any) -> None:
    deliveries = open_deliveries(state)
    state.save(TaskRecord("t1", {}, "film", "a/b/c", "ana", status=TaskStatus.RUNNING))
    added = deliveries.add("t1", "http://127.0.0.1:9/hook", "film")
    assert added.delivery_id.startswith("dlv_") and added.state == PENDING
    now = time.time() + 1
    assert deliveries.due(now, ENDED) == []  # still running
    state.update("t1", status=TaskStatus.COMPLETED)
    (due,) = deliveries.due(now, ENDED)
    assert due.delivery_id == added.delivery_id and due.attempts == 0
    assert deliveries.claim(due.delivery_id, now, now + 30)
    assert not deliveries.claim(due.delivery_id, now, now + 30)  # leased: no second sender
    assert deliveries.due(now, ENDED) == []
    deliveries.finish(
        due.delivery_id, delivered=False, status=500, error="HTTP 500", retry_at=now + 5
    )
    deliveries.close()
    again: CallbackDeliveries = open_deliveries(state)  # a restart
    row = again.get("t1")
    assert row is not None and (row.state, row.attempts, row.last_status) == (PENDING, 1, 500)
    assert again.due(now, ENDED) == [] and len(again.due(now + 5, ENDED)) == 1
    assert again.claim(row.delivery_id, now + 5, now + 35)
    again.finish(row.delivery_id, delivered=True, status=200, error=None, retry_at=None)
    done = again.get("t1")
    assert done is not None and (done.state, done.attempts, done.last_error) == (DELIVERED, 2, None)
    assert done.delivered_at is not None and again.due(now + 100, ENDED) == []
    again.close()


def test_a_delivery_given_up_or_forgotten_is_not_due(state: Any) -> None:
    deliveries = open_deliveries(state)
    for task_id in ("gave-up", "refused"):
        state.save(TaskRecord(task_id, {}, None, "a/b/c", "ana", status=TaskStatus.FAILED))
        deliveries.add(task_id, "http://127.0.0.1:9/hook", None)
    now = time.time() + 1
    row = deliveries.get("gave-up")
    assert row is not None and deliveries.claim(row.delivery_id, now, now + 30)
    deliveries.finish(row.delivery_id, delivered=False, status=None, error="refused", retry_at=None)
    gave_up = deliveries.get("gave-up")
    assert gave_up is not None and gave_up.state == FAILED and gave_up.last_error == "refused"
    deliveries.forget("refused")  # its submit was refused
    assert deliveries.get("refused") is None
    assert deliveries.due(now + 100, ENDED) == []
    deliveries.close()
