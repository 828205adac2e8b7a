"""``FairQueue.positions`` answers a page of tasks in one walk, the same as ``position`` each."""

from __future__ import annotations

import random

from graph_runtime.scheduling import FairQueue


def test_positions_of_many_keys_equal_position_of_each() -> None:
    rng = random.Random(7)
    queue: FairQueue[int] = FairQueue()
    for i in range(400):
        queue.put(f"t{i}", i, owner=f"u{rng.randrange(5)}", priority=rng.choice([0, 0, 1, 5]))
    keys = [f"t{i}" for i in rng.sample(range(400), 60)] + ["gone"]
    assert queue.positions(keys) == {k: queue.position(k) for k in keys if k != "gone"}
    assert sorted(queue.positions([f"t{i}" for i in range(400)]).values()) == list(range(400))
    assert queue.positions([]) == {}
