"""Live ComfyUI messages: Takeflow events in, per-client WebSocket messages out, none lost.

One dispatcher on the event loop turns each stored event of a ComfyUI prompt into that prompt's
messages (``server.comfy.stream``) and offers them to the prompt's client, if connected. The
events are every process's (``runtime.events``: in distributed mode the replica's feed), and
the prompts are looked up in the shared store, so a prompt taken by any replica streams to its
client on any replica. A connection sends each message at most once: per prompt it keeps the
index of the last message sent, kept in memory and saved to the store, so a client that
reconnects with the same ``clientId`` (even after a server restart, or to another replica) is
first sent what it missed, rebuilt from the durable event log, then live messages. (Moving to
another replica at once may repeat the few messages the first one sent but had not saved yet.)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import struct
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from server.comfy.bridge import Event
from server.comfy.store import PromptRow
from server.comfy.stream import (
    JPEG,
    PREVIEW_IMAGE_WITH_METADATA,
    Frame,
    Out,
    PromptStream,
    rebuild,
)
from server.socket_tasks import run_until_one_ends

if TYPE_CHECKING:
    from server.comfy.service import ComfyService

log = logging.getLogger(__name__)
REPLAY_PROMPTS = 50  # at most this many unfinished-for-the-client prompts are replayed
_FLUSH_S = 0.5
_QUEUE = 10_000
# The server's side of the feature_flags handshake (also GET /features).
SERVER_FEATURES: dict[str, Any] = {"supports_preview_metadata": True, "takeflow_replay": True}

SendText = Callable[[str], Awaitable[None]]
SendBytes = Callable[[bytes], Awaitable[None]]


class ClientConnection:
    """One ComfyUI WebSocket: sends the client's messages in order, each once."""

    def __init__(
        self,
        hub: ComfyHub,
        client_id: str,
        user: str | None,
        send_text: SendText,
        send_bytes: SendBytes,
        positions: dict[str, tuple[int, bool]],
        close: Callable[[], Awaitable[None]],
    ) -> None:
        self.hub = hub
        self.close = close
        self.stopped = asyncio.Event()
        self.client_id = client_id
        self.user = user
        self._send_text = send_text
        self._send_bytes = send_bytes
        self.positions = positions
        self.queue: asyncio.Queue[tuple[PromptRow, Out] | dict[str, Any]] = asyncio.Queue(_QUEUE)
        self.resync = False
        self.dirty: dict[str, tuple[int, bool]] = {}
        self.flags: dict[str, Any] = {}  # what the client announced in its feature_flags

    def offer(self, row: PromptRow, outs: list[Out]) -> None:
        for out in outs:
            try:
                self.queue.put_nowait((row, out))
            except asyncio.QueueFull:
                self.resync = True  # caught up from the log instead

    def offer_status(self, message: dict[str, Any]) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(message)

    async def _send(self, row: PromptRow, out: Out) -> None:
        position, _ = self.positions.get(row.prompt_id, (0, False))
        if out.index <= position:
            return  # sent already (replay and live overlap)
        if out.index > position + 1:  # a gap: fill it from the log
            missing = await self.hub.rebuild(row)
            for earlier in missing:
                if position < earlier.index < out.index:
                    await self._write(row, earlier)
        await self._write(row, out)

    async def _write(self, row: PromptRow, out: Out) -> None:
        if out.text is not None:
            await self._send_text(json.dumps(out.text, separators=(",", ":")))
        elif out.frame is not None:
            frame = out.frame
            data = await asyncio.to_thread(self.hub.service.bridge.read_file, frame.project,
                                           frame.path)  # fmt: skip
            if data is not None:  # a preview file cleaned away: nothing to send, index kept
                await self._send_bytes(self._frame_bytes(row, frame, data))
        entry = max(self.positions.get(row.prompt_id, (0, False)), (out.index, out.final))
        self.positions[row.prompt_id] = entry
        self.dirty[row.prompt_id] = entry

    def _frame_bytes(self, row: PromptRow, frame: Frame, data: bytes) -> bytes:
        """Event 4 (length, JSON metadata, image) for a preview to a client that supports
        preview metadata; else event 1 (image format, image), as ComfyUI sends them."""
        if frame.node is not None and self.flags.get("supports_preview_metadata") is True:
            metadata = json.dumps({
                "node_id": frame.node, "prompt_id": row.prompt_id,
                "display_node_id": frame.node, "parent_node_id": None,
                "real_node_id": frame.node,
                "image_type": "image/jpeg" if frame.image_format == JPEG else "image/png",
            }, separators=(",", ":")).encode()  # fmt: skip
            return struct.pack(">II", PREVIEW_IMAGE_WITH_METADATA, len(metadata)) + metadata + data
        return struct.pack(">II", frame.event_type, frame.image_format) + data

    async def receive(self, receive: Callable[[], Awaitable[Any]]) -> None:
        """Read what the client sends until it disconnects: its ``feature_flags`` are kept and
        answered with the server's; anything else is ignored, as ComfyUI does."""
        while True:
            message = await receive()
            text = message.get("text") if isinstance(message, dict) else None
            if not text:
                continue
            try:
                body = json.loads(text)
            except ValueError:
                continue
            if isinstance(body, dict) and body.get("type") == "feature_flags":
                data = body.get("data")
                self.flags = dict(data) if isinstance(data, dict) else {}
                self.offer_status({"type": "feature_flags", "data": dict(SERVER_FEATURES)})

    async def flush(self) -> None:
        if self.dirty:
            dirty, self.dirty = self.dirty, {}
            await asyncio.to_thread(self.hub.service.store.save_positions, self.client_id, dirty)

    async def replay(self) -> None:
        """Send what the client missed of its recent prompts, from the durable log."""
        rows = await asyncio.to_thread(
            self.hub.service.store.client_prompts, self.client_id, REPLAY_PROMPTS
        )
        for row in rows:
            if not self.hub.service.visible(row, self.user):
                continue
            for out in await self.hub.rebuild(row):
                await self._send(row, out)

    async def run(self) -> None:
        await self._send_text(json.dumps(await self.hub.status(self.client_id)))
        await self.replay()
        while True:
            try:
                item = await asyncio.wait_for(self.queue.get(), timeout=_FLUSH_S)
            except TimeoutError:
                await self.flush()
                continue
            if self.resync:
                self.resync = False
                while not self.queue.empty():
                    self.queue.get_nowait()
                await self.replay()
                continue
            if isinstance(item, dict):
                await self._send_text(json.dumps(item))
            else:
                await self._send(*item)


