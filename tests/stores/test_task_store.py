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
    TaskQuery,
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


# -- listing (``query``): filters, newest-first order, keyset pages -----------------------------


def _listed(store: TaskStore, **kw: object) -> list[str]:
    return [r.task_id for r in store.query(TaskQuery(**kw))]  # type: ignore[arg-type]


@pytest.fixture
def listed(store: TaskStore) -> TaskStore:
    """Six tasks over two projects (and one with none), two shots, two users, four statuses."""
    rows = [
        ("t1", "demo", "a/b/c", "ana", TaskStatus.COMPLETED, 100.0, "b1", "noise_image"),
        ("t2", "demo", "a/b/d", "bob", TaskStatus.QUEUED, 200.0, None, "number"),
        ("t3", "film", "a/b/c", "ana", TaskStatus.RUNNING, 300.0, "b1", "noise_image"),
        ("t4", None, "a/b/c", "ana", TaskStatus.FAILED, 400.0, None, None),
        ("t5", None, "a/b/c", "bob", TaskStatus.QUEUED, 400.0, None, None),  # same time as t4
        ("t6", "film", "a/b/d", "bob", TaskStatus.QUEUED, 500.0, None, "number"),
    ]
    for task_id, project, shot, user, status, created, batch, template in rows:
        meta = {"template_id": template} if template else {}
        store.save(
            TaskRecord(
                task_id, dict(GRAPH), project, shot, user, status=status, created_at=created,
                batch_id=batch, metadata=meta,
            )
        )  # fmt: skip
    store.update("t2", progress=0.5)  # an update keeps the record listed where it was
    return store


def test_query_lists_newest_first_then_by_task_id(listed: TaskStore) -> None:
    assert _listed(listed) == ["t6", "t5", "t4", "t3", "t2", "t1"]
    assert _listed(listed, limit=2) == ["t6", "t5"]


def test_query_filters_each_field(listed: TaskStore) -> None:
    assert _listed(listed, projects=frozenset({"demo"})) == ["t2", "t1"]
    assert _listed(listed, projects=frozenset({"demo", "film"})) == ["t6", "t3", "t2", "t1"]
    assert _listed(listed, projects=frozenset()) == []
    assert _listed(listed, shot="a/b/d") == ["t6", "t2"]
    assert _listed(listed, user="ana") == ["t4", "t3", "t1"]
    assert _listed(listed, statuses=frozenset({TaskStatus.QUEUED})) == ["t6", "t5", "t2"]
    both = frozenset({TaskStatus.RUNNING, TaskStatus.FAILED})
    assert _listed(listed, statuses=both) == ["t4", "t3"]
    assert _listed(listed, since=400.0) == ["t6", "t5", "t4"]
    assert _listed(listed, batch_id="b1") == ["t3", "t1"]
    assert _listed(listed, template_id="number") == ["t6", "t2"]
    assert _listed(listed, projects=frozenset({"film"}), user="bob", shot="a/b/d") == ["t6"]


def test_query_scope_adds_the_users_projectless_tasks(listed: TaskStore) -> None:
    """What a token for project ``demo`` and user ``ana`` may see: project-less tasks are
    only their user's."""
    scope = {"projects": frozenset({"demo"}), "projectless_of": "ana"}
    assert _listed(listed, **scope) == ["t4", "t2", "t1"]
    assert _listed(listed, **scope, user="bob") == ["t2"]
    every_project = {"projectless_of": "bob"}  # a token for all projects, of user bob
    assert _listed(listed, **every_project) == ["t6", "t5", "t3", "t2", "t1"]


def test_query_pages_see_every_task_once_while_tasks_arrive(listed: TaskStore) -> None:
    seen: list[str] = []
    before: tuple[float, str] | None = None
    for page_number in range(10):
        page = listed.query(TaskQuery(limit=2, before=before))
        seen += [r.task_id for r in page]
        if len(page) < 2:
            break
        before = (page[-1].created_at, page[-1].task_id)
        listed.save(_record(f"new{page_number}", created_at=1000.0 + page_number))
    assert seen == ["t6", "t5", "t4", "t3", "t2", "t1"]
    after = TaskQuery(before=(400.0, "t5"))  # the key is exclusive: t4 shares t5's time
    assert [r.task_id for r in listed.query(after)] == ["t4", "t3", "t2", "t1"]


def test_sqlite_listing_is_served_by_an_index_not_a_sort(tmp_path: Path) -> None:
    state = SqliteState(tmp_path / "state.db")
    try:
        for sql, params, index in [
            ("1=1", [], "tasks_recent"),
            ("json_extract(record, '$.project_id') IN (?)", ["demo"], "tasks_project_recent"),
        ]:
            plan = " ".join(
                str(row[-1])
                for row in state._conn.execute(
                    f"EXPLAIN QUERY PLAN SELECT record FROM tasks WHERE {sql} "
                    "AND (created_at, task_id) < (?, ?) "
                    "ORDER BY created_at DESC, task_id DESC LIMIT 50",
                    [*params, 1.0, "t"],
                )
            )
            assert index in plan and "TEMP B-TREE" not in plan, plan
    finally:
        state.close()


def test_postgres_listing_can_be_served_by_its_indexes(pg_url: str) -> None:
    from stores.postgres.state import PostgresState

    state = PostgresState(pg_url)
    try:
        with state.pool.connection() as conn:
            conn.execute("SET enable_seqscan = off")
            for sql, params, index in [
                ("TRUE", [], "takeflow_tasks_recent"),
                ("record->>'project_id' = ANY(%s)", [["demo"]], "takeflow_tasks_project_recent"),
            ]:
                rows = conn.execute(
                    f"EXPLAIN SELECT record FROM takeflow_tasks WHERE {sql} "
                    "AND (created_at, task_id) < (%s, %s) "
                    "ORDER BY created_at DESC, task_id DESC LIMIT 50",
                    [*params, 1.0, "t"],
                ).fetchall()
                plan = "\n".join(str(r[0]) for r in rows)
                assert index in plan, plan
            conn.execute("RESET enable_seqscan")
    finally:
        state.close()
