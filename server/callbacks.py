"""Completion callbacks: when a task (a run, a ComfyUI prompt) ends, its ``callback_url`` (or
its project's default, ``config.json`` ``callbacks.projects.<id>.url``) gets one JSON POST,
signed with HMAC-SHA256 under the project's secret, retried with exponential backoff until a
2xx answer, at least once, across restarts (``stores.callbacks`` keeps each delivery's state in
the task state). Receivers dedupe on ``X-Takeflow-Delivery``; docs/integration.md."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import http.client
import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError

from dagster_defs.runtime import Runtime
from graph_runtime.errors import TakeflowError
from graph_runtime.tasks import TaskStatus
from server.callback_targets import FIELD, CallbackTargets
from server.errors import CallbackSecretMissingError
from stores.callbacks import (
    DELIVERED,
    FAILED,
    CallbackDeliveries,
    CallbackDelivery,
    open_deliveries,
)

log = logging.getLogger(__name__)
ENDED = frozenset(s.value for s in TaskStatus if s.terminal)
SIGNATURE_HEADER = "X-Takeflow-Signature"
USER_AGENT = "Takeflow-Callbacks/1"


class CallbackConfigError(TakeflowError):
    """``config.json``'s ``callbacks`` section is malformed (the server does not start)."""

    code = "invalid_callback_config"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProjectCallbacks(_Section):
    """``callbacks.projects.<project_id>``: the project's default URL and its secret."""

    url: Annotated[str, Field(max_length=2048)] | None = None
    secret: Annotated[str, Field(min_length=16)] | None = None


class CallbackSettings(_Section):
    """``config.json`` ``callbacks``; the retry figures are small in tests."""

    allow_hosts: list[str] = Field(default_factory=list)
    secret: Annotated[str, Field(min_length=16)] | None = None  # projects without their own
    projects: dict[str, ProjectCallbacks] = Field(default_factory=dict)
    attempts: Annotated[int, Field(ge=1, le=100)] = 10
    backoff_s: Annotated[float, Field(gt=0, le=3600)] = 2.0  # first retry; doubles each time
    max_backoff_s: Annotated[float, Field(gt=0, le=86400)] = 600.0
    timeout_s: Annotated[float, Field(gt=0, le=120)] = 10.0  # one attempt's connect + answer
    poll_s: Annotated[float, Field(gt=0, le=60)] = 0.5  # how often due deliveries are looked up
    concurrency: Annotated[int, Field(ge=1, le=64)] = 8

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> CallbackSettings:
        try:
            return cls.model_validate(config.get("callbacks") or {})
        except PydanticValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in ("callbacks", *first["loc"]))
            raise CallbackConfigError(f"config.json {where}: {first['msg']}", field=where) from None

    def secret_of(self, project_id: str | None) -> str | None:
        own = self.projects.get(project_id) if project_id is not None else None
        return (own.secret if own is not None else None) or self.secret

    def retry_delay(self, attempts: int) -> float:
        """The wait after the ``attempts``-th failed attempt."""
        return float(min(self.backoff_s * 2 ** (attempts - 1), self.max_backoff_s))


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>``: HMAC-SHA256 of ``<timestamp>.<body>`` (the timestamp is signed too, so
    a receiver can refuse replays of old deliveries)."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


class CompletionCallbacks:
    """Which callback a submit gets (checked at submit), and its delivery state."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.settings = CallbackSettings.from_config(runtime.home.config())
        self.targets = CallbackTargets(self.settings.allow_hosts)
        for project_id, project in self.settings.projects.items():
            if project.url is not None:  # an operator's mistake stops the start, not a submit
                if self.settings.secret_of(project_id) is None:
                    raise CallbackConfigError(
                        f"config.json callbacks.projects.{project_id}.url needs a secret to "
                        f"sign with: set callbacks.projects.{project_id}.secret or "
                        "callbacks.secret",
                        field=f"callbacks.projects.{project_id}.secret",
                    )
                try:
                    self.targets.check(project.url)
                except TakeflowError as exc:
                    raise CallbackConfigError(
                        f"config.json callbacks.projects.{project_id}.url: {exc.message}",
                        field=f"callbacks.projects.{project_id}.url",
                    ) from None
        self._store: CallbackDeliveries | None = None

    @property
    def store(self) -> CallbackDeliveries:
        """The delivery table (``stores.callbacks``), opened on first use."""
        if self._store is None:
            self._store = open_deliveries(self.runtime.state)
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    def check_url(self, url: str | None) -> None:
        """``invalid_callback_url`` / ``callback_url_refused`` (``server.callback_targets``)."""
        if url is not None:
            self.targets.check(url)

    def resolve(self, url: str | None, project_id: str | None) -> str | None:
        """The callback a task of ``project_id`` gets: its own ``url`` (checked), else the
        project's default; refused when no secret would sign it."""
        if url is None:
            own = self.settings.projects.get(project_id) if project_id is not None else None
            if own is None or own.url is None:
                return None
            url = own.url
        else:
            self.targets.check(url)
        if self.settings.secret_of(project_id) is None:
            where = f"callbacks.projects.{project_id}.secret or " if project_id else ""
            raise CallbackSecretMissingError(
                "callback_url needs a signing secret, and the server has none for "
                f"{'project ' + repr(project_id) if project_id else 'tasks without a project'}"
                f" (the operator sets {where}callbacks.secret in config.json)",
                field=FIELD,
            )
        return url

    def register(self, task_id: str, url: str, project_id: str | None) -> None:
        """Store the task's delivery (before the task is queued: it is due once it ends)."""
        self.store.add(task_id, url, project_id)

    def forget(self, task_id: str) -> None:
        self.store.forget(task_id)

    def view(self, task_id: str, ended: bool) -> dict[str, Any] | None:
        """The ``callback`` field of a task's status: None without a callback."""
        delivery = self.store.get(task_id)
        if delivery is None:
            return None
        state = delivery.state
        if state not in (DELIVERED, FAILED):
            state = "retrying" if delivery.attempts else ("pending" if ended else "waiting")
        return {
            "url": delivery.url,
            "delivery_id": delivery.delivery_id,
            "state": state,
            "attempts": delivery.attempts,
            "last_status": delivery.last_status,
            "last_error": delivery.last_error,
            "next_attempt_at": delivery.next_attempt if state == "retrying" else None,
            "delivered_at": delivery.delivered_at,
        }


