"""Turning API requests into admitted, queued tasks: one-node tasks, canvas runs and batches.

Everything a request could get wrong (template, inputs, shot, project, ``asset://``
references) is checked before the runner stores anything, so a rejected request leaves no task,
event, take or commit behind. Each graph is validated once, by ``Admission.admit``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import math
import re
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic import ValidationError as PydanticValidationError

from dagster_defs.admission import Admission, Submission
from dagster_defs.batches import new_batch_id, submit_sweep
from dagster_defs.intake import QueuedTask
from dagster_defs.runtime import Runtime
from graph_runtime.canvas import (
    NODE_ID_PATTERN,
    CanvasGraph,
    LiteralInput,
    RunContext,
    single_node_graph,
)
from graph_runtime.errors import (
    AssetNotFoundError,
    GraphValidationError,
    ProjectError,
    TakeflowError,
    TaskNotFoundError,
)
from graph_runtime.events import TaskCompleted
from graph_runtime.sweeps import Sweep, SweepError
from graph_runtime.takes import check_shot
from graph_runtime.tasks import DEFAULT_USER, TaskQuery, TaskRecord, TaskStatus
from graph_runtime.templates import FunctionTemplate, Quality
from server.auth import Principal
from server.callbacks import CompletionCallbacks
from server.errors import (
    BatchNotFoundError,
    IdempotencyKeyReusedError,
    InvalidIdempotencyKeyError,
    InvalidWaitError,
    RequestError,
    document_issues,
)
from server.health import PROBE_USER
from server.limits import DEFAULT_MAX_GRAPH_NODES, check_graph_size
from stores.idempotency import IdempotencyKeys, open_keys
from stores.projects import ASSET_SCHEME, Project, asset_relpath

_NODE_ID_RE = re.compile(NODE_ID_PATTERN)
MAX_TASK_PAGE = 200
"""The most tasks one ``GET /api/v1/functions/tasks`` answers (``limit``)."""
MAX_WAIT_S = 300.0
"""The longest ``?wait=`` a submit may hold its request open for the task's end."""
_KEY_RE = re.compile(r"[\x21-\x7e]{1,255}")  # printable ASCII, no spaces


def parse_wait(raw: str | None) -> float | None:
    """``?wait=`` as seconds (None: answer at once); ``invalid_wait`` unless 0 < wait <= 300."""
    if raw is None:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and 0 < seconds <= MAX_WAIT_S):
        raise InvalidWaitError(
            f"wait must be a number of seconds, more than 0 and at most {MAX_WAIT_S:g}; "
            f"got {raw!r}",
            field="wait",
        )
    return seconds


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TaskRequest(_Request):
    """``POST /api/v1/functions/tasks``: run one template as a one-node graph."""

    template_id: Annotated[str, Field(min_length=1, max_length=128)]
    inputs: dict[str, Any] = Field(default_factory=dict)
    project_id: str | None = None
    shot_id: str | None = None
    quality: Quality = Quality.STANDARD
    canvas_node_id: str | None = None
    user_id: Annotated[str, Field(max_length=128)] | None = None
    priority: Annotated[int, Field(ge=-100, le=100)] = 0
    callback_url: Annotated[str, Field(max_length=2048)] | None = None


class RunRequest(_Request):
    """``POST /api/v1/runs``: run a whole canvas graph (``docs/graph-format.md``)."""

    graph: dict[str, Any]
    project_id: str | None = None
    shot_id: str | None = None
    user_id: Annotated[str, Field(max_length=128)] | None = None
    priority: Annotated[int, Field(ge=-100, le=100)] = 0
    callback_url: Annotated[str, Field(max_length=2048)] | None = None


class TaskListFilters(_Request):
    """``GET /api/v1/functions/tasks``: which tasks, and which page (query parameters)."""

    project_id: str | None = None
    shot_id: str | None = None
    status: tuple[str, ...] = ()
    user_id: str | None = None
    since: float | None = None
    batch_id: str | None = None
    template_id: str | None = None
    limit: int = 50
    cursor: str | None = None


