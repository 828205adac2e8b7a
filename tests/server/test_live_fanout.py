"""The fan-out's cost model: one encoding per event for every connection, heartbeats only on
idle connections (under asyncio and uvloop, which ``serve`` runs on), the same JSON as before."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

import server.live
from graph_runtime.events import TaskEvent
from server.live import Connection, LiveEvents, Subscription, encode_event
from stores.sqlite_state import SqliteState


def _loops() -> list[Any]:
    loops: list[Any] = [pytest.param(asyncio.new_event_loop, id="asyncio")]
    try:
        import uvloop

        loops.append(pytest.param(uvloop.new_event_loop, id="uvloop"))
    except ImportError:
        pass
    return loops


def _run(
    loop_factory: Callable[[], asyncio.AbstractEventLoop], main: Coroutine[Any, Any, None]
) -> None:
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(main)


class Recorder:
    def __init__(self) -> None:
        self.texts: list[str] = []
        self.times: list[float] = []

    async def send(self, text: str) -> None:
        self.texts.append(text)
        self.times.append(time.monotonic())

    def silences_before_heartbeats(self) -> list[float]:
        """For each heartbeat, the time since the message before it."""
        return [
            self.times[i] - self.times[i - 1]
            for i, text in enumerate(self.texts)
            if i > 0 and '"heartbeat"' in text
        ]

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in map(json.loads, self.texts) if m.get("type") == kind]


def test_an_event_is_encoded_once_for_every_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []

    def counting(event: TaskEvent) -> str:
        calls.append(event.id)
        return encode_event(event)

    monkeypatch.setattr(server.live, "encode_event", counting)

    async def scenario() -> None:
        state = SqliteState(tmp_path / "state.db")
        hub = LiveEvents(state)
        hub.start(asyncio.get_running_loop())
        clients = [Recorder() for _ in range(50)]
        conns = [Connection(hub, f"u{i}", c.send, queue_size=16) for i, c in enumerate(clients)]
        pumps = [asyncio.create_task(c.pump(heartbeat_s=30)) for c in conns]
        for conn in conns:
            await conn.subscribe(Subscription(project_ids=["film"]))
        events = [state.append("task.progress", "t1", "film", {"i": i}) for i in range(5)]
        for event in events:
            hub.dispatch(event)
        async with asyncio.timeout(5):
            while any(len(c.of_type("task.progress")) < 5 for c in clients):
                await asyncio.sleep(0.01)
        assert sorted(calls) == [e.id for e in events]  # once each, not once per connection
        first = [t for t in clients[0].texts if '"task.progress"' in t]
        assert all([t for t in c.texts if '"task.progress"' in t] == first for c in clients)
        for pump in pumps:
            pump.cancel()
        state.close()

    asyncio.run(scenario())


@pytest.mark.parametrize("loop_factory", _loops())
def test_heartbeats_only_when_idle(
    tmp_path: Path, loop_factory: Callable[[], asyncio.AbstractEventLoop]
) -> None:
    async def scenario() -> None:
        state = SqliteState(tmp_path / "state.db")
        hub = LiveEvents(state)
        hub.start(asyncio.get_running_loop())
        idle, busy = Recorder(), Recorder()
        idle_conn = Connection(hub, "idle", idle.send, queue_size=64)
        busy_conn = Connection(hub, "busy", busy.send, queue_size=64)
        pumps = [asyncio.create_task(c.pump(heartbeat_s=0.1)) for c in (idle_conn, busy_conn)]
        await busy_conn.subscribe(Subscription(task_ids=["t1"]))
        for i in range(60):  # busy: an event every 10 ms for 0.6 s or more
            hub.dispatch(state.append("task.progress", "t1", None, {"i": i}))
            await asyncio.sleep(0.01)
        assert len(busy.of_type("task.progress")) == 60
        assert len(idle.of_type("heartbeat")) >= 3
        await asyncio.sleep(0.35)  # now the busy one is idle too
        assert len(busy.of_type("heartbeat")) >= 2
        for client in (idle, busy):  # a heartbeat only ever follows 0.1 s of silence
            assert all(gap >= 0.1 - 0.01 for gap in client.silences_before_heartbeats())
        for pump in pumps:
            pump.cancel()
        state.close()

    _run(loop_factory, scenario())


def test_the_wire_json_is_what_json_dumps_made() -> None:
    event = TaskEvent(
        "node.state",
        "task_1",
        3,
        42,
        1795670562.0123,
        None,
        {
            "node_id": "gen",
            "state": "failed",
            "progress": 0.5,
            "error": {"code": "template_failed", "message": "naïve — ✓", "details": [1, None]},
            "path": Path("03_Renders/take_001/image.png"),
            "flags": (True, False),
        },
    )
    before = json.dumps(event.to_dict(), default=str, separators=(",", ":"))
    assert json.loads(encode_event(event)) == json.loads(before)