class CallbackSender:
    """The delivery loop of a server: every ``poll_s`` it claims the due deliveries (those of
    ended tasks, also the ones a previous server left) and posts them, a few at a time."""

    def __init__(
        self, callbacks: CompletionCallbacks, describe: Callable[[str], dict[str, Any]]
    ) -> None:
        """``describe(task_id)``: the task's status as ``GET /api/v1/functions/tasks/{id}``."""
        self.callbacks = callbacks
        self.settings = callbacks.settings
        self.describe = describe
        self._task: asyncio.Task[None] | None = None
        self._sending: dict[str, asyncio.Task[None]] = {}

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._sending.values()) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _run(self) -> None:
        store = await asyncio.to_thread(lambda: self.callbacks.store)
        limit = asyncio.Semaphore(self.settings.concurrency)
        while True:
            try:
                due = await asyncio.to_thread(store.due, time.time(), ENDED)
            except Exception:
                log.exception("could not read the due callback deliveries")
                due = []
            for delivery in due:
                if delivery.delivery_id not in self._sending:
                    task = asyncio.create_task(self._deliver(delivery, limit))
                    self._sending[delivery.delivery_id] = task
                    task.add_done_callback(self._sent)
            await asyncio.sleep(self.settings.poll_s)

    def _sent(self, task: asyncio.Task[None]) -> None:
        for key, running in list(self._sending.items()):
            if running is task:
                del self._sending[key]

    async def _deliver(self, delivery: CallbackDelivery, limit: asyncio.Semaphore) -> None:
        store = self.callbacks.store
        async with limit:
            now = time.time()
            lease = now + self.settings.timeout_s + 5.0  # a crash mid-attempt: due again after
            if not await asyncio.to_thread(store.claim, delivery.delivery_id, now, lease):
                return
            try:
                status, error = await asyncio.to_thread(self._attempt, delivery)
            except Exception as exc:  # the payload could not be built: counted as a failure
                log.exception("callback %s of task %s", delivery.delivery_id, delivery.task_id)
                status, error = None, f"{type(exc).__name__}: {exc}"
            attempts = delivery.attempts + 1
            delivered = status is not None and 200 <= status < 300
            retry_at = None
            if not delivered and attempts < self.settings.attempts:
                retry_at = time.time() + self.settings.retry_delay(attempts)
            if not delivered:
                log.warning(
                    "callback %s of task %s failed (attempt %d): %s",
                    delivery.delivery_id, delivery.task_id, attempts, error,
                )  # fmt: skip
            await asyncio.to_thread(
                store.finish,
                delivery.delivery_id,
                delivered=delivered,
                status=status,
                error=None if delivered else error,
                retry_at=retry_at,
            )

    def payload(self, delivery: CallbackDelivery) -> dict[str, Any]:
        """What a receiver gets: the task's end (status, takes, outputs, error)."""
        task = self.describe(delivery.task_id)
        record = self.callbacks.runtime.runner.get(delivery.task_id)
        body: dict[str, Any] = {
            "delivery_id": delivery.delivery_id,
            "event": f"task.{task['status']}",
        }
        for field in (
            "task_id", "status", "project_id", "shot_id", "user_id", "batch_id", "tracking_id",
            "created_at", "started_at", "finished_at", "takes", "take", "outputs", "commit",
            "error",
        ):  # fmt: skip
            body[field] = task.get(field)
        prompt_id = record.metadata.get("comfyui_prompt_id")
        if prompt_id is not None:
            body["comfyui"] = {
                "prompt_id": prompt_id,
                "client_id": record.metadata.get("comfyui_client_id"),
            }
        return body

    def _attempt(self, delivery: CallbackDelivery) -> tuple[int | None, str | None]:
        """One POST: ``(status, error)``; redirects are not followed, and the target is checked
        again (its name may resolve elsewhere by now)."""
        try:
            self.callbacks.targets.check(delivery.url)
        except TakeflowError as exc:
            return None, exc.message
        secret = self.settings.secret_of(delivery.project_id)
        if secret is None:
            return None, "no signing secret in config.json (callbacks.secret)"
        payload = self.payload(delivery)
        body = json.dumps(payload, separators=(",", ":"), default=str).encode()
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "X-Takeflow-Delivery": delivery.delivery_id,
            "X-Takeflow-Event": str(payload["event"]),
            "X-Takeflow-Attempt": str(delivery.attempts + 1),
            "X-Takeflow-Timestamp": timestamp,
            SIGNATURE_HEADER: sign(secret, timestamp, body),
        }
        parts = urlsplit(delivery.url)
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        kind = (
            http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        )
        conn = kind(parts.hostname or "", parts.port, timeout=self.settings.timeout_s)
        try:
            conn.request("POST", target, body=body, headers=headers)
            response = conn.getresponse()
            response.read(65536)
            status = response.status
        except (OSError, http.client.HTTPException) as exc:
            return None, f"{type(exc).__name__}: {exc}"[:500]
        finally:
            conn.close()
        return status, None if 200 <= status < 300 else f"HTTP {status} {response.reason}"[:500]