class BatchRequest(_Request):
    """``POST /api/v1/functions/batches``: all accepted or none. Either ``tasks`` (one-template
    tasks) or ``graph`` + ``sweep`` (a parameter sweep, ``takeflow.sweep/v1``: lists in a group
    are zipped, groups combined as a product, the whole repeated ``runs`` times)."""

    tasks: Annotated[list[TaskRequest], Field(min_length=1, max_length=1000)] | None = None
    graph: dict[str, Any] | None = None
    sweep: dict[str, Any] | None = None
    runs: Annotated[int, Field(ge=1, le=1000)] | None = None
    project_id: str | None = None
    shot_id: str | None = None
    user_id: Annotated[str, Field(max_length=128)] | None = None
    priority: Annotated[int, Field(ge=-100, le=100)] = 0

    @model_validator(mode="after")
    def _one_form(self) -> BatchRequest:
        if (self.tasks is None) == (self.graph is None):
            raise ValueError("send either `tasks` (one-template tasks) or `graph` with `sweep`")
        if self.graph is not None and self.sweep is None:
            raise ValueError("a graph batch needs a `sweep` (takeflow.sweep/v1)")
        return self


def asset_references(value: Any) -> Iterator[str]:
    """Every ``asset://`` string in a value, however deeply nested in dicts and lists."""
    if isinstance(value, str):
        if value.startswith(ASSET_SCHEME):
            yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from asset_references(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from asset_references(item)


def split_properties(
    template: FunctionTemplate, inputs: dict[str, Any], quality: Quality
) -> tuple[dict[str, Any], Quality]:
    """A one-template task's inputs and its node's quality. ``quality`` may also be sent among
    the inputs when the template has no input of that name (docs/integration.md); it is the
    node's property either way, and wins over the request's own ``quality``."""
    if "quality" not in inputs or template.input("quality") is not None:
        return inputs, check_quality(template, quality, "quality")
    inputs = dict(inputs)
    raw = inputs.pop("quality")
    try:
        return inputs, check_quality(template, Quality(raw), "inputs.quality")
    except ValueError:
        choices = ", ".join(q.value for q in Quality)
        raise RequestError(
            f"inputs.quality {raw!r} must be one of {choices}", field="inputs.quality"
        ) from None


def check_quality(template: FunctionTemplate, quality: Quality, field: str) -> Quality:
    """A task's quality selects one of its template's presets: one it has no preset for
    would be recorded with the take yet change nothing, so it is refused (``standard``, the
    default, is always accepted)."""
    if quality == Quality.STANDARD or quality in template.quality_presets:
        return quality
    known = ", ".join(q.value for q in Quality if q in template.quality_presets) or "none"
    raise RequestError(
        f"{field} {quality.value!r}: template '{template.id}' has no such quality preset "
        f"(its presets: {known}; 'standard' is the default)",
        field=field,
    )


def literal_values(graph: CanvasGraph) -> list[Any]:
    return [v.value for n in graph.nodes for v in n.inputs.values() if isinstance(v, LiteralInput)]


def _passing_probe(record: TaskRecord) -> bool:
    """A ``/health`` probe task that has not failed: it is removed as soon as it passes, and
    never listed (a failed one stays, for the operator)."""
    return record.user == PROBE_USER and record.status not in (
        TaskStatus.FAILED,
        TaskStatus.CANCELLED,
    )


class Submissions:
    """Turns API requests into admitted submissions and queues them on the runtime's runner.

    Each graph passes ``Admission.admit`` (validation, project) exactly once; the checks that
    only the API needs (shot, authorization, ``asset://`` files) come before or right after."""

    def __init__(
        self,
        runtime: Runtime,
        max_batch_size: int = 1000,
        max_graph_nodes: int = DEFAULT_MAX_GRAPH_NODES,
    ) -> None:
        self.runtime = runtime
        self.max_batch_size = max_batch_size
        self.max_graph_nodes = max_graph_nodes
        self._keys: IdempotencyKeys | None = None
        self.callbacks = CompletionCallbacks(runtime)

    def check_callback(self, url: str | None) -> None:
        """Refuse a ``callback_url`` that is no http(s) URL or names a non-public address not
        allowed in ``config.json`` (``server.callback_targets``)."""
        self.callbacks.check_url(url)

    @property
    def keys(self) -> IdempotencyKeys:
        """The deployment's idempotency key table, opened on first use."""
        if self._keys is None:
            self._keys = open_keys(self.runtime.state)
        return self._keys

    @property
    def admission(self) -> Admission:
        return self.runtime.runner.admission

    # -- building graphs ------------------------------------------------------------------

    def _context(
        self,
        project_id: str | None,
        shot_id: str | None,
        user_id: str | None,
        principal: Principal | None = None,
    ) -> RunContext:
        """The run context; with auth on, the caller's user and one of its projects (or none)."""
        if shot_id is not None:
            check_shot(shot_id)
        if principal is not None:
            user_id = principal.user
            if project_id is not None:
                principal.require(project_id)
        return RunContext(
            project=project_id, shot=shot_id or "main/main/main", user=user_id or DEFAULT_USER
        )

    def check_assets(self, project: Project | str | None, value: Any) -> None:
        """Refuse ``asset://`` references that are unsafe or name no file of the project."""
        refs = list(asset_references(value))
        if not refs:
            return
        if isinstance(project, str):
            project = self.runtime.projects.get(project)
        if project is None:
            raise ProjectError(
                f"input references {refs[0]!r}, but asset references need a project_id",
                field="project_id",
            )
        for ref in refs:  # every unsafe reference refused before any lookup
            asset_relpath(ref)
        for ref in refs:
            if not project.has_asset(ref):
                raise AssetNotFoundError(
                    f"asset {ref!r} is not in project '{project.id}' (upload it first)",
                    asset=ref,
                    project_id=project.id,
                )

    def task_graph(self, req: TaskRequest, principal: Principal | None = None) -> CanvasGraph:
        template = self.runtime.registry.get(req.template_id)  # unknown_template, with a hint
        inputs, quality = split_properties(template, dict(req.inputs), req.quality)
        node_id = req.canvas_node_id or "node"
        if not _NODE_ID_RE.fullmatch(node_id):
            raise RequestError(
                f"canvas_node_id {node_id!r} must match {NODE_ID_PATTERN}", field="canvas_node_id"
            )
        context = self._context(req.project_id, req.shot_id, req.user_id, principal)
        self.check_callback(req.callback_url)
        self.check_assets(req.project_id, inputs)  # a task's asset errors come first
        return single_node_graph(req.template_id, inputs, quality, node_id=node_id, context=context)

    def run_graph(self, req: RunRequest, principal: Principal | None = None) -> CanvasGraph:
        check_graph_size(req.graph, self.max_graph_nodes)
        self.check_callback(req.callback_url)
        try:
            graph = CanvasGraph.model_validate(req.graph)
        except PydanticValidationError as exc:
            raise GraphValidationError(document_issues(exc, req.graph)) from None
        context = self._context(
            req.project_id or graph.context.project,
            req.shot_id or graph.context.shot,
            req.user_id or graph.context.user,
            principal,
        )
        return graph.model_copy(update={"context": context})

    def admit(self, graph: CanvasGraph, metadata: dict[str, Any], check: bool = True) -> Submission:
        """The graph's one validation; then (``check``) its ``asset://`` references, so a
        run reports every graph error before any asset error."""
        submission = self.admission.admit(
            graph,
            project_id=graph.context.project,
            shot=graph.context.shot,
            user=graph.context.user,
            metadata=metadata,
        )
        if check:
            self.check_admitted(submission)
        return submission

    def check_admitted(self, submission: Submission) -> None:
        try:
            self.check_assets(submission.project, literal_values(submission.plan.graph))
        except TakeflowError:
            self.admission.abandon(submission)
            raise

    # -- submitting -----------------------------------------------------------------------

    def _accepted(self, queued: QueuedTask, tracking_id: str) -> dict[str, Any]:
        estimate = queued.estimated_seconds
        return {
            "task_id": queued.record.task_id,
            "tracking_id": tracking_id,
            "status": "submitted",
            "estimated_seconds": round(estimate, 3),
            "estimated_completion": datetime.fromtimestamp(time.time() + estimate, UTC).isoformat(),
        }

    def submit_sweep(
        self,
        req: BatchRequest,
        principal: Principal | None = None,
        before_queue: Callable[[str], None] | None = None,
    ) -> dict[str, Any]:
        """One task per combination of the sweep's values, as one batch (each gets its
        project's default callback, if it has one)."""
        assert req.graph is not None and req.sweep is not None
        graph = self.run_graph(
            RunRequest(
                graph=req.graph,
                project_id=req.project_id,
                shot_id=req.shot_id,
                user_id=req.user_id,
                priority=req.priority,
            ),
            principal,
        )
        try:
            sweep = Sweep.model_validate(req.sweep)
        except PydanticValidationError as exc:
            raise SweepError(f"the sweep is malformed: {exc.errors()[0]['msg']}") from None
        callback = self.callbacks.resolve(None, graph.context.project)
        batch_id = new_batch_id()
        if before_queue is not None:
            before_queue(batch_id)
        batch_id, task_ids = submit_sweep(
            self.runtime.runner,
            graph,
            sweep,
            req.runs,
            project_id=graph.context.project,
            shot=graph.context.shot,
            user=graph.context.user,
            priority=req.priority,
            batch_id=batch_id,
            check=self.check_admitted,
        )
        if callback is not None:  # due once each task ends
            for task_id in task_ids:
                self.callbacks.register(task_id, callback, graph.context.project)
        return {
            "batch_id": batch_id,
            "task_ids": task_ids,
            "total": len(task_ids),
            "status": "submitted",
        }

    def _meta(
        self, source: str, req: TaskRequest | RunRequest, graph: CanvasGraph
    ) -> dict[str, Any]:
        """The task's metadata, with the callback it gets (its own or its project's default:
        ``server.callbacks``)."""
        meta = {"tracking_id": f"trk_{uuid.uuid4().hex[:16]}"}
        if isinstance(req, TaskRequest):
            meta["template_id"] = req.template_id
            if req.canvas_node_id:
                meta["canvas_node_id"] = req.canvas_node_id
        callback = self.callbacks.resolve(req.callback_url, graph.context.project)
        if callback is not None:
            meta["callback_url"] = callback
        return {**meta, "source": source}

    def _register_callbacks(self, submissions: list[Submission]) -> None:
        """Store the deliveries of tasks with a callback (before they are queued)."""
        for submission in submissions:
            url = submission.metadata.get("callback_url")
            if url is not None:
                self.callbacks.register(submission.task_id, str(url), submission.project_id)

    def _forget_callbacks(self, submissions: list[Submission]) -> None:
        for submission in submissions:
            if submission.metadata.get("callback_url") is not None:
                self.callbacks.forget(submission.task_id)

    def submit_task(
        self,
        req: TaskRequest,
        batch_id: str | None = None,
        principal: Principal | None = None,
        before_queue: Callable[[str], None] | None = None,
    ) -> dict[str, Any]:
        """``before_queue(task_id)``: called once the task is admitted, before it is stored."""
        graph = self.task_graph(req, principal)
        submission = self.admit(graph, self._meta("api.functions", req, graph), check=False)
        return self._queue(submission, req.priority, batch_id, before_queue)

    def submit_run(
        self,
        req: RunRequest,
        principal: Principal | None = None,
        before_queue: Callable[[str], None] | None = None,
    ) -> dict[str, Any]:
        graph = self.run_graph(req, principal)
        submission = self.admit(graph, self._meta("api.runs", req, graph))
        return self._queue(submission, req.priority, None, before_queue)

    def _queue(
        self,
        submission: Submission,
        priority: int,
        batch_id: str | None = None,
        before_queue: Callable[[str], None] | None = None,
    ) -> dict[str, Any]:
        runner = self.runtime.runner
        if before_queue is not None:
            before_queue(submission.task_id)
        self._register_callbacks([submission])
        try:
            queued = runner.queue([(submission, priority)], batch_id=batch_id)[0]
        except BaseException:
            self._forget_callbacks([submission])
            raise
        body = self._accepted(queued, str(submission.metadata["tracking_id"]))
        body["waiting_for"] = runner.waiting_for(queued.record)
        return body

    def submit_batch(
        self,
        req: BatchRequest,
        principal: Principal | None = None,
        before_queue: Callable[[str], None] | None = None,
    ) -> dict[str, Any]:
        """Check every task first; queue them all only if all are valid. ``before_queue``
        gets the batch id before any task is stored."""
        if req.tasks is None:
            return self.submit_sweep(req, principal, before_queue)
        if len(req.tasks) > self.max_batch_size:
            raise RequestError(
                f"a batch holds at most {self.max_batch_size} tasks, got {len(req.tasks)}",
                field="tasks",
            )
        if principal is not None:  # another project's task refuses the batch as forbidden
            for task in req.tasks:
                if task.project_id is not None:
                    principal.require(task.project_id)
        admitted: list[Submission] = []
        errors: list[dict[str, Any]] = []
        for index, task in enumerate(req.tasks):
            try:
                graph = self.task_graph(task, principal)
                meta = self._meta("api.batches", task, graph)
                admitted.append(self.admit(graph, meta, check=False))
            except TakeflowError as exc:
                errors.append({"index": index, **exc.to_dict()})
        if errors:
            for submission in admitted:
                self.admission.abandon(submission)
            raise RequestError(
                f"{len(errors)} of {len(req.tasks)} tasks are invalid; nothing was queued",
                errors=errors,
            )
        batch_id = f"batch_{uuid.uuid4().hex[:16]}"
        if before_queue is not None:
            before_queue(batch_id)
        self._register_callbacks(admitted)
        try:
            queued = self.runtime.runner.queue(  # all or none: a queue limit refuses it whole
                [(s, task.priority) for s, task in zip(admitted, req.tasks, strict=True)],
                batch_id=batch_id,
            )
        except BaseException:
            self._forget_callbacks(admitted)
            raise
        accepted = [
            self._accepted(q, str(s.metadata["tracking_id"]))
            for q, s in zip(queued, admitted, strict=True)
        ]
        return {
            "batch_id": batch_id,
            "task_ids": [a["task_id"] for a in accepted],
            "tracking_ids": [a["tracking_id"] for a in accepted],
            "status": "submitted",
        }

    # -- idempotent submits and waiting ---------------------------------------------------

    def submit_once(
        self,
        kind: str,
        req: TaskRequest | RunRequest | BatchRequest,
        key: str | None,
        principal: Principal | None,
        submit: Callable[[Callable[[str], None] | None], dict[str, Any]],
        replay: Callable[[str], dict[str, Any] | None] | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """``submit(before_queue)``, or with an ``Idempotency-Key`` already used by this user
        for the same request, the first submit's task again (``True``: replayed; ``replay``
        answers it from the id ``before_queue`` got, None if it is gone). The key's
        lookup and the submit are one step under the intake lock, so concurrent retries make
        one task; the key is stored before its task (a crash between them leaves a key without
        a task, which the next retry replaces), and removed when the submit fails."""
        if key is None:
            return submit(None), False
        if not _KEY_RE.fullmatch(key):
            raise InvalidIdempotencyKeyError(
                "Idempotency-Key must be 1 to 255 printable ASCII characters without spaces",
                field="Idempotency-Key",
            )
        user = principal.user if principal is not None else (req.user_id or DEFAULT_USER)
        canonical = json.dumps([kind, req.model_dump(mode="json")], sort_keys=True)
        digest = hashlib.sha256(canonical.encode()).hexdigest()
        runner = self.runtime.runner
        with runner.intake.serialized():
            found = self.keys.find(user, key)
            if found is not None:
                if found[0] != digest:
                    raise IdempotencyKeyReusedError(
                        f"Idempotency-Key {key!r} was used for another request (task "
                        f"'{found[1]}'); send a new key for a new request",
                        field="Idempotency-Key",
                        task_id=found[1],
                    )
                again = (replay or self._task_replayed)(found[1])
                if again is not None:
                    return again, True
                # the first task was removed: this submit makes a new one
            remembered = False

            def remember(task_id: str) -> None:
                nonlocal remembered
                self.keys.put(user, key, digest, task_id)
                remembered = True

            try:
                body = submit(remember)
            except BaseException:
                if remembered:
                    self.keys.forget(user, key)
                raise
        return body, False

    def _task_replayed(self, task_id: str) -> dict[str, Any] | None:
        try:
            return self._replayed(self.runtime.runner.get(task_id))
        except TaskNotFoundError:
            return None

    def batch_replayed(self, batch_id: str) -> dict[str, Any] | None:
        """The answer to a replayed batch submit: the first batch's tasks (None: gone)."""
        records = self.runtime.state.list(batch_id=batch_id)
        if not records:
            return None
        return {
            "batch_id": batch_id,
            "task_ids": [r.task_id for r in records],
            "tracking_ids": [r.metadata.get("tracking_id") for r in records],
            "total": len(records),
            "status": "submitted",
        }

    def _replayed(self, record: TaskRecord) -> dict[str, Any]:
        """The answer to a replayed submit: the first task, with its status now."""
        _, estimate = self.runtime.runner.estimate(record)
        return {
            "task_id": record.task_id,
            "tracking_id": record.metadata.get("tracking_id"),
            "status": "submitted" if not record.status.terminal else record.status.value,
            "estimated_seconds": None if estimate is None else round(estimate, 3),
            "estimated_completion": None
            if estimate is None
            else datetime.fromtimestamp(time.time() + estimate, UTC).isoformat(),
            "waiting_for": self.runtime.runner.waiting_for(record),
        }

    def _ended(self, task_id: str) -> dict[str, Any] | None:
        record = self.runtime.runner.get(task_id)
        return self.task_status(task_id) if record.status.terminal else None

    def _batch_finished(self, batch_id: str) -> dict[str, Any] | None:
        body = self.batch_status(batch_id)
        return body if body["finished"] else None

    async def finished_within(
        self, task_id: str, seconds: float, gone: Awaitable[Any] | None = None
    ) -> dict[str, Any] | None:
        """The task's status (``task_status``) once it ends within ``seconds``, else None; also
        None as soon as ``gone`` (the client's disconnect) completes."""
        return await self._poll(lambda: self._ended(task_id), seconds, gone)

    async def batch_finished_within(
        self, batch_id: str, seconds: float, gone: Awaitable[Any] | None = None
    ) -> dict[str, Any] | None:
        """``batch_status`` once every task of the batch ended within ``seconds``, else None."""
        return await self._poll(lambda: self._batch_finished(batch_id), seconds, gone)

    @staticmethod
    async def _poll(
        read: Callable[[], dict[str, Any] | None],
        seconds: float,
        gone: Awaitable[Any] | None,
    ) -> dict[str, Any] | None:
        """``read()`` (in a thread) until it answers, ``seconds`` pass or ``gone`` completes.
        Polls the task store (every process sees it) every 25 ms for the first second, then
        less often, up to every 250 ms; never blocks the event loop and holds no thread between
        polls, so an abandoned wait leaves nothing behind."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        watch = None if gone is None else asyncio.ensure_future(gone)
        delay = 0.025
        try:
            while True:
                found = await asyncio.to_thread(read)
                if found is not None:
                    return found
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return None
                if watch is None:
                    await asyncio.sleep(min(delay, remaining))
                else:
                    done, _ = await asyncio.wait({watch}, timeout=min(delay, remaining))
                    if done:
                        return None
                if loop.time() > deadline - seconds + 1.0:
                    delay = min(delay * 2, 0.25)
        finally:
            if watch is not None:
                watch.cancel()

    # -- reading --------------------------------------------------------------------------

    @staticmethod
    def _statuses(values: tuple[str, ...]) -> frozenset[TaskStatus] | None:
        """``status=queued&status=running`` or ``status=queued,running``; none: every status."""
        names = [n.strip() for v in values for n in v.split(",") if n.strip()]
        if not names:
            return None
        known = {s.value for s in TaskStatus}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise RequestError(
                f"status {unknown[0]!r} is not a task status; use one or several of "
                f"{', '.join(s.value for s in TaskStatus)}",
                field="status",
            )
        return frozenset(TaskStatus(n) for n in names)

    @staticmethod
    def encode_cursor(record: TaskRecord) -> str:
        """An opaque page cursor: the ``(created_at, task_id)`` key of a page's last task."""
        raw = json.dumps([record.created_at, record.task_id], separators=(",", ":"))
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @staticmethod
    def decode_cursor(cursor: str) -> tuple[float, str]:
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
            created_at, task_id = json.loads(raw)
            if (
                isinstance(created_at, int | float)
                and not isinstance(created_at, bool)
                and math.isfinite(created_at)
                and isinstance(task_id, str)
            ):
                return float(created_at), task_id
        except (binascii.Error, ValueError, TypeError):
            pass
        raise RequestError(
            "cursor is not one this server gave: pass a page's `next_cursor` as it came",
            field="cursor",
        )

    def list_tasks(
        self, filters: TaskListFilters, principal: Principal | None = None
    ) -> dict[str, Any]:
        """One page of tasks, newest first, with ``next_cursor`` while more remain. With auth
        on: tasks of the caller's projects, and its own project-less tasks."""
        if not 1 <= filters.limit <= MAX_TASK_PAGE:
            raise RequestError(
                f"limit must be between 1 and {MAX_TASK_PAGE}, got {filters.limit}", field="limit"
            )
        if filters.since is not None and not math.isfinite(filters.since):
            raise RequestError("since must be a finite unix time in seconds", field="since")
        projects: frozenset[str] | None = None
        projectless_of: str | None = None
        if filters.project_id is not None:
            if principal is not None:
                principal.require(filters.project_id)
            projects = frozenset({filters.project_id})
        elif principal is not None:
            projects = None if principal.all_projects else principal.projects
            projectless_of = principal.user
        query = TaskQuery(
            projects=projects,
            projectless_of=projectless_of,
            shot=filters.shot_id,
            statuses=self._statuses(filters.status),
            user=filters.user_id,
            since=filters.since,
            batch_id=filters.batch_id,
            template_id=filters.template_id,
            before=None if filters.cursor is None else self.decode_cursor(filters.cursor),
            limit=filters.limit + 1,  # one more than asked tells whether a next page exists
        )
        records = self.runtime.state.query(query)
        page = records[: filters.limit]
        more = len(records) > filters.limit
        shown = [r for r in page if not _passing_probe(r)]
        waiting = [r for r in shown if not r.status.terminal]
        estimates = self.runtime.runner.estimates(waiting) if waiting else {}
        return {
            "tasks": [self._listed(r, estimates) for r in shown],
            "next_cursor": self.encode_cursor(page[-1]) if more else None,
            "limit": filters.limit,
        }

    def _listed(
        self, record: TaskRecord, estimates: Mapping[str, tuple[int | None, float | None]]
    ) -> dict[str, Any]:
        """A task as the list shows it: the task status minus per-node states, outputs and the
        socket's ``last_seq`` (``GET /api/v1/functions/tasks/{task_id}`` has those)."""
        if record.status == TaskStatus.RUNNING:
            record = self.runtime.runner.get(record.task_id)  # live progress
        body = record.to_dict()
        del body["nodes"]
        position, estimate = estimates.get(record.task_id, (None, None))
        body["queue_position"] = position
        body["estimated_seconds"] = estimate
        body["tracking_id"] = record.metadata.get("tracking_id")
        body["template_id"] = record.metadata.get("template_id")
        body["source"] = record.metadata.get("source")
        body["graph_name"] = record.graph.get("name")
        return body

    def task_status(self, task_id: str) -> dict[str, Any]:
        record = self.runtime.runner.get(task_id)
        body = record.to_dict()
        body.pop("graph", None)
        body["last_seq"] = self.runtime.state.last_seq(task_id) if record.status.terminal else None
        result = record.result
        if result is None and record.status == TaskStatus.COMPLETED:  # stored by an older version
            events = self.runtime.state.read_task(task_id)
            done = next((e.payload for e in reversed(events) if e.type == "task.completed"), None)
            result = done.result() if isinstance(done, TaskCompleted) else None
        if result is not None:
            body["outputs"] = result.outputs
            body["take"] = result.take
            body["commit"] = result.commit
            body["execution_time"] = result.execution_time
        position, estimate = self.runtime.runner.estimate(record)
        body["queue_position"] = position
        body["waiting_for"] = self.runtime.runner.waiting_for(record)
        body["estimated_seconds"] = estimate
        body["estimated_completion"] = (
            None
            if estimate is None
            else datetime.fromtimestamp(time.time() + estimate, UTC).isoformat()
        )
        body["tracking_id"] = record.metadata.get("tracking_id")
        body["graph_name"] = record.graph.get("name")
        body["callback"] = self.callbacks.view(task_id, record.status.terminal)
        return body

    def batch_status(self, batch_id: str) -> dict[str, Any]:
        records = self.runtime.state.list(batch_id=batch_id)
        if not records:
            raise BatchNotFoundError(f"no batch '{batch_id}'", batch_id=batch_id)
        counts = Counter(r.status.value for r in records)
        done = sum(counts[s.value] for s in TaskStatus if s.terminal)
        progress = sum(1.0 if r.status.terminal else r.progress for r in records) / len(records)
        return {
            "batch_id": batch_id,
            "total": len(records),
            "counts": {s.value: counts.get(s.value, 0) for s in TaskStatus},
            "finished": done == len(records),
            "progress": round(progress, 4),
            "tasks": [
                {"task_id": r.task_id, "status": r.status.value, "takes": r.takes, "error": r.error}
                for r in records
            ],
        }
