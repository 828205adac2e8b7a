"""``/ws/{user_id}``: subscribe to tasks and projects; every event once, in order, then live.

Client messages (JSON text):
``{"type": "subscribe", "task_ids": [...], "project_ids": [...], "last_seq": {task_id: n},
"last_id": m}``, ``{"type": "unsubscribe", "task_ids": [...], "project_ids": [...]}``,
``{"type": "ping"}``. Server messages: events (``TaskEvent.to_dict()``), ``subscribed`` once a
subscription's replay is done, ``heartbeat`` when idle, ``pong`` and ``error``. With auth on, a
subscription naming another project, or a task of another project (or an unknown task), is
refused whole with an ``error`` (``forbidden`` / ``task_not_found``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from litestar import WebSocket, websocket
from litestar.di import NamedDependency
from litestar.exceptions import WebSocketDisconnect
from litestar.params import FromPath

from graph_runtime.errors import TakeflowError, TaskNotFoundError
from server.auth import Principal
from server.config import ServerConfig
from server.live import Connection, LiveEvents, Subscription
from server.socket_tasks import run_until_one_ends

log = logging.getLogger(__name__)


@websocket("/ws/{user_id:str}")
async def events_socket(
    socket: WebSocket[Any, Any, Any],
    user_id: FromPath[str],
    hub: NamedDependency[LiveEvents],
    config: NamedDependency[ServerConfig],
) -> None:
    await socket.accept()
    hub.client_connected(+1)
    send_lock = asyncio.Lock()

    async def send(text: str) -> None:
        async with send_lock:
            await socket.send_text(text)

    conn = Connection(hub, user_id, send, config.ws_queue_size)
    try:
        ended = await run_until_one_ends(
            {
                f"ws-pump-{user_id}": conn.pump(config.heartbeat_s),
                f"ws-recv-{user_id}": _receive(socket, conn),
            }
        )
        for exc in ended:
            if not isinstance(exc, WebSocketDisconnect | OSError):
                log.warning("websocket of %s ended: %r", user_id, exc)
    finally:
        hub.client_connected(-1)
        hub.unregister(conn)
        with contextlib.suppress(Exception):
            await socket.close()


async def _receive(socket: WebSocket[Any, Any, Any], conn: Connection) -> None:
    send = conn.send_message
    while True:
        raw = await socket.receive_text()
        try:
            message = json.loads(raw)
            if not isinstance(message, dict):
                raise ValueError("a message must be a JSON object")
            kind = message.get("type")
            if kind == "subscribe":
                sub = Subscription.parse(message)
                principal = socket.scope.get("user")
                if isinstance(principal, Principal):
                    await asyncio.to_thread(_authorize, conn, principal, sub)
                await conn.subscribe(sub)
            elif kind == "unsubscribe":
                sub = Subscription.parse(message)
                conn.unsubscribe(sub.task_ids, sub.project_ids)
                await send(
                    {
                        "type": "unsubscribed",
                        "task_ids": sub.task_ids,
                        "project_ids": sub.project_ids,
                    }
                )
            elif kind == "ping":
                await send({"type": "pong"})
            else:
                raise ValueError(f"unknown message type {kind!r} (subscribe, unsubscribe, ping)")
        except ValueError as exc:  # json.JSONDecodeError is a ValueError
            await send({"type": "error", "code": "invalid_message", "message": str(exc)})
        except TakeflowError as exc:
            await send({"type": "error", **exc.to_dict()})


def _authorize(conn: Connection, principal: Principal, sub: Subscription) -> None:
    """Every project and task of a subscription must be the caller's (else nothing changes)."""
    for project_id in sub.project_ids:
        principal.require(project_id, "the events of project")
    for task_id in sub.task_ids:
        record = conn.hub.state.get(task_id)
        if record is None:
            raise TaskNotFoundError(f"no task '{task_id}'", task_id=task_id)
        principal.require_task(record.project_id, record.user, task_id)
