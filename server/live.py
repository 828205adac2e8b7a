"""Live event fan-out to WebSocket clients, lossless over the durable event log.

One runtime sink (``LiveEvents``) hands every stored event to the event loop, which puts it on
the bounded queue of each interested connection. A connection delivers events through one
``deliver`` path that remembers, per task, the last sequence number sent: replayed and live
events may overlap (a subscriber registers interest first, then replays the log), and the
overlap is dropped there; a gap (an event arrived out of order, or a queue overflowed) is filled
from the log. So a client sees every event of its tasks exactly once, in sequence order, and a
slow client only ever costs its own queue: the runner never waits on a socket.

Fan-out cost: an event is encoded to JSON once (``LiveEvents.wire``, msgspec), not once per
connection; a connection's pump drains everything queued per wake-up, and its heartbeat is one
timer per idle period rather than a timeout per event (see docs/runner-design.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec

from dagster_defs.observability import RunnerMetrics
from graph_runtime.events import EventLog, TaskEvent
from graph_runtime.tasks import TaskStore
from server.wire import wire_event

log = logging.getLogger(__name__)

Send = Callable[[str], Awaitable[None]]  # one JSON text message to the client
_REPLAY_PAGE = 5_000
_WIRE_CACHE = 4_096  # encoded events kept for connections that send them soon after
_encoder = msgspec.json.Encoder(enc_hook=str)


def encode_message(message: dict[str, Any]) -> str:
    """A server message as compact JSON text (values JSON cannot hold are written as text)."""
    return _encoder.encode(message).decode()


def encode_event(event: TaskEvent) -> str:
    """The wire form of an event (``server.wire.wire_event``, docs/integration.md)."""
    return encode_message(wire_event(event))


@dataclass
class Subscription:
    """What a client asked to follow: tasks (from a sequence number) and projects (from an id)."""

    task_ids: list[str] = field(default_factory=list)
    project_ids: list[str] = field(default_factory=list)
    last_seq: dict[str, int] = field(default_factory=dict)
    last_id: int | None = None

    @classmethod
    def parse(cls, message: dict[str, Any]) -> Subscription:
        """Parse a ``subscribe`` message; ``ValueError`` says what is wrong with it."""

        def str_list(key: str) -> list[str]:
            value = message.get(key, [])
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ValueError(f"'{key}' must be a list of strings")
            return value

        last_seq = message.get("last_seq", {})
        if not isinstance(last_seq, dict) or not all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 0
            for k, v in last_seq.items()
        ):
            raise ValueError("'last_seq' must map task ids to sequence numbers (integers >= 0)")
        last_id = message.get("last_id")
        if last_id is not None and (
            not isinstance(last_id, int) or isinstance(last_id, bool) or last_id < 0
        ):
            raise ValueError("'last_id' must be an integer >= 0")
        tasks = str_list("task_ids")
        return cls(
            tasks + [t for t in last_seq if t not in tasks],
            str_list("project_ids"),
            last_seq,
            last_id,
        )


class Connection:
    """One WebSocket client: its interests, bounded queue and per-task delivery positions."""

    def __init__(self, hub: LiveEvents, user_id: str, send: Send, queue_size: int) -> None:
        self.hub = hub
        self.user_id = user_id
        self._send = send
        self.queue_size = queue_size
        self.pending: deque[TaskEvent] = deque()  # offered, not yet delivered (bounded)
        self.tasks: dict[str, int] = {}  # explicitly followed task -> last seq delivered
        self.projects: dict[str, int] = {}  # followed project -> id floor (events after it)
        self.seen: dict[str, int] = {}  # any task delivered -> last seq delivered
        self.overflow_from: int | None = None  # smallest id dropped while the queue was full
        self.sent = 0
        self.catch_ups = 0  # times the queue overflowed and the log filled in
        self._lock = asyncio.Lock()
        self._wakeup: asyncio.Future[None] | None = None  # set while the pump waits
        self._last_sent = time.monotonic()
        self._beat_fired = False

    # -- called on the event loop by the hub ----------------------------------------------

    def wants(self, event: TaskEvent) -> bool:
        return event.task_id in self.tasks or (
            event.project_id is not None and event.project_id in self.projects
        )

    def offer(self, event: TaskEvent) -> None:
        """Queue an event without ever blocking; on overflow drop the queue and remember where."""
        if self.overflow_from is not None:
            self.overflow_from = min(self.overflow_from, event.id)
            return
        if len(self.pending) < self.queue_size:
            self.pending.append(event)
        else:
            self.overflow_from = min(event.id, *(e.id for e in self.pending))
            self.pending.clear()
        self._wake()

    def _wake(self) -> None:
        waiter = self._wakeup
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- delivery -------------------------------------------------------------------------

    async def subscribe(self, sub: Subscription) -> None:
        """Register interest, replay the log after the client's positions, then go live."""
        state = self.hub.state
        floor_now = await asyncio.to_thread(state.last_id) if sub.project_ids else 0
        async with self._lock:
            for task_id in sub.task_ids:
                start = sub.last_seq.get(task_id, 0)
                self.tasks[task_id] = max(self.tasks.get(task_id, 0), start)
                self.seen[task_id] = max(self.seen.get(task_id, 0), start)
            new_projects = [p for p in sub.project_ids if p not in self.projects]
            for project_id in new_projects:
                self.projects[project_id] = sub.last_id if sub.last_id is not None else floor_now
            self.hub.register(self)
            for task_id in sub.task_ids:
                for event in await asyncio.to_thread(state.read_task, task_id, self.seen[task_id]):
                    await self._deliver(event, from_log=True)
            if new_projects:
                floor = min(self.projects[p] for p in new_projects)
                await self._replay_since(floor, new_projects)
            await self.send_message(
                {
                    "type": "subscribed",
                    "task_ids": sorted(self.tasks),
                    "project_ids": sorted(self.projects),
                    "last_seq": {t: self.seen.get(t, 0) for t in sorted(self.tasks)},
                    "last_id": await asyncio.to_thread(state.last_id),
                }
            )

    def unsubscribe(self, task_ids: Iterable[str], project_ids: Iterable[str]) -> None:
        for task_id in task_ids:
            self.tasks.pop(task_id, None)
        for project_id in project_ids:
            self.projects.pop(project_id, None)
        self.hub.register(self)

    async def _replay_since(self, after_id: int, project_ids: list[str] | None) -> None:
        while True:
            page = await asyncio.to_thread(
                self.hub.state.read_since, after_id, project_ids, _REPLAY_PAGE
            )
            for event in page:
                if self.wants(event):
                    await self._deliver(event, replaying=True, from_log=True)
            if len(page) < _REPLAY_PAGE:
                return
            after_id = page[-1].id

    async def _deliver(
        self, event: TaskEvent, replaying: bool = False, from_log: bool = False
    ) -> None:
        """Send ``event`` unless already sent; fill any gap before it from the log."""
        task_id = event.task_id
        last = self.seen.get(task_id)
        if last is None:
            floor = self.projects.get(event.project_id or "")
            if floor is not None and event.id <= floor:
                return  # before the client's position in this project
            if event.seq > 1 and not replaying:
                # First event of this task on this connection: fill in what came after the floor.
                earlier = await asyncio.to_thread(self.hub.state.read_task, task_id, 0)
                for old in earlier:
                    if old.seq < event.seq and (floor is None or old.id > floor):
                        await self._send_event(old, from_log=True)
            self.seen[task_id] = event.seq - 1
            last = self.seen[task_id]
        if event.seq <= last:
            return
        if event.seq > last + 1:
            for old in await asyncio.to_thread(self.hub.state.read_task, task_id, last):
                if old.seq <= event.seq:
                    await self._send_event(old, from_log=True)
            return
        await self._send_event(event, from_log=from_log)

    async def _send_event(self, event: TaskEvent, from_log: bool = False) -> None:
        if event.seq <= self.seen.get(event.task_id, 0):
            return
        self.seen[event.task_id] = event.seq
        if event.task_id in self.tasks:
            self.tasks[event.task_id] = event.seq
        await self._send_text(self.hub.wire(event))
        self.sent += 1
        if from_log:
            self.hub.replayed(1)

    async def send_message(self, message: dict[str, Any]) -> None:
        """A control message (subscribed, heartbeat, pong, error ...)."""
        await self._send_text(encode_message(message))

    async def _send_text(self, text: str) -> None:
        self._last_sent = time.monotonic()
        await self._send(text)

    async def pump(self, heartbeat_s: float) -> None:
        """Deliver queued events until cancelled; heartbeat when idle; resync after overflow.

        One timer wakes the pump when the connection may have been idle for ``heartbeat_s``;
        it is re-armed only when it has fired, so a busy connection pays nothing per event."""
        loop = asyncio.get_running_loop()
        beat = loop.call_later(heartbeat_s, self._beat_due)
        try:
            while True:
                if not self.pending and self.overflow_from is None:
                    idle_for = time.monotonic() - self._last_sent
                    if idle_for >= heartbeat_s:
                        await self.send_message({"type": "heartbeat", "timestamp": time.time()})
                        idle_for = 0.0
                    if self._beat_fired:  # arm the timer for the next possible beat
                        self._beat_fired = False
                        delay = max(heartbeat_s - idle_for, 0.001)
                        beat = loop.call_later(delay, self._beat_due)
                    self._wakeup = loop.create_future()
                    try:
                        await self._wakeup
                    finally:
                        self._wakeup = None
                    continue
                async with self._lock:
                    await self._drain()
        finally:
            beat.cancel()

    def _beat_due(self) -> None:
        self._beat_fired = True
        self._wake()

    async def _drain(self) -> None:
        """Deliver what is queued (a catch-up from the log first, after an overflow)."""
        if self.overflow_from is not None:
            start, self.overflow_from = self.overflow_from, None
            self.catch_ups += 1
            self.pending.clear()
            log.info("client %s fell behind: catching up from event %d", self.user_id, start)
            await self._replay_since(start - 1, None)
            return
        while self.pending and self.overflow_from is None:
            event = self.pending.popleft()
            if self.wants(event):
                await self._deliver(event)


