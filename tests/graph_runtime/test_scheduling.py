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
