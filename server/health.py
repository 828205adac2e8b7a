"""``GET /health``: one check per service, plus a tiny task pushed through the whole pipeline
(and removed again, so probes leave no task, event, Dagster run or cache entry behind).

A failed check of a service the runtime cannot work without (event log, storage, Dagster,
runner, data flow) makes the server ``unhealthy``; git or LFS missing makes it ``degraded``:
takes are still stored, and committed once git is back. A template that raised or outlived its
time limit keeps ``runner`` degraded (with the reason) until it runs cleanly again or
``template_fault_window_s`` passes. ``schedules`` says whether saved schedules tick: which
process holds the ticker (``dagster_defs.ticker``) and how fresh the Dagster scheduler daemon's
heartbeat is; schedules due with no live daemon make the server ``degraded``. While a
``serve --demo`` first start builds the demo model, ``demo_model`` says so (``ok``).
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dagster_defs.runtime import Runtime
from dagster_defs.ticker import HEARTBEAT_FRESH_S, ScheduleTicker, heartbeat_ages, scan_schedules
from graph_runtime.canvas import RunContext, single_node_graph
from graph_runtime.events import EventType, NodeState, NodeStateChanged, TaskEvent
from graph_runtime.tasks import TaskRecord, TaskStatus
from nodes.diffusion.demo import demo_model_preparing

OK, DEGRADED, FAILED = "ok", "degraded", "failed"
CRITICAL = frozenset({"event_log", "storage", "dagster_instance", "runner", "data_flow"})
PROBE_USER = "health"


@dataclass
class Check:
    name: str
    status: str
    message: str
    duration_ms: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "message": self.message,
            "duration_ms": round(self.duration_ms, 2),
            **({"details": self.details} if self.details else {}),
        }


@dataclass(frozen=True)
class TemplateFault:
    template: str
    code: str
    message: str
    task_id: str
    at: float


class TemplateFaults:
    """An event sink remembering, per template, its last failure (raised or timed out), until
    the template completes a node again or ``window_s`` passes. Never blocks the runner."""

    FAULT_CODES = frozenset({"template_failed", "template_timeout"})

    def __init__(self, window_s: float = 300.0) -> None:
        self.window_s = window_s
        self._running: dict[tuple[str, str], str] = {}
        self._faults: dict[str, TemplateFault] = {}
        self._lock = threading.Lock()

    def emit(self, event: TaskEvent) -> None:
        if event.type != EventType.NODE_STATE:
            return
        change = event.payload
        assert isinstance(change, NodeStateChanged)
        key = (event.task_id, change.node_id)
        with self._lock:
            if change.state == NodeState.RUNNING:
                self._running[key] = (change.template or "").split("@")[0]
                return
            template = self._running.pop(key, None)
            error = change.error or {}
            template = template or error.get("template_id")
            if not template:
                return
            if change.state == NodeState.COMPLETED:
                self._faults.pop(template, None)
            elif change.state == NodeState.FAILED and error.get("code") in self.FAULT_CODES:
                self._faults[template] = TemplateFault(
                    template, error["code"], str(error.get("message", "")), event.task_id,
                    time.time(),
                )  # fmt: skip

    def active(self) -> list[TemplateFault]:
        cutoff = time.time() - self.window_s
        with self._lock:
            for name in [n for n, f in self._faults.items() if f.at < cutoff]:
                del self._faults[name]
            return sorted(self._faults.values(), key=lambda f: f.at)


class HealthChecks:
    """Runs the checks of one runtime; each is timed and turned into a ``Check``, never raises."""

    def __init__(
        self,
        runtime: Runtime,
        timeout_s: float = 10.0,
        connections: Callable[[], int] | None = None,
        template_faults: TemplateFaults | None = None,
        ticker: ScheduleTicker | None = None,
    ) -> None:
        self.runtime = runtime
        self.ticker = ticker
        self.timeout_s = timeout_s
        self.connections = connections or (lambda: 0)
        self.template_faults = template_faults or TemplateFaults()

    def _template_faults(self) -> tuple[str | None, list[dict[str, Any]]]:
        """The newest template fault as a sentence, and all recent ones."""
        faults = self.template_faults.active()
        if not faults:
            return None, []
        newest = faults[-1]
        what = "hung" if newest.code == "template_timeout" else "failed"
        reason = f"template '{newest.template}' {what} in task {newest.task_id}: {newest.message}"
        listed = [
            {"template": f.template, "code": f.code, "task_id": f.task_id, "message": f.message,
             "at": f.at}
            for f in faults
        ]  # fmt: skip
        return reason, listed

    def _event_log(self) -> Check:
        last = self.runtime.state.last_id()
        return Check(
            "event_log", OK, f"event log readable, {last} events", details={"last_id": last}
        )

    def _storage(self) -> Check:
        probe = self.runtime.home.path / f".health-{uuid.uuid4().hex[:8]}"
        payload = uuid.uuid4().bytes
        try:
            probe.write_bytes(payload)
            if probe.read_bytes() != payload:
                return Check("storage", FAILED, f"read back different bytes in {probe.parent}")
        finally:
            probe.unlink(missing_ok=True)
        usage = shutil.disk_usage(self.runtime.home.path)
        if self.runtime.runner.storage_error:
            return Check(
                "storage",
                DEGRADED,
                f"last take could not be stored: {self.runtime.runner.storage_error}",
                details={"free_bytes": usage.free},
            )
        return Check(
            "storage",
            OK,
            f"wrote and read a file in {self.runtime.home.path}",
            details={"free_bytes": usage.free},
        )

    def _dagster(self) -> Check:
        runs = self.runtime.instance.get_runs_count()
        return Check(
            "dagster_instance", OK, f"instance answers, {runs} runs stored", details={"runs": runs}
        )

    def _schedules(self) -> Check:
        """Live when the scheduler daemon's heartbeat is fresh (whoever runs it)."""
        age = heartbeat_ages(self.runtime.instance).get("SCHEDULER")
        live = age is not None and age < HEARTBEAT_FRESH_S
        if self.ticker is not None:
            details = self.ticker.status()
        else:
            projects = [p.path for p in self.runtime.projects.list()]
            details = {"state": "off", "enabled_schedules": scan_schedules(projects).enabled}
        details |= {"live": live, "heartbeat_age_s": age}
        state, holder = details["state"], details.get("holder") or "another process"
        beat = f"scheduler heartbeat {age:.0f}s ago" if age is not None else "no heartbeat yet"
        if live:
            where = "this server's Dagster daemon" if state == "ticking" else holder
            return Check("schedules", OK, f"schedules tick ({where}; {beat})", details=details)
        if state == "ticking" and (details.get("daemon_age_s") or 0) < HEARTBEAT_FRESH_S:
            return Check(
                "schedules", OK, f"the Dagster daemon is starting ({beat})", details=details
            )
        if state == "idle" or (state in ("off", "stopped") and not details["enabled_schedules"]):
            return Check("schedules", OK, "no schedule is due to tick", details=details)
        if state == "standby":
            message = f"the ticker is held by {holder}, but its daemon is not live ({beat})"
        elif state == "ticking":
            message = f"this server's Dagster daemon is not live ({beat})"
        else:
            message = (
                f"{details['enabled_schedules']} schedule(s) saved but not ticking: this server "
                "runs with --no-schedules and no daemon is live"
            )
        return Check("schedules", DEGRADED, message, details=details)

    def _git(self) -> Check:
        if shutil.which("git") is None:
            return Check(
                "git", DEGRADED, "git is not installed: takes are stored but not committed"
            )
        lfs = subprocess.run(["git", "lfs", "version"], capture_output=True, text=True, timeout=10)
        git_error = self.runtime.runner.git_error
        if git_error:
            return Check(
                "git", DEGRADED, f"last commit failed: {git_error}; takes wait uncommitted"
            )
        if lfs.returncode != 0:
            return Check(
                "git", DEGRADED, "git-lfs is not installed: media is committed as plain blobs"
            )
        return Check("git", OK, lfs.stdout.strip().split(" (")[0])

    def _runner(self) -> Check:
        runner = self.runtime.runner
        workers, alive = runner.workers_total(), runner.workers_alive()
        details: dict[str, Any] = {
            "workers": workers,
            "workers_alive": alive,
            "running": runner.running(),
            "queue_depth": runner.queue_depth(),
            "websocket_clients": self.connections(),
        }
        if workers and alive == 0:
            return Check("runner", FAILED, "no worker thread is alive", details=details)
        status = OK if alive == workers else DEGRADED
        message = f"{alive}/{workers} workers alive"
        reason, faults = self._template_faults()
        if reason:
            status, message = DEGRADED, f"{message}; {reason}"
            details["template_faults"] = faults
        return Check("runner", status, message, details=details)

    def _data_flow(self) -> Check:
        """A probe task through queue, worker, Dagster and event log, removed once it passed.

        It runs the uncacheable ``delay`` template (0 s), so its op really runs every time and
        writes no node-cache entry; a completed probe's task record, events and Dagster run are
        deleted, so probes never show up among the user's tasks, events or runs. A probe that
        fails or times out is kept (its id is in the check's details) for the operator.
        """
        graph = single_node_graph(
            "delay", {"seconds": 0.0, "steps": 1, "value": "ok"}, context=RunContext(user="health")
        )
        runner = self.runtime.runner
        record = runner.submit(graph, user=PROBE_USER, priority=100, limited=False)
        try:
            done = runner.wait(record.task_id, timeout=self.timeout_s)
        except TimeoutError:
            runner.cancel(record.task_id)
            return Check(
                "data_flow",
                FAILED,
                f"a probe task did not finish within {self.timeout_s:g}s",
                details={"task_id": record.task_id},
            )
        events = [e.type for e in self.runtime.state.read_task(record.task_id)]
        if done.status != TaskStatus.COMPLETED:
            return Check(
                "data_flow",
                FAILED,
                f"probe task ended {done.status.value}: {done.error}",
                details={"task_id": record.task_id, "events": events},
            )
        self._forget_probe(done)
        return Check(
            "data_flow",
            OK,
            "a probe task ran through runner, Dagster and event log (then was removed)",
            details={"events": events},
        )

    def _forget_probe(self, record: TaskRecord) -> None:
        if record.dagster_run_id and self.runtime.instance.has_run(record.dagster_run_id):
            self.runtime.instance.delete_run(record.dagster_run_id)
        self.runtime.state.delete_task(record.task_id)

    def _run(self, name: str, fn: Callable[[], Check]) -> Check:
        started = time.perf_counter()
        try:
            check = fn()
        except Exception as exc:
            check = Check(name, FAILED, f"{type(exc).__name__}: {exc}")
        check.duration_ms = (time.perf_counter() - started) * 1000
        return check

    async def report(self) -> dict[str, Any]:
        checks = await asyncio.gather(
            *(
                asyncio.to_thread(self._run, name, fn)
                for name, fn in (
                    ("dagster_instance", self._dagster),
                    ("storage", self._storage),
                    ("git", self._git),
                    ("event_log", self._event_log),
                    ("runner", self._runner),
                    ("data_flow", self._data_flow),
                    ("schedules", self._schedules),
                )
            )
        )
        if demo_model_preparing(self.runtime.home.path):  # only at a `serve --demo` first start
            checks.append(
                Check(
                    "demo_model",
                    OK,
                    "preparing the demo model (first start); generations with it wait for it",
                )
            )
        if any(c.status == FAILED and c.name in CRITICAL for c in checks):
            overall = "unhealthy"
        elif any(c.status != OK for c in checks):
            overall = "degraded"
        else:
            overall = "healthy"
        return {
            "status": overall,
            "checks": [c.to_dict() for c in checks],
            "timestamp": time.time(),
        }