class LiveState(EventLog, TaskStore, Protocol):
    """What the live hub reads: the event log (catch-up and replays) and the task records (whose
    task a subscription names). ``SqliteState`` and ``PostgresState`` are both."""


class LiveEvents:
    """The runtime sink that fans stored events out to connections on the server's loop."""

    def __init__(self, state: LiveState, metrics: RunnerMetrics | None = None) -> None:
        self.state = state
        self.metrics = metrics
        self.replayed_total = 0
        self.clients = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._by_task: dict[str, set[Connection]] = {}
        self._by_project: dict[str, set[Connection]] = {}
        self._interests: dict[Connection, tuple[set[str], set[str]]] = {}
        self._wire: dict[int, str] = {}  # event id -> JSON text, the most recent events

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def stop(self) -> None:
        self._loop = None

    @property
    def connections(self) -> int:
        return len(self._interests)

    def replayed(self, count: int) -> None:
        """Count events sent to a client from the durable log (replay, gap fill, catch-up)."""
        self.replayed_total += count
        if self.metrics is not None:
            self.metrics.events_replayed.inc(count)

    def client_connected(self, delta: int) -> None:
        """A WebSocket client connected (+1) or left (-1)."""
        self.clients += delta
        if self.metrics is not None:
            self.metrics.websocket_clients.set(self.clients)

    # -- EventSink: called from runner threads after the event is stored ------------------

    def emit(self, event: TaskEvent) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # loop closing: the log keeps the event
            loop.call_soon_threadsafe(self.dispatch, event)

    # -- on the loop ----------------------------------------------------------------------

    def dispatch(self, event: TaskEvent) -> None:
        targets = set(self._by_task.get(event.task_id, ()))
        if event.project_id is not None:
            targets |= self._by_project.get(event.project_id, set())
        if targets:
            self.wire(event)  # encoded once here, for every connection
        for conn in targets:
            conn.offer(event)

    def wire(self, event: TaskEvent) -> str:
        """The event's JSON text, encoded once and shared by every connection that sends it."""
        text = self._wire.get(event.id)
        if text is None:
            text = self._wire[event.id] = encode_event(event)
            if len(self._wire) > _WIRE_CACHE:
                del self._wire[next(iter(self._wire))]
        return text

    def register(self, conn: Connection) -> None:
        """(Re)index a connection's interests; call again after they change."""
        self.unregister(conn)
        tasks, projects = set(conn.tasks), set(conn.projects)
        self._interests[conn] = (tasks, projects)
        for t in tasks:
            self._by_task.setdefault(t, set()).add(conn)
        for p in projects:
            self._by_project.setdefault(p, set()).add(conn)

    def unregister(self, conn: Connection) -> None:
        tasks, projects = self._interests.pop(conn, (set(), set()))
        for t in tasks:
            peers = self._by_task.get(t)
            if peers is not None:
                peers.discard(conn)
                if not peers:
                    del self._by_task[t]
        for p in projects:
            peers = self._by_project.get(p)
            if peers is not None:
                peers.discard(conn)
                if not peers:
                    del self._by_project[p]
