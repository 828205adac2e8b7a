"""Fair turns in the distributed queue (``stores.postgres.turns``) on a real PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from graph_runtime.tasks import TaskRecord, TaskStatus
from stores.postgres.state import PostgresState
from stores.postgres.turns import QueueTurns


@pytest.fixture
def state(pg_url: str) -> Iterator[PostgresState]:
    s = PostgresState(pg_url, pool_size=4)
    yield s
    s.close()


def enqueue(
    state: PostgresState,
    task_id: str,
    user: str,
    queue: str = "cpu",
    model: str | None = None,
    priority: int = 0,
) -> None:
    record = TaskRecord(
        task_id=task_id, graph={}, project_id=None, shot="ch01/sc01/sh010", user=user,
        priority=priority,
    )  # fmt: skip
    state.save(record)
    QueueTurns(state).enqueue(task_id, queue, model)


def serve(state: PostgresState, queue: str = "cpu", count: int = 1_000) -> list[str]:
    """Start ``count`` tasks (default: all), one at a time, in the order workers would."""
    turns, order = QueueTurns(state), []
    while len(order) < count and (task_id := turns.next_queued(queue)) is not None:
        state.transition(task_id, (TaskStatus.QUEUED,), status=TaskStatus.RUNNING)
        order.append(task_id)
    return order


def test_users_take_turns_then_priority_goes_first(state: PostgresState) -> None:
    for i in range(5):
        enqueue(state, f"a{i}", "alice")
    enqueue(state, "b0", "bob")
    enqueue(state, "b1", "bob")
    enqueue(state, "c0", "carol", priority=5)
    turns = QueueTurns(state)
    assert turns.position("c0") == 0 and turns.position("b0") == 2
    assert turns.position("a4") == 7 and turns.position("nope") is None
    assert turns.ahead("dave", 0) == 3  # carol's (priority 5), alice's and bob's first turns
    assert turns.queued_by("alice") == 5
    assert serve(state) == ["c0", "a0", "b0", "a1", "b1", "a2", "a3", "a4"]


def test_a_user_who_comes_back_waits_for_the_current_round_not_the_first(
    state: PostgresState,
) -> None:
    for i in range(4):
        enqueue(state, f"a{i}", "alice")
    assert serve(state, count=2) == ["a0", "a1"]
    enqueue(state, "b0", "bob")  # the round now is alice's third turn: bob joins it
    enqueue(state, "a4", "alice")  # alice's queue goes on after her last turn
    enqueue(state, "b1", "bob")
    assert serve(state) == ["a2", "b0", "a3", "b1", "a4"]


def test_within_a_turn_a_worker_prefers_a_model_it_holds(state: PostgresState) -> None:
    enqueue(state, "a0", "a", "gpu-8gb", "sd15")
    enqueue(state, "b0", "b", "gpu-8gb", "sdxl")
    enqueue(state, "a1", "a", "gpu-8gb", "sdxl")
    turns = QueueTurns(state)
    assert turns.next_queued("gpu-8gb") == "a0"
    assert turns.next_queued("gpu-8gb", ["sdxl"]) == "b0"  # same turn as a0; a1 waits its turn
    assert turns.next_queued("gpu-8gb", ["flux"]) == "a0"


def test_queues_are_served_apart(state: PostgresState) -> None:
    enqueue(state, "g0", "alice", queue="gpu")
    enqueue(state, "c0", "alice", queue="cpu")
    assert QueueTurns(state).next_queued("gpu") == "g0"
    assert serve(state, "cpu") == ["c0"]


def test_the_job_that_claimed_a_task_is_known(state: PostgresState) -> None:
    enqueue(state, "t1", "alice")
    state.claim_as("w1", 30)
    with state.serving(41):
        assert state.transition("t1", (TaskStatus.QUEUED,), status=TaskStatus.RUNNING)
    turns = QueueTurns(state)
    assert turns.consumed(41) and not turns.consumed(42)
