"""The live fan-out over a real event log: slow clients, overflow, out-of-order and late joins."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from server.live import Connection, LiveEvents, Subscription
from stores.sqlite_state import SqliteState


class SlowClient:
    """The client end of a connection: records what is sent, can stall like a slow network."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.open = asyncio.Event()
        self.open.set()

    async def send(self, text: str) -> None:
        await self.open.wait()
        self.received.append(json.loads(text))

    def seqs(self, task_id: str) -> list[int]:
        return [m["seq"] for m in self.received if m.get("data", {}).get("task_id") == task_id]


async def _settle(client: SlowClient, task_id: str, count: int, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while len(client.seqs(task_id)) < count:
            await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)  # anything extra (a duplicate) would show up now


def _hub(tmp_path: Path) -> tuple[SqliteState, LiveEvents]:
    state = SqliteState(tmp_path / "state.db")
    hub = LiveEvents(state)
    hub.start(asyncio.get_running_loop())
    return state, hub


def test_stalled_client_overflows_and_is_caught_up_from_the_log(tmp_path: Path) -> None:
    async def scenario() -> None:
        state, hub = _hub(tmp_path)
        client = SlowClient()
        conn = Connection(hub, "slow", client.send, queue_size=4)
        pump = asyncio.create_task(conn.pump(heartbeat_s=30))
        await conn.subscribe(Subscription(task_ids=["t1"]))
        client.open.clear()  # the network stalls
        for i in range(300):
            hub.emit(state.append("task.progress", "t1", None, {"i": i}))
        await asyncio.sleep(0.05)
        client.open.set()
        await _settle(client, "t1", 300)
        assert client.seqs("t1") == list(range(1, 301))
        assert conn.catch_ups >= 1  # the queue did overflow: the log filled the gap
        pump.cancel()
        state.close()

    asyncio.run(scenario())


def test_out_of_order_events_are_delivered_in_sequence_once(tmp_path: Path) -> None:
    async def scenario() -> None:
        state, hub = _hub(tmp_path)
        client = SlowClient()
        conn = Connection(hub, "u", client.send, queue_size=100)
        pump = asyncio.create_task(conn.pump(heartbeat_s=30))
        await conn.subscribe(Subscription(task_ids=["t1"]))
        events = [state.append("task.progress", "t1", None, {"i": i}) for i in range(6)]
        for event in (events[0], events[3], events[1], events[2], events[5], events[4]):
            hub.dispatch(event)  # a runner thread was slower to hand some over
        await _settle(client, "t1", 6)
        assert client.seqs("t1") == [1, 2, 3, 4, 5, 6]
        pump.cancel()
        state.close()

    asyncio.run(scenario())


def test_late_project_subscriber_gets_history_after_its_position_then_live(tmp_path: Path) -> None:
    async def scenario() -> None:
        state, hub = _hub(tmp_path)
        old = state.append("task.submitted", "t0", "film", {})
        first = state.append("task.submitted", "t1", "film", {})
        state.append("task.submitted", "other", "elsewhere", {})
        state.append("task.started", "t1", "film", {})
        client = SlowClient()
        conn = Connection(hub, "u", client.send, queue_size=100)
        pump = asyncio.create_task(conn.pump(heartbeat_s=30))
        await conn.subscribe(Subscription(project_ids=["film"], last_id=old.id))
        assert first.id > old.id
        hub.dispatch(state.append("task.completed", "t1", "film", {}))
        hub.dispatch(state.append("task.started", "t0", "film", {}))  # t0 seq 2: seq 1 was seen
        await _settle(client, "t1", 3)
        await _settle(client, "t0", 1)
        assert client.seqs("t1") == [1, 2, 3]
        assert client.seqs("t0") == [2]
        assert client.seqs("other") == []
        assert [m["type"] for m in client.received if "seq" not in m] == ["subscribed"]
        pump.cancel()
        state.close()

    asyncio.run(scenario())


def test_subscribe_message_is_checked() -> None:
    sub = Subscription.parse({"type": "subscribe", "last_seq": {"t9": 4}, "project_ids": ["p"]})
    assert sub.task_ids == ["t9"] and sub.last_seq == {"t9": 4}
    for bad, match in (
        ({"task_ids": "t1"}, "'task_ids' must be a list"),
        ({"last_seq": {"t": "4"}}, "'last_seq' must map"),
        ({"last_id": -2}, "'last_id' must be an integer"),
    ):
        with pytest.raises(ValueError, match=match):
            Subscription.parse(bad)
