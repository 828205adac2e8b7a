"""``FairQueue.move`` reorders one owner's waiting items of one priority and nothing else."""

from __future__ import annotations

from graph_runtime.scheduling import FairQueue


def drain(queue: FairQueue[int]) -> list[str]:
    out: list[str] = []
    while (got := queue.get(timeout=0)) is not None:
        out.append(got[0])
    return out


def test_a_moved_item_runs_at_its_new_place_among_its_owners_and_others_keep_their_turns() -> None:
    queue: FairQueue[int] = FairQueue()
    for key, owner in [("a1", "ana"), ("b1", "bob"), ("a2", "ana"), ("a3", "ana"), ("b2", "bob")]:
        queue.put(key, 0, owner=owner)
    assert queue.move("a3", 0) == ["a3", "a1", "a2"]
    assert queue.position("a3") == 0 and queue.position("b1") == 1
    assert queue.move("a1", 99) == ["a3", "a2", "a1"]  # clamped to the last place
    assert drain(queue) == ["a3", "b1", "a2", "b2", "a1"]


def test_a_move_stays_within_its_priority_and_a_key_not_waiting_answers_none() -> None:
    queue: FairQueue[int] = FairQueue()
    queue.put("hi", 0, owner="ana", priority=5)
    queue.put("lo1", 0, owner="ana")
    queue.put("lo2", 0, owner="ana")
    assert queue.move("lo2", 0) == ["lo2", "lo1"]
    assert queue.move("nope", 0) is None
    assert drain(queue) == ["hi", "lo2", "lo1"]
    assert queue.move("hi", 0) is None
