"""One contract for the task store, run against SQLite, PostgreSQL and the in-memory twin."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from graph_runtime.errors import TaskNotFoundError
from graph_runtime.tasks import (
    MemoryTaskStore,
    TaskOwner,
    TaskRecord,
    TaskResult,
    TaskStatus,
    TaskStore,
)
from stores.sqlite_state import SqliteState

GRAPH = {"name": "g", "nodes": [{"id": "n", "template": "number"}]}


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


def _record(task_id: str, **kw: object) -> TaskRecord:
    return TaskRecord(task_id, dict(GRAPH), "demo", "a/b/c", "ana", **kw)  # type: ignore[arg-type]


def test_saved_records_read_back_with_result_metadata_and_owner(store: TaskStore) -> None:
    record = _record(
        "t1",
        metadata={"tracking_id": "trk_1"},
        result=TaskResult(outputs={"value": {"path": "x"}}, takes=["take_001"], commit="abc"),
        owner=TaskOwner(1, "host", "42"),
    )
    store.save(record)
    assert store.get("t1") == record
    assert store.get("nope") is None


def test_transition_moves_only_from_the_expected_status(store: TaskStore) -> None:
    store.save(_record("t1"))
    running = store.transition("t1", (TaskStatus.QUEUED,), status=TaskStatus.RUNNING)
    assert running is not None and running.status == TaskStatus.RUNNING
    assert store.transition("t1", (TaskStatus.QUEUED,), status=TaskStatus.CANCELLED) is None
    assert store.get("t1").status == TaskStatus.RUNNING  # type: ignore[union-attr]
    assert store.transition("missing", (TaskStatus.QUEUED,), status=TaskStatus.RUNNING) is None


def test_update_and_list_by_status_and_batch(store: TaskStore) -> None:
    store.save(_record("t1", batch_id="b"))
    store.save(_record("t2", batch_id="b", status=TaskStatus.RUNNING))
    store.save(_record("t3"))
    assert store.update("t3", progress=0.5).progress == 0.5
    assert [r.task_id for r in store.list(batch_id="b")] == ["t1", "t2"]
    assert [r.task_id for r in store.list(status=TaskStatus.RUNNING)] == ["t2"]
    with pytest.raises(TaskNotFoundError):
        store.update("missing", progress=1.0)


def test_a_record_stored_by_an_older_version_still_reads(tmp_path: Path) -> None:
    """Before ``metadata`` and ``result`` had their own fields, metadata rode in the graph."""
    path = tmp_path / "state.db"
    SqliteState(path).close()
    old = {
        "task_id": "t_old", "graph": {**GRAPH, "x-metadata": {"tracking_id": "trk_old"}},
        "project_id": None, "shot": "a/b/c", "user": "u", "priority": 0, "status": "completed",
        "created_at": 1.0, "started_at": None, "finished_at": None, "batch_id": None,
        "node_states": {}, "progress": 1.0, "takes": [], "error": None,
        "dagster_run_id": None, "trace_id": None,
    }  # fmt: skip
    with sqlite3.connect(path) as conn:
        conn.execute(
            "INSERT INTO tasks (task_id, status, batch_id, created_at, record) "
            "VALUES (?, ?, ?, ?, ?)",
            ("t_old", "completed", None, 1.0, json.dumps(old)),
        )
    state = SqliteState(path)
    try:
        record = state.get("t_old")
        assert record is not None and record.status == TaskStatus.COMPLETED
        assert record.metadata == {"tracking_id": "trk_old"} and "x-metadata" not in record.graph
        assert record.result is None and record.owner is None
    finally:
        state.close()
