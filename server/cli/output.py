"""Terminal renderers: per-node progress lines, one batch line, and error listings."""

from __future__ import annotations

import sys
import threading
from collections.abc import Mapping
from typing import IO, Any

from graph_runtime.errors import GraphValidationError, TakeflowError
from graph_runtime.events import (
    NodeState,
    NodeStateChanged,
    TaskCancelled,
    TaskCompleted,
    TaskEvent,
    TaskFailed,
    TaskProgress,
)


class ProgressBars:
    """An event sink that draws one progress line per node on a terminal."""

    def __init__(self, task_id: str, nodes: list[str], stream: IO[str] = sys.stderr) -> None:
        self.task_id = task_id
        self.stream = stream
        self.interactive = bool(getattr(stream, "isatty", lambda: False)())
        self.state = {n: ("queued", 0.0, "") for n in nodes}
        self._lock = threading.Lock()
        self._drawn = False
        self.finished = threading.Event()
        self.terminal: TaskEvent | None = None

    def emit(self, event: TaskEvent) -> None:
        if event.task_id != self.task_id:
            return
        with self._lock:
            match event.payload:
                case NodeStateChanged(node_id=node, state=state) if node in self.state:
                    frac = 1.0 if state == NodeState.COMPLETED else self.state[node][1]
                    self.state[node] = (state.value, frac, "")
                    self._draw(force=not self.interactive, node=node)
                case TaskProgress(node_id=node, node_progress=frac, stage=stage) if (
                    node in self.state
                ):
                    self.state[node] = ("running", frac, stage)
                    self._draw()
                case TaskCompleted() | TaskFailed() | TaskCancelled():
                    self.terminal = event
                    self.finished.set()

    def _draw(self, force: bool = False, node: str | None = None) -> None:
        if not self.interactive:
            if force and node:
                state, _, _ = self.state[node]
                self.stream.write(f"  {node:<20} {state}\n")
            return
        if self._drawn:
            self.stream.write(f"\x1b[{len(self.state)}A")
        for name, (state, frac, stage) in self.state.items():
            filled = int(frac * 24)
            bar = "#" * filled + "-" * (24 - filled)
            self.stream.write(f"\x1b[2K  {name:<20} [{bar}] {frac * 100:5.1f}% {state} {stage}\n")
        self._drawn = True
        self.stream.flush()


class BatchBar:
    """One progress line for a whole batch (an adapter of ``BatchProgress``)."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream = stream or sys.stderr
        self.interactive = bool(getattr(stream, "isatty", lambda: False)())
        self._last_finished = -1
        self._lock = threading.Lock()

    def __call__(self, progress: Any) -> None:
        s = progress.summary()
        with self._lock:
            if self.interactive:
                bar = "#" * int(s["progress"] * 30)
                self.stream.write(
                    f"\r\x1b[2K  batch [{bar:-<30}] {s['progress'] * 100:5.1f}% "
                    f"{s['finished']}/{s['total']} done, {s['failed']} failed"
                )
                self.stream.flush()
            elif s["finished"] != self._last_finished:
                self._last_finished = s["finished"]
                self.stream.write(
                    f"  batch {s['finished']}/{s['total']} done ({s['progress'] * 100:.0f}%), "
                    f"{s['failed']} failed\n"
                )


def print_error(exc: TakeflowError) -> None:
    """Every issue of an invalid graph, or ``error: [code] message`` for any other error."""
    if isinstance(exc, GraphValidationError):
        print(f"error: the graph is invalid ({len(exc.issues)} problem(s)):", file=sys.stderr)
        for issue in exc.issues:
            where = (
                f"{issue.node_id}" + (f".{issue.port}" if issue.port else "")
                if issue.node_id
                else "graph"
            )
            print(f"  {where}: [{issue.code}] {issue.message}", file=sys.stderr)
    else:
        print(f"error: [{exc.code}] {exc.message}", file=sys.stderr)


def print_task_error(error: Mapping[str, Any]) -> None:
    """A failed task's stored error (``{"code", "message", ...}``), keeping its stable code."""
    code = error.get("code", TakeflowError.code)
    print(f"error: [{code}] {error.get('message', 'failed')}", file=sys.stderr)
