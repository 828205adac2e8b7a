"""One contract for the task store, run against SQLite, PostgreSQL and the in-memory twin."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from graph_runtime.errors import TaskNotFoundError
from graph_runtime.tasks import MemoryTaskStore, TaskRecord, TaskStatus, TaskStore
from stores.sqlite_state import SqliteState


@pytest.fixture(params=["sqlite", "memory", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TaskStore]:
    if request.param == "memory":
        yield MemoryTaskStore()
    elif request.param == "sqlite":
        yield SqliteState(tmp_path / "state.db")
    else:
        from stores.postgres.state import PostgresState

        state = PostgresState(request.getfixturevalue("pg_url"))
        yield state
        state.close()


def record(task_id: str, **changes: object) -> TaskRecord:
    base = {"graph": {"name": "g"}, "project_id": "p", "shot": "ch01/sc01/sh010", "user": "u"}
    return TaskRecord(task_id=task_id, **{**base, **changes})  # type: ignore[arg-type]


def test_saved_tasks_read_back_and_update(store: TaskStore) -> None:
    store.save(record("t1", batch_id="b", node_states={"n": "queued"}))
    store.save(record("t2"))
    got = store.get("t1")
    assert got is not None and got.graph == {"name": "g"} and got.node_states == {"n": "queued"}
    updated = store.update("t1", status=TaskStatus.RUNNING, progress=0.5)
    assert updated.status == TaskStatus.RUNNING and updated.progress == 0.5
    assert store.get("t1") == updated
    assert [r.task_id for r in store.list(status=TaskStatus.RUNNING)] == ["t1"]
    assert [r.task_id for r in store.list(batch_id="b")] == ["t1"]
    assert {r.task_id for r in store.list()} == {"t1", "t2"}
    assert store.get("nope") is None


def test_update_of_an_unknown_task_is_refused(store: TaskStore) -> None:
    with pytest.raises(TaskNotFoundError, match="no task 'nope'"):
        store.update("nope", progress=1.0)
