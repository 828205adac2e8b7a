"""Limits on running templates: a time limit per node and a memory guard for the process.

Every node that runs registers a ``NodeHandle`` here; the watchdog thread is the only writer of
a handle's stop state (through its task's ``StopSignal``). A template is first asked to stop at
its next progress call; after a grace period it is interrupted by an exception raised inside its
worker thread (between Python calls; a template blocked inside one C call stops when it
returns). When the process goes over its memory limit, the template that grew it most is
stopped.
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
import time
from dataclasses import dataclass, field

from graph_runtime.errors import (
    TakeflowError,
    TaskCancelledError,
    TemplateMemoryError,
    TemplateTimeoutError,
)

log = logging.getLogger(__name__)


class TemplateInterrupt(Exception):
    """Raised inside a worker thread whose template ignored its stop request."""


def raise_in_thread(thread_id: int, exc_type: type[BaseException]) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(exc_type)
    )


def rss_bytes() -> int:
    """Resident memory of this process (Linux ``/proc``; 0 where unavailable)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


class StopSignal:
    """How a running task is asked to stop: a cancel (from a client) or a stop error (time or
    memory limit, shutdown). The first stop error wins; templates see it at their next
    progress call."""

    def __init__(self) -> None:
        self.cancel = threading.Event()
        self._error: TakeflowError | None = None
        self._lock = threading.Lock()

    @property
    def error(self) -> TakeflowError | None:
        return self._error

    def request_cancel(self) -> None:
        self.cancel.set()

    def stop(self, error: TakeflowError) -> bool:
        """Stop with ``error``; False when another stop came first."""
        with self._lock:
            if self._error is not None:
                return False
            self._error = error
        self.cancel.set()
        return True

    def check(self, node_id: str) -> None:
        """Raise the stop error, or ``TaskCancelledError`` once cancelled."""
        if self._error is not None:
            raise self._error
        if self.cancel.is_set():
            raise TaskCancelledError("task was cancelled", node_id=node_id)


@dataclass(eq=False)
class NodeHandle:
    """One node running now: what the watchdog needs to stop it."""

    node_id: str
    template_id: str
    limit_s: float
    signal: StopSignal
    thread_id: int = field(default_factory=threading.get_ident)
    since: float = field(default_factory=time.monotonic)
    rss_at_start: int = field(default_factory=rss_bytes)
    interrupted: bool = False  # written by the watchdog only

    def interrupt(self) -> None:
        if not self.interrupted:
            self.interrupted = True
            raise_in_thread(self.thread_id, TemplateInterrupt)


class Limits:
    """The registry of running nodes and the watchdog thread that enforces their limits."""

    def __init__(
        self,
        node_timeout_s: float = 3600.0,
        memory_limit_mb: float | None = None,
        interval_s: float = 0.25,
        grace_s: float = 2.0,
    ) -> None:
        self.node_timeout_s = node_timeout_s
        self.memory_limit_mb = memory_limit_mb
        self.interval_s = interval_s
        self.grace_s = grace_s
        self._running: set[NodeHandle] = set()
        self._lock = threading.Lock()
        self._memory_tripped = False
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._watch, name="takeflow-watchdog", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._closed.set()

    def node_started(
        self, node_id: str, template_id: str, timeout_s: float | None, signal: StopSignal
    ) -> NodeHandle:
        handle = NodeHandle(node_id, template_id, timeout_s or self.node_timeout_s, signal)
        with self._lock:
            self._running.add(handle)
        return handle

    def node_ended(self, handle: NodeHandle) -> None:
        with self._lock:
            self._running.discard(handle)

    def running(self) -> list[NodeHandle]:
        with self._lock:
            return list(self._running)

    def _watch(self) -> None:
        while not self._closed.wait(self.interval_s):
            if self.memory_limit_mb:
                self.check_memory(self.memory_limit_mb)
            self.check_time(time.monotonic())

    def check_time(self, now: float) -> None:
        for handle in self.running():
            overdue = now - handle.since - handle.limit_s
            if overdue <= 0:
                continue
            error = TemplateTimeoutError(handle.node_id, handle.template_id, handle.limit_s)
            if not handle.signal.stop(error) and overdue > self.grace_s:
                handle.interrupt()

    def check_memory(self, limit_mb: float) -> None:
        rss = rss_bytes()
        if rss <= limit_mb * 2**20:
            self._memory_tripped = False
            return
        if self._memory_tripped:  # already stopped one; wait for memory to come back
            return
        candidates = [h for h in self.running() if h.signal.error is None]
        if not candidates:
            return
        culprit = max(candidates, key=lambda h: rss - h.rss_at_start)
        error = TemplateMemoryError(culprit.node_id, culprit.template_id, rss / 2**20, limit_mb)
        culprit.signal.stop(error)
        self._memory_tripped = True
        culprit.interrupt()
