from __future__ import annotations

import threading

import pytest

from graph_runtime.scheduling import FairQueue, ThroughputEstimate


def drain(queue: FairQueue[int]) -> list[str]:
    order = []
    while len(queue):
        got = queue.get(timeout=0)
        assert got is not None
        order.append(got[0])
    return order


def test_one_owner_is_fifo_by_priority() -> None:
    queue: FairQueue[int] = FairQueue()
    for i in range(3):
        queue.put(f"a{i}", i, owner="a")
    queue.put("urgent", 9, owner="a", priority=5)
    assert drain(queue) == ["urgent", "a0", "a1", "a2"]


def test_a_flood_does_not_starve_another_owner() -> None:
    queue: FairQueue[int] = FairQueue()
    for i in range(500):
        queue.put(f"a{i}", i, owner="alice")
    queue.put("b0", 0, owner="bob")
    assert queue.position("b0") == 1
    assert drain(queue)[:3] == ["a0", "b0", "a1"]


def test_owners_take_turns() -> None:
    queue: FairQueue[int] = FairQueue()
    for owner in ("a", "b", "c"):
        for i in range(2):
            queue.put(f"{owner}{i}", i, owner=owner)
    assert drain(queue) == ["a0", "b0", "c0", "a1", "b1", "c1"]


def test_higher_priority_wins_across_owners() -> None:
    queue: FairQueue[int] = FairQueue()
    queue.put("a0", 0, owner="a")
    queue.put("b0", 0, owner="b", priority=10)
    assert queue.position("b0") == 0
    assert drain(queue) == ["b0", "a0"]


def test_position_matches_serving_order() -> None:
    queue: FairQueue[int] = FairQueue()
    keys = []
    for i in range(12):
        owner = "abc"[i % 3] if i < 9 else "a"
        key = f"{owner}-{i}"
        queue.put(key, i, owner=owner, priority=1 if i == 7 else 0)
        keys.append(key)
    positions = {k: queue.position(k) for k in keys}
    order = drain(queue)
    assert positions == {k: order.index(k) for k in keys}
    assert queue.position(keys[0]) is None


def test_remove_takes_a_waiting_item_out() -> None:
    queue: FairQueue[int] = FairQueue()
    queue.put("a0", 0, owner="a")
    queue.put("b0", 0, owner="b")
    assert queue.remove("a0") is True
    assert queue.remove("a0") is False
    assert queue.count("a") == 0
    assert drain(queue) == ["b0"]


def test_duplicate_key_is_refused() -> None:
    queue: FairQueue[int] = FairQueue()
    queue.put("a0", 0, owner="a")
    with pytest.raises(ValueError, match="already queued"):
        queue.put("a0", 1, owner="b")


def test_close_wakes_blocked_getters() -> None:
    queue: FairQueue[int] = FairQueue()
    results: list[object] = []
    waiter = threading.Thread(target=lambda: results.append(queue.get()))
    waiter.start()
    queue.close()
    waiter.join(timeout=5)
    assert results == [None]


def test_estimate_grows_with_the_queue() -> None:
    estimate = ThroughputEstimate(workers=2)
    idle = estimate.seconds(ahead=0, nodes=2)
    assert idle == pytest.approx(0.04)
    for _ in range(20):
        estimate.observe(0.1)
    assert estimate.tasks_per_second() == pytest.approx(20.0)
    assert estimate.seconds(ahead=0, nodes=1) == pytest.approx(0.1)
    assert estimate.seconds(ahead=100, nodes=1) == pytest.approx(100 * 0.1 / 2 + 0.1)


def test_ahead_counts_what_a_new_item_would_wait_for() -> None:
    queue: FairQueue[int] = FairQueue()
    for i in range(5):
        queue.put(f"a{i}", i, owner="a", group="p1")
    queue.put("b0", 0, owner="b", group="p2")
    queue.put("b1", 0, owner="b", group="p2")
    assert queue.ahead("c") == 2  # a newcomer waits for one item of each other owner
    assert queue.ahead("b") == 2 + 3  # b0, b1, then a0..a2 (a is before b in turn)
    assert queue.ahead("b", priority=1) == 0
    queue.put("b2", 0, owner="b")
    assert queue.position("b2") == 5
    assert queue.count_group("p1") == 5 and queue.count_group("p2") == 2
    queue.remove("a4")
    assert queue.get(timeout=0) == ("a0", 0)
    assert queue.count_group("p1") == 3
    assert queue.ahead("a", priority=-1) == len(queue)


def test_busy_workers_delay_a_new_task_only_when_all_are_busy() -> None:
    estimate = ThroughputEstimate(workers=2)
    estimate.observe(1.0)
    assert estimate.seconds(ahead=0, nodes=1, running=1) == pytest.approx(1.0)
    assert estimate.seconds(ahead=0, nodes=1, running=2) == pytest.approx(1.5)
    assert estimate.drain_seconds(10) == pytest.approx(5.0)
