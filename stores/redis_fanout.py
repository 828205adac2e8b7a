"""Live events across processes: Redis Streams as the fast path, the PostgreSQL log as the truth.

Writers (API replicas, workers) ``XADD`` each event to one stream after storing it
(``RedisPublisher``, an event sink). Each API replica runs one ``EventFeed``: it reads the stream
and hands its local sinks every event of the log exactly once, in global ``id`` order:

- an event with the next id is passed on at once;
- an event further ahead means a gap (concurrent writers publish out of order, a publisher died
  between its commit and its XADD, Redis lost entries): the feed reads the log after the last id
  it passed on, and passes on what it finds;
- an event at or below the last id is a duplicate and is dropped;
- every ``tail_s`` (and at once after any Redis error) it reads the log too, so that a lost last
  event or a Redis outage delays delivery by at most ``tail_s`` and loses nothing.

Ids commit in id order (``stores.postgres.schema``), so "read after the last id" never skips.
Clients resume by ``last_seq`` / ``last_id`` from the same log on any replica (``server.live``).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

import redis

from graph_runtime.events import EventLog, EventSink, TaskEvent

log = logging.getLogger(__name__)
STREAM = "takeflow:events"
STREAM_MAXLEN = 100_000


def _encode(event: TaskEvent) -> dict[str, str]:
    return {
        "e": json.dumps(
            {
                "type": event.type,
                "task_id": event.task_id,
                "seq": event.seq,
                "id": event.id,
                "timestamp": event.timestamp,
                "project_id": event.project_id,
                "data": event.data,
            },
            default=str,
            separators=(",", ":"),
        )
    }


def _decode(fields: dict[bytes, bytes]) -> TaskEvent:
    body = json.loads(fields[b"e"])
    return TaskEvent(
        body["type"],
        body["task_id"],
        body["seq"],
        body["id"],
        body["timestamp"],
        body["project_id"],
        body["data"],
    )


class RedisPublisher:
    """Event sink: ``XADD`` to the shared stream once the event's transaction has committed
    (``state.after_commit``). Never raises: the log already holds the event and every feed's
    log tail delivers it if Redis does not."""

    def __init__(self, url: str, state: Any = None, stream: str = STREAM) -> None:
        self.stream = stream
        self.state = state
        self.client = redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
        self._warned_at = 0.0

    def emit(self, event: TaskEvent) -> None:
        if self.state is not None:
            self.state.after_commit(lambda: self._xadd(event))
        else:
            self._xadd(event)

    def _xadd(self, event: TaskEvent) -> None:
        try:
            self.client.xadd(self.stream, _encode(event), maxlen=STREAM_MAXLEN, approximate=True)  # type: ignore[arg-type]
        except redis.RedisError as exc:
            now = time.monotonic()
            if now - self._warned_at > 10:
                log.warning("redis publish failed (the log tail delivers instead): %s", exc)
                self._warned_at = now

    def close(self) -> None:
        self.client.close()


class EventFeed:
    """One per API replica: stream + log tail -> local sinks, each event once, in id order."""

    def __init__(
        self,
        log_: EventLog,
        redis_url: str | None,
        stream: str = STREAM,
        tail_s: float = 0.5,
        block_ms: int = 200,
    ) -> None:
        self.log = log_
        self.stream = stream
        self.tail_s = tail_s
        self.block_ms = block_ms
        self.client = (
            redis.Redis.from_url(redis_url, socket_timeout=2.0, socket_connect_timeout=1.0)
            if redis_url
            else None
        )
        self._sinks: list[EventSink] = []
        self._last_id = log_.last_id()  # live from now; history is replayed per client
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.from_stream = 0
        self.from_log = 0

    @property
    def last_id(self) -> int:
        return self._last_id

    def add_sink(self, sink: EventSink) -> None:
        with self._lock:
            self._sinks = [*self._sinks, sink]

    def remove_sink(self, sink: EventSink) -> None:
        with self._lock:
            self._sinks = [s for s in self._sinks if s is not sink]

    def start(self) -> None:
        """Start reading (once: later calls, e.g. from a second hub, do nothing)."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="takeflow-event-feed", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.client is not None:
            self.client.close()

    # -- delivery ------------------------------------------------------------------------------

    def _pass_on(self, event: TaskEvent) -> None:
        self._last_id = event.id
        for sink in self._sinks:
            try:
                sink.emit(event)
            except Exception:
                log.exception("event sink %r failed", sink)

    def offer(self, event: TaskEvent) -> None:
        """An event seen on the stream (or any fast path)."""
        with self._lock:
            if event.id <= self._last_id:
                return
            if event.id == self._last_id + 1:
                self.from_stream += 1
                self._pass_on(event)
                return
            self._catch_up()

    def _catch_up(self) -> None:
        while True:
            batch = self.log.read_since(self._last_id, limit=1000)
            for event in batch:
                self.from_log += 1
                self._pass_on(event)
            if len(batch) < 1000:
                return

    def catch_up(self) -> None:
        with self._lock:
            self._catch_up()

    def _run(self) -> None:
        stream_id = "$"
        next_tail = time.monotonic() + self.tail_s
        while not self._stop.is_set():
            if self.client is None:
                self._stop.wait(self.tail_s)
            else:
                try:
                    reply: Any = self.client.xread(
                        {self.stream: stream_id}, block=self.block_ms, count=500
                    )
                    for _, entries in reply or []:
                        for entry_id, fields in entries:
                            stream_id = entry_id
                            self.offer(_decode(fields))
                except redis.RedisError:
                    stream_id = "$"  # after an outage: live from now, the log covers the rest
                    next_tail = 0.0
                    self._stop.wait(min(self.tail_s, 0.25))
            if time.monotonic() >= next_tail:
                try:
                    self.catch_up()
                except Exception:
                    log.exception("event log tail failed")
                next_tail = time.monotonic() + self.tail_s
