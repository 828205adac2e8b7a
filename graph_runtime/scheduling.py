"""Which waiting task runs next, where a task stands in line, and how long it will wait.

``FairQueue`` serves owners (a user, or a project) in turn: one owner's flood of 500 tasks
does not starve another owner's single task, which starts after at most one task of each
other owner. Within an owner, higher priority first, then arrival order; across owners the
highest waiting priority wins and ties go round robin. ``position`` answers "how many tasks
run before this one" from the same rule, so the API can show an honest place in line.

``ThroughputEstimate`` turns measured task durations into the wait a new task can expect
(tasks ahead x mean duration / workers, plus its own run).
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(order=True)
class _Entry(Generic[T]):
    rank: tuple[int, int]  # (-priority, arrival): smallest runs first
    key: str = field(compare=False)
    owner: str = field(compare=False)
    item: T = field(compare=False)
    group: str | None = field(default=None, compare=False)


class FairQueue(Generic[T]):
    """A thread-safe queue of keyed items, fair between owners. ``get`` blocks."""

    def __init__(self) -> None:
        self._heaps: dict[str, list[_Entry[T]]] = {}
        self._turns: deque[str] = deque()  # owners with waiting items, next turn first
        self._where: dict[str, str] = {}  # key -> owner
        self._waiting: Counter[tuple[str, int]] = Counter()  # (owner, priority) -> items
        self._groups: Counter[str] = Counter()  # group (e.g. a project) -> items
        self._arrival = itertools.count()
        self._cond = threading.Condition()
        self._closed = False

    def put(
        self, key: str, item: T, *, owner: str, priority: int = 0, group: str | None = None
    ) -> None:
        """Queue ``item``; ``group`` (e.g. its project) is only counted (``count_group``)."""
        with self._cond:
            if key in self._where:
                raise ValueError(f"'{key}' is already queued")
            heap = self._heaps.setdefault(owner, [])
            if not heap:
                self._turns.append(owner)
            entry = _Entry((-priority, next(self._arrival)), key, owner, item, group)
            heapq.heappush(heap, entry)
            self._where[key] = owner
            self._counted(entry, 1)
            self._cond.notify()

    def _counted(self, entry: _Entry[T], change: int) -> None:
        waiting = (entry.owner, -entry.rank[0])
        self._waiting[waiting] += change
        if self._waiting[waiting] <= 0:
            del self._waiting[waiting]
        if entry.group is not None:
            self._groups[entry.group] += change
            if self._groups[entry.group] <= 0:
                del self._groups[entry.group]

    def get(self, timeout: float | None = None) -> tuple[str, T] | None:
        """The next item by the fairness rule; ``None`` once closed (or after ``timeout``)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                if self._closed:
                    return None
                entry = self._pop()
                if entry is not None:
                    return entry.key, entry.item
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)

    def remove(self, key: str) -> bool:
        """Take a waiting item out (a cancelled task); False when it is not waiting."""
        with self._cond:
            owner = self._where.pop(key, None)
            if owner is None:
                return False
            heap = self._heaps[owner]
            self._counted(next(e for e in heap if e.key == key), -1)
            self._heaps[owner] = [e for e in heap if e.key != key]
            heapq.heapify(self._heaps[owner])
            if not self._heaps[owner]:
                del self._heaps[owner]
                self._turns.remove(owner)
            return True

    def move(self, key: str, index: int) -> list[str] | None:
        """Put waiting ``key`` at ``index`` (0: first) among its owner's waiting items of its
        priority, clamped to that band; the band's keys in their new order, or None when
        ``key`` is not waiting. Other owners' turns are untouched."""
        with self._cond:
            owner = self._where.get(key)
            if owner is None:
                return None
            heap = self._heaps[owner]
            entry = next(e for e in heap if e.key == key)
            band = sorted(e for e in heap if e.rank[0] == entry.rank[0])
            arrivals = [e.rank[1] for e in band]
            band.remove(entry)
            band.insert(max(0, min(index, len(band))), entry)
            for e, arrival in zip(band, arrivals, strict=True):
                e.rank = (e.rank[0], arrival)
            heapq.heapify(heap)
            return [e.key for e in band]

    def position(self, key: str) -> int | None:
        """How many waiting items will be served before ``key`` (None when not waiting)."""
        return self.positions([key]).get(key)

    def positions(self, keys: Iterable[str]) -> dict[str, int]:
        """``position`` of each waiting key among ``keys``, in one pass over the line (a page
        of tasks costs one walk, not one per task); keys not waiting are left out."""
        with self._cond:
            wanted = {k for k in keys if k in self._where}
            found: dict[str, int] = {}
            if not wanted:
                return found
            heaps = {owner: sorted(heap) for owner, heap in self._heaps.items()}
            heads = dict.fromkeys(heaps, 0)
            turns = deque(self._turns)
            served = 0
            while turns and len(found) < len(wanted):
                owner = self._choose(turns, lambda o: heaps[o][heads[o]].rank[0])
                entry = heaps[owner][heads[owner]]
                if entry.key in wanted:
                    found[entry.key] = served
                served += 1
                heads[owner] += 1
                turns.remove(owner)
                if heads[owner] < len(heaps[owner]):
                    turns.append(owner)
            return found

    def __len__(self) -> int:
        with self._cond:
            return len(self._where)

    def count(self, owner: str) -> int:
        with self._cond:
            return len(self._heaps.get(owner, ()))

    def count_group(self, group: str) -> int:
        with self._cond:
            return self._groups.get(group, 0)

    def ahead(self, owner: str, priority: int = 0) -> int:
        """How many waiting items a new item of ``owner`` at ``priority`` would run after,
        from counts alone (cheap enough for every submission): all items of higher priority,
        the owner's own items of that priority, and round robin as many of each other owner's
        (one more for owners before it in turn). Exact when the waiting items share one
        priority, else an estimate; ``position`` is exact for an item already queued."""
        with self._cond:
            higher = sum(n for (_, p), n in self._waiting.items() if p > priority)
            own = self._waiting.get((owner, priority), 0)
            order = {o: i for i, o in enumerate(self._turns)}
            mine = order.get(owner, len(order))
            same = sum(
                min(n, own + (1 if order.get(o, len(order)) < mine else 0))
                for (o, p), n in self._waiting.items()
                if p == priority and o != owner
            )
            return higher + own + same

    def close(self) -> None:
        """Wake every waiting ``get`` with ``None``; later puts are still accepted but unserved."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _pop(self) -> _Entry[T] | None:
        if not self._turns:
            return None
        owner = self._choose(self._turns, lambda o: self._heaps[o][0].rank[0])
        entry = heapq.heappop(self._heaps[owner])
        del self._where[entry.key]
        self._counted(entry, -1)
        self._turns.remove(owner)
        if self._heaps[owner]:
            self._turns.append(owner)
        else:
            del self._heaps[owner]
        return entry

    @staticmethod
    def _choose(turns: deque[str], urgency: Callable[[str], int]) -> str:
        """The owner whose head has the highest priority; the earliest in turn on a tie."""
        best = turns[0]
        best_rank = urgency(best)
        for owner in turns:
            rank = urgency(owner)
            if rank < best_rank:
                best, best_rank = owner, rank
        return best


class ThroughputEstimate:
    """Expected wait from measured task durations (exponential moving average)."""

    def __init__(self, workers: int, per_node_s: float = 0.02, smoothing: float = 0.2) -> None:
        self.workers = max(1, workers)
        self.per_node_s = per_node_s
        self.smoothing = smoothing
        self._mean_task_s: float | None = None
        self._lock = threading.Lock()

    def observe(self, duration_s: float) -> None:
        """Record one finished task's wall time (claim to finish)."""
        with self._lock:
            if self._mean_task_s is None:
                self._mean_task_s = duration_s
            else:
                a = self.smoothing
                self._mean_task_s = (1 - a) * self._mean_task_s + a * duration_s

    @property
    def mean_task_s(self) -> float | None:
        return self._mean_task_s

    def tasks_per_second(self) -> float | None:
        mean = self._mean_task_s
        return self.workers / mean if mean else None

    def seconds(self, ahead: int, nodes: int, running: int = 0) -> float:
        """Seconds until a task with ``nodes`` nodes and ``ahead`` tasks before it finishes,
        with ``running`` tasks on the workers now (they delay it only when all are busy)."""
        mean = self._mean_task_s
        own = mean if mean is not None else self.per_node_s * max(nodes, 1)
        waiting = ahead + max(0, running - self.workers + 1)
        return round(waiting * own / self.workers + own, 3)

    def drain_seconds(self, tasks: int) -> float:
        """Seconds the workers need to finish ``tasks`` tasks at the measured rate."""
        mean = self._mean_task_s if self._mean_task_s is not None else self.per_node_s
        return tasks * mean / self.workers