class ComfyHub:
    """Fans prompt messages out to ComfyUI clients; broadcasts queue ``status``."""

    def __init__(self, service: ComfyService) -> None:
        self.service = service
        self.connections: dict[str, ClientConnection] = {}
        self.positions: dict[str, dict[str, tuple[int, bool]]] = {}
        self.streams: dict[str, PromptStream] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._events: asyncio.Queue[Event | tuple[str, dict[str, Any]]] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._finishing: set[asyncio.Task[None]] = set()

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._events = asyncio.Queue()
        self._task = asyncio.create_task(self._dispatch_loop(), name="comfyui-dispatch")

    async def stop(self) -> None:
        self._loop = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task

    def emit(self, event: Event) -> None:
        """Called from runner or feed threads with every stored event (of any process)."""
        loop, queue = self._loop, self._events
        if loop is None or queue is None or event.task_id in self.service.other_tasks:
            return
        with contextlib.suppress(RuntimeError):  # loop closing: the log keeps the event
            loop.call_soon_threadsafe(queue.put_nowait, event)

    def history_written(self, prompt_id: str, history: dict[str, Any]) -> None:
        if self._loop is not None and self._events is not None:
            self._loop.call_soon_threadsafe(self._events.put_nowait, (prompt_id, history))

    # -- dispatch ---------------------------------------------------------------------------

    async def status(self, sid: str | None = None) -> dict[str, Any]:
        remaining = await asyncio.to_thread(self.service.queue_remaining)
        data: dict[str, Any] = {"status": {"exec_info": {"queue_remaining": remaining}}}
        if sid is not None:
            data["sid"] = sid
        return {"type": "status", "data": data}

    async def broadcast_status(self) -> None:
        if not self.connections:
            return
        message = await self.status()
        for conn in self.connections.values():
            conn.offer_status(message)

    async def rebuild(self, row: PromptRow) -> list[Out]:
        fresh = await asyncio.to_thread(self.service.store.get, row.prompt_id)
        events = await asyncio.to_thread(self.service.bridge.events, row.task_id)
        return rebuild(fresh or row, events)

    def _deliver(self, row: PromptRow, outs: list[Out]) -> None:
        conn = self.connections.get(row.client_id or "")
        if outs and conn is not None and self.service.visible(row, conn.user):
            conn.offer(row, outs)

    async def _dispatch_loop(self) -> None:
        assert self._events is not None
        while True:
            item = await self._events.get()
            try:
                if isinstance(item, Event):
                    await self._on_event(item)
                else:
                    await self._on_history(*item)
            except Exception:  # one bad event must not stop the others
                log.exception("ComfyUI dispatch failed for %r", item)

    async def _on_event(self, event: Event) -> None:
        prompt_id = self.service.task_prompts.get(event.task_id)
        if prompt_id is None and event.task_id not in self.service.other_tasks:
            prompt_id = await asyncio.to_thread(self.service.prompt_of, event.task_id)
        row = await self.service.row(prompt_id) if prompt_id else None
        if row is None:
            return
        stream = self.streams.get(row.prompt_id)
        outs: list[Out] = []
        if stream is None:
            stream = self.streams[row.prompt_id] = PromptStream(row)
        if event.seq > stream.seq + 1:  # missed events (dispatch started late): from the log
            for old in await asyncio.to_thread(self.service.bridge.events, row.task_id,
                                               stream.seq):  # fmt: skip
                if old.seq < event.seq:
                    outs += stream.feed(old)
        outs += stream.feed(event)
        if event.type in ("task.submitted", "task.started"):
            await self.broadcast_status()  # as ComfyUI: a start's status before execution_start
        self._deliver(row, outs)
        if event.terminal:
            finishing = asyncio.create_task(self._finish(row))
            self._finishing.add(finishing)
            finishing.add_done_callback(self._finishing.discard)

    async def _finish(self, row: PromptRow) -> None:
        """Write the history (or wait for the replica that writes it), then close the
        prompt's stream."""
        try:
            history = await asyncio.to_thread(self.service.settle_history, row.prompt_id)
        except Exception:
            log.exception("could not write the history of prompt %s", row.prompt_id)
            return
        if history is not None:
            self.history_written(row.prompt_id, history)

    async def _on_history(self, prompt_id: str, history: dict[str, Any]) -> None:
        row = await self.service.row(prompt_id)
        if row is None:
            return
        stream = self.streams.pop(prompt_id, None)
        if stream is None:  # finished before this process saw its events: rebuild
            stream = PromptStream(row)
            outs: list[Out] = []
            for event in await asyncio.to_thread(self.service.bridge.events, row.task_id):
                outs += stream.feed(event)
            self._deliver(row, outs)
        closing = stream.finish(history)
        # as ComfyUI: the queue's status (the prompt now in the history) before executing null
        self._deliver(row, closing[:-1])
        await self.broadcast_status()
        self._deliver(row, closing[-1:])
        self.service.forget(prompt_id)
        self.service.task_prompts.pop(row.task_id, None)

    # -- connections ------------------------------------------------------------------------

    async def serve(
        self,
        client_id: str,
        user: str | None,
        send_text: SendText,
        send_bytes: SendBytes,
        close: Callable[[], Awaitable[None]],
        receive: Callable[[], Awaitable[Any]],
    ) -> None:
        """Run one client's socket until it closes; a newer socket of the same client wins."""
        lock = self._locks.setdefault(client_id, asyncio.Lock())
        async with lock:
            old = self.connections.pop(client_id, None)
            if old is not None:  # ComfyUI: the newer socket replaces the older one
                with contextlib.suppress(Exception):
                    await old.close()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(old.stopped.wait(), 10)
            # what this process sent lately, and what another replica saved
            positions = self.positions.setdefault(client_id, {})
            stored = await asyncio.to_thread(self.service.store.positions, client_id)
            for prompt_id, entry in stored.items():
                positions[prompt_id] = max(positions.get(prompt_id, (0, False)), entry)
            conn = ClientConnection(self, client_id, user, send_text, send_bytes,
                                    self.positions[client_id], close)  # fmt: skip
            self.connections[client_id] = conn
        try:
            await run_until_one_ends(
                {
                    f"comfyui-ws-{client_id}": conn.run(),
                    f"comfyui-recv-{client_id}": conn.receive(receive),
                }
            )
        finally:
            with contextlib.suppress(Exception):
                await conn.flush()
            if self.connections.get(client_id) is conn:
                del self.connections[client_id]
            conn.stopped.set()
