"""One commit queue per project: every git commit Takeflow makes (takes, uploads, the active
take, saved canvases) goes through it.

A commit that fails (a stale lock, git missing) does not fail what was stored: its paths wait in
the queue's backlog and go into the project's next commit. The last failure is the server's git
health (``/health`` reports it, degraded) until a commit succeeds again.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry import context as otel_context

from dagster_defs.observability import RunnerMetrics, tracer
from graph_runtime.errors import GitError
from graph_runtime.projects import ProjectStore

log = logging.getLogger(__name__)


class GitHealth:
    """The last commit failure across projects (None once a commit succeeds again)."""

    def __init__(self) -> None:
        self.error: str | None = None

    def failed(self, message: str) -> None:
        self.error = message

    def succeeded(self) -> None:
        self.error = None


class CommitQueue:
    """Commits of one project, with the backlog of paths whose commit failed."""

    def __init__(self, project: ProjectStore, health: GitHealth, metrics: RunnerMetrics) -> None:
        self.project = project
        self._health = health
        self._metrics = metrics
        self._backlog: set[str] = set()
        self._lock = threading.Lock()

    @property
    def backlog(self) -> list[str]:
        with self._lock:
            return sorted(self._backlog)

    def commit(
        self,
        paths: Sequence[str],
        message: str,
        trace_context: otel_context.Context | None = None,
    ) -> str | None:
        """Commit ``paths`` and any backlog; the sha, or None when git failed (kept for later)."""
        with self._lock:
            pending = sorted({*paths, *self._backlog})
        started = time.perf_counter()
        try:
            with tracer.start_as_current_span(
                "takeflow.git.commit",
                context=trace_context,
                attributes={"takeflow.project": self.project.id},
            ):
                sha = self.project.history.commit(pending, message)
        except GitError as exc:
            log.warning("git commit failed in project %s: %s", self.project.id, exc.message)
            with self._lock:
                self._backlog.update(paths)
            self._health.failed(exc.message)
            return None
        self._metrics.git_commit_seconds.observe(time.perf_counter() - started)
        with self._lock:
            self._backlog.difference_update(pending)
        self._health.succeeded()
        return sha


class ProjectHistories:
    """The commit queues of a runtime, one per project (made on first use)."""

    def __init__(
        self,
        metrics: RunnerMetrics,
        git_writer: Callable[[str], contextlib.AbstractContextManager[Any]] | None = None,
    ) -> None:
        self._writer = git_writer or (lambda project_id: contextlib.nullcontext())
        self.health = GitHealth()
        self._metrics = metrics
        self._queues: dict[str, CommitQueue] = {}
        self._lock = threading.Lock()

    def of(self, project: ProjectStore) -> CommitQueue:
        with self._lock:
            queue = self._queues.get(project.id)
            if queue is None:
                queue = CommitQueue(project, self.health, self._metrics)
                self._queues[project.id] = queue
            return queue

    def commit(
        self,
        project: ProjectStore,
        paths: Sequence[str],
        message: str,
        trace_context: otel_context.Context | None = None,
    ) -> str | None:
        """Commit through the project's queue, as its one writer (across processes too)."""
        with self._writer(project.id):
            return self.of(project).commit(paths, message, trace_context)

    @property
    def git_error(self) -> str | None:
        return self.health.error
