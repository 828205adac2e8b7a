"""One contract for the event log, run against SQLite, PostgreSQL and the in-memory twin."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from graph_runtime.events import EventLog, MemoryEventLog
from stores.sqlite_state import SqliteState


@pytest.fixture(params=["sqlite", "memory", "postgres"])
def log(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EventLog]:
    if request.param == "memory":
        yield MemoryEventLog()
    elif request.param == "sqlite":
        yield SqliteState(tmp_path / "state.db")
    else:
        from stores.postgres.state import PostgresState

        state = PostgresState(request.getfixturevalue("pg_url"))
        yield state
        state.close()


def test_sequence_numbers_count_per_task(log: EventLog) -> None:
    a1 = log.append("task.submitted", "a", "p", {})
    b1 = log.append("task.submitted", "b", "q", {})
    a2 = log.append("task.started", "a", "p", {"x": 1})
    assert (a1.seq, b1.seq, a2.seq) == (1, 1, 2)
    assert a1.id < b1.id < a2.id
    assert [e.seq for e in log.read_task("a")] == [1, 2]
    assert [e.type for e in log.read_task("a", after_seq=1)] == ["task.started"]
    assert log.read_task("a", after_seq=1)[0].data == {"x": 1}


def test_read_since_filters_by_project(log: EventLog) -> None:
    for i in range(5):
        log.append("task.progress", f"t{i}", "p" if i % 2 == 0 else "q", {"i": i})
    assert [e.data["i"] for e in log.read_since(0, ["p"])] == [0, 2, 4]
    assert [e.data["i"] for e in log.read_since(2)] == [2, 3, 4]
    assert log.last_id() == 5


def test_sqlite_log_survives_reopen_and_continues_sequence(tmp_path: Path) -> None:
    state = SqliteState(tmp_path / "s.db")
    state.append("task.submitted", "a", None, {})
    state.close()
    reopened = SqliteState(tmp_path / "s.db")
    assert reopened.append("task.started", "a", None, {}).seq == 2
    assert [e.type for e in reopened.read_task("a")] == ["task.submitted", "task.started"]
