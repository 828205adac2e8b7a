"""What only the PostgreSQL state must guarantee: ordering under concurrent writers, claims that
one worker wins, and fencing of a worker that lost its lease."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from graph_runtime.tasks import TaskRecord, TaskStatus
from stores.postgres.state import LeaseLostError, PostgresState


@pytest.fixture
def state(pg_url: str) -> Iterator[PostgresState]:
    s = PostgresState(pg_url, pool_size=12)
    yield s
    s.close()


def record(task_id: str) -> TaskRecord:
    return TaskRecord(task_id=task_id, graph={}, project_id="p", shot="ch01/sc01/sh010", user="u")


def test_a_tailing_reader_never_skips_an_event_committed_out_of_order(
    state: PostgresState, pg_url: str
) -> None:
    """8 writers (own connections) append 400 events while a reader tails by ``last id``: every
    event is seen exactly once, in id order, with no id below one already seen."""
    writers, per_writer = 8, 50
    stop = threading.Event()
    seen: list[int] = []
    reader = PostgresState(pg_url, pool_size=1)

    def tail() -> None:
        last = 0
        while True:
            writers_done = stop.is_set()  # read once more after the writers finished
            batch = reader.read_since(last)
            for event in batch:
                assert event.id > last
                seen.append(event.id)
                last = event.id
            if writers_done and not batch:
                return

    def write(w: int) -> None:
        for i in range(per_writer):
            state.append("task.progress", f"task-{w}", "p", {"i": i})

    tailer = threading.Thread(target=tail)
    tailer.start()
    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    tailer.join(timeout=30)
    reader.close()
    assert seen == list(range(1, writers * per_writer + 1))
    for w in range(writers):
        events = state.read_task(f"task-{w}")
        assert [e.seq for e in events] == list(range(1, per_writer + 1))
        assert [e.data["i"] for e in events] == list(range(per_writer))


def test_concurrent_appends_to_one_task_get_contiguous_seq(state: PostgresState) -> None:
    threads = [
        threading.Thread(
            target=lambda: [state.append("task.progress", "t", "p", {}) for _ in range(25)]
        )
        for _ in range(6)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [e.seq for e in state.read_task("t")] == list(range(1, 151))


def test_one_of_two_workers_wins_a_claim(state: PostgresState, pg_url: str) -> None:
    other = PostgresState(pg_url, pool_size=2)
    state.save(record("t1"))
    results: list[TaskRecord | None] = []
    barrier = threading.Barrier(2)

    def claim(s: PostgresState, owner: str) -> None:
        barrier.wait()
        results.append(s.claim("t1", owner, lease_s=30))

    threads = [
        threading.Thread(target=claim, args=(s, o)) for s, o in ((state, "w1"), (other, "w2"))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    other.close()
    won = [r for r in results if r is not None]
    assert len(won) == 1 and won[0].status == TaskStatus.RUNNING
    assert state.get("t1").status == TaskStatus.RUNNING  # type: ignore[union-attr]


def test_a_worker_that_lost_its_lease_writes_nothing(state: PostgresState, pg_url: str) -> None:
    worker = PostgresState(pg_url, pool_size=2)
    state.save(record("t1"))
    state.append("task.submitted", "t1", "p", {})
    assert worker.claim("t1", "w1", lease_s=0.2) is not None
    worker.append("task.started", "t1", "p", {})
    assert worker.heartbeat("w1", lease_s=0.2) == {"t1": False}
    time.sleep(0.4)  # the worker is paused past its lease; the sweeper fails the task over
    assert [r.task_id for r in state.expired()] == ["t1"]
    failed = state.fail_expired("t1", {"code": "interrupted", "message": "worker lost"})
    assert failed is not None and failed.seq == 3
    assert state.fail_expired("t1", {"code": "interrupted"}) is None  # only once
    assert worker.heartbeat("w1", lease_s=0.2) == {}  # it resumes: its heartbeat finds it lost
    with pytest.raises(LeaseLostError, match="lost its lease on task t1"):
        worker.append("task.progress", "t1", "p", {"late": True})
    with pytest.raises(LeaseLostError):  # and every later write, until the task is released
        worker.append("node.state", "t1", "p", {"state": "failed"})
    with pytest.raises(LeaseLostError):
        worker.transition("t1", (TaskStatus.RUNNING,), status=TaskStatus.COMPLETED)
    assert worker.claims() == [] and worker.claim("t1", "w1", lease_s=1) is None
    types = [e.type for e in state.read_task("t1")]
    assert types == ["task.submitted", "task.started", "task.failed"]
    assert state.get("t1").status == TaskStatus.FAILED  # type: ignore[union-attr]
    worker.close()


def test_heartbeat_reports_cancel_requests_and_drops_lost_claims(
    state: PostgresState, pg_url: str
) -> None:
    worker = PostgresState(pg_url, pool_size=2)
    for t in ("a", "b"):
        state.save(record(t))
        worker.claim(t, "w1", lease_s=30)
    assert worker.heartbeat("w1", 30) == {"a": False, "b": False}
    assert state.request_cancel("a")
    assert not state.request_cancel("nope")
    assert worker.heartbeat("w1", 30) == {"a": True, "b": False}
    state.update("b", status=TaskStatus.COMPLETED)  # not the worker's own write: no fence here
    assert worker.heartbeat("w1", 30) == {"a": True}
    assert [c.task_id for c in worker.claims()] == ["a"]
    worker.close()


def test_a_queued_task_is_cancelled_only_while_nobody_claimed_it(state: PostgresState) -> None:
    state.save(record("t1"))
    state.save(record("t2"))
    assert state.claim("t1", "w1", 30) is not None
    assert state.transition("t1", (TaskStatus.QUEUED,), status=TaskStatus.CANCELLED) is None
    cancelled = state.transition("t2", (TaskStatus.QUEUED,), status=TaskStatus.CANCELLED)
    assert cancelled is not None and cancelled.status == TaskStatus.CANCELLED
    assert state.claim("t2", "w1", 30) is None
