"""Fair turns in the distributed queue (``stores.postgres.turns``) on a real PostgreSQL."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator

import pytest

from graph_runtime.tasks import TaskRecord, TaskStatus
from stores.postgres.cluster import ClusterStore
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


def test_a_move_reorders_only_its_users_band_and_keeps_the_interleaving(
    state: PostgresState,
) -> None:
    for task_id, user in [("a0", "alice"), ("b0", "bob"), ("a1", "alice"), ("b1", "bob")]:
        enqueue(state, task_id, user)
    enqueue(state, "a2", "alice")
    enqueue(state, "c0", "alice", priority=5)  # another band: never moved with priority 0
    turns = QueueTurns(state)
    assert turns.move("a2", 0) == ["a2", "a0", "a1"]
    assert [turns.position(t) for t in ("c0", "a2", "b0", "a0", "b1", "a1")] == [0, 1, 2, 3, 4, 5]
    assert turns.move("a2", 99) == ["a0", "a1", "a2"]  # past the end: last
    assert turns.move("a1", 0) == ["a1", "a0", "a2"]
    assert turns.move("nope", 0) is None and turns.move("c0", 3) == ["c0"]
    created = {t: state.get(t).created_at for t in ("a0", "a1", "a2")}  # type: ignore[union-attr]
    assert serve(state) == ["c0", "a1", "b0", "a0", "b1", "a2"]
    assert turns.move("a0", 0) is None  # it runs now
    assert {t: state.get(t).created_at for t in created} == created  # type: ignore[union-attr]


def test_a_move_among_tasks_queued_before_turns_existed(state: PostgresState) -> None:
    for i in range(3):
        enqueue(state, f"a{i}", "alice")
    with state.transaction() as conn:
        conn.execute("UPDATE takeflow_tasks SET turn = 0")  # all tied, arrival decides
    assert QueueTurns(state).move("a2", 0) == ["a2", "a0", "a1"]
    assert serve(state) == ["a2", "a0", "a1"]


def test_workers_claiming_during_moves_start_every_task_once(state: PostgresState) -> None:
    ids = [f"a{i}" for i in range(30)]
    for task_id in ids:
        enqueue(state, task_id, "alice")
    enqueue(state, "b0", "bob")
    cluster, turns = ClusterStore(state), QueueTurns(state)
    claimed: list[str] = []
    done = threading.Event()

    def claim() -> None:
        while (task_id := turns.next_queued("cpu")) is not None:
            if state.transition(task_id, (TaskStatus.QUEUED,), status=TaskStatus.RUNNING):
                claimed.append(task_id)

    def shuffle() -> None:
        rng = random.Random(7)
        while not done.is_set():
            with cluster.intake():
                turns.move(rng.choice(ids), rng.randrange(30))

    mover = threading.Thread(target=shuffle)
    mover.start()
    claimers = [threading.Thread(target=claim) for _ in range(2)]
    for t in claimers:
        t.start()
    for t in claimers:
        t.join(60)
    done.set()
    mover.join(60)
    assert sorted(claimed) == sorted([*ids, "b0"])  # each task once, none left behind
    assert claimed.index("b0") <= 3  # bob's turn came in the first round, moves or not
