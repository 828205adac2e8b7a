"""The ComfyUI API's operations over Takeflow: prompts in, queue and history out.

A prompt is checked (``validate``), collapsed into a Takeflow canvas graph (``translate``),
checked again by Takeflow's own validation, and queued as an ordinary Takeflow task in a
project (``extra_data.takeflow.project``/``shot``, else the configured default): a Dagster run
whose images become a take committed to git. The queue and history are read back from the
task records and the store, so both survive a restart.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.metadata
import logging
import math
import os
import platform
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from dagster_defs.intake import QueueFullError
from dagster_defs.runtime import Runtime
from graph_runtime.errors import TakeflowError
from graph_runtime.projects import one_line
from graph_runtime.tasks import DEFAULT_USER
from server.auth import Principal
from server.callbacks import CompletionCallbacks
from server.comfy.bridge import TakeflowBridge
from server.comfy.catalog import Catalog
from server.comfy.errors import PromptRejected
from server.comfy.files import ComfyFolders, user_folder
from server.comfy.history import build_history, history_view, unbuilt_history
from server.comfy.hub import ComfyHub
from server.comfy.idempotency import prompt_callback
from server.comfy.issues import map_issues
from server.comfy.store import ComfyStore, PromptRow, open_tables
from server.comfy.translate import Translator
from server.comfy.validate import needed_nodes, validate_partial
from stores.idempotency import IdempotencyKeys, open_keys

# ComfyUI's preview methods (the diffusion templates' ``preview_method`` choices).
PREVIEW_METHODS = ("auto", "latent2rgb", "taesd", "none")

log = logging.getLogger(__name__)
DEFAULT_PROJECT = "comfyui"
DEFAULT_SHOT = "main/main/main"
COMPAT_VERSION = "0.3.0-takeflow"
HISTORY_LEASE_S = 60.0  # a replica that died while writing a history is taken over after this
# a finished prompt stays in the queue (running) until its history is written, this long at most
HISTORY_SETTLE_S = HISTORY_LEASE_S + 5
_KNOWN_TASKS = 50_000  # task ids remembered as not being ComfyUI prompts (then forgotten)


class ComfyService:
    """Shared by the compat listener and the ``/api/`` routes of the main app."""

    def __init__(self, runtime: Runtime, auth: bool = False) -> None:
        self.bridge = TakeflowBridge(runtime)
        root = self.bridge.home / "comfyui"
        self._store_path = root / "comfyui.sqlite"
        self.store = ComfyStore(open_tables(runtime.state, self._store_path))
        self.folders = ComfyFolders(root)
        self.catalog = Catalog(self.bridge.model_names, self.folders.input_files,
                               self.bridge.limits, self.bridge.folder_names)  # fmt: skip
        self.hub = ComfyHub(self)
        self.auth = auth
        self._user_folders: dict[str, ComfyFolders] = {}
        self._folders_lock = threading.Lock()
        # caches of the shared store: task id -> prompt id, and task ids of no prompt
        self.task_prompts: dict[str, str] = {}
        self.other_tasks: set[str] = set()
        self._rows: dict[str, PromptRow] = {}
        self.instance = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._users = 0

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Start once per process, however many apps (listeners) share the service."""
        self._users += 1
        if self._users > 1:
            return
        if self.store.closed:
            self.store = ComfyStore(open_tables(self.bridge.runtime.state, self._store_path))
        self.hub.start()
        self.bridge.listen(self.hub.emit)
        await asyncio.to_thread(self.reconcile)

    async def stop(self) -> None:
        self._users -= 1
        if self._users > 0:
            return
        self.bridge.unlisten(self.hub.emit)
        await self.hub.stop()
        self.store.close()

    def reconcile(self) -> None:
        """After a restart: history for prompts that ended while no one listened."""
        for row in self.store.without_history():
            task = self.bridge.task(row.task_id)
            if task is not None and not task.finished:
                continue
            try:
                self.write_history(row.prompt_id)
            except Exception:
                log.exception("could not write the history of prompt %s", row.prompt_id)

    def settings(self) -> dict[str, Any]:
        table = self.bridge.config().get("comfyui") or {}
        return dict(table) if isinstance(table, dict) else {}

    # -- rows -------------------------------------------------------------------------------

    async def row(self, prompt_id: str) -> PromptRow | None:
        """A prompt's row, kept while its messages are being dispatched (until ``forget``)."""
        found = self._rows.get(prompt_id)
        if found is None:
            found = await asyncio.to_thread(self.store.get, prompt_id)
            if found is not None:
                self._rows[prompt_id] = found
        return found

    def forget(self, prompt_id: str) -> None:
        self._rows.pop(prompt_id, None)

    def prompt_of(self, task_id: str) -> str | None:
        """The prompt a task runs, ``None`` for a task of no ComfyUI prompt (whichever replica
        took the prompt: its row is stored before the task's first event)."""
        found = self.task_prompts.get(task_id)
        if found is not None or task_id in self.other_tasks:
            return found
        row = self.store.by_task(task_id)
        if row is None:
            if len(self.other_tasks) >= _KNOWN_TASKS:
                self.other_tasks.clear()
            self.other_tasks.add(task_id)
            return None
        self.task_prompts[task_id] = row.prompt_id
        return row.prompt_id

    def visible(self, row: PromptRow, user: str | None) -> bool:
        """With auth on, a prompt is its user's only."""
        return not self.auth or user is None or row.user == user

    # -- per-user files ---------------------------------------------------------------------

    def folders_of(self, user: str | None, create: bool = True) -> ComfyFolders:
        """The ComfyUI folders of ``user``: with auth on, ``comfyui/users/<user>/``; without
        auth (one loopback user) the shared ``comfyui/`` folders."""
        if not self.auth or user is None:
            return self.folders
        with self._folders_lock:
            found = self._user_folders.get(user)
            if found is None:
                root = self.folders.root / "users" / user_folder(user)
                if not create and not root.is_dir():
                    return ComfyFolders(root, create=False)  # nothing there: nothing is found
                found = self._user_folders[user] = ComfyFolders(root)
            return found

    def catalog_of(self, user: str | None) -> Catalog:
        """The node types as ``user`` sees them (LoadImage offers the user's own inputs)."""
        if not self.auth or user is None:
            return self.catalog
        return Catalog(
            self.bridge.model_names, self.folders_of(user).input_files, self.bridge.limits,
            self.bridge.folder_names,
        )  # fmt: skip

    # -- submitting -------------------------------------------------------------------------

    @functools.cached_property
    def callbacks(self) -> CompletionCallbacks:
        """``extra_data.callback_url``: checked and stored here, sent by the main app."""
        return CompletionCallbacks(self.bridge.runtime)

    @functools.cached_property
    def idempotency_keys(self) -> IdempotencyKeys:
        """``Idempotency-Key`` on ``POST /prompt`` (``server.comfy.idempotency``)."""
        return open_keys(self.bridge.runtime.state)

    def submit(
        self,
        body: Any,
        principal: Principal | None,
        before_queue: Callable[[str], None] | None = None,
    ) -> dict[str, Any]:
        """Queue a prompt; ``before_queue(task_id)`` once it is valid, before it is stored."""
        if not isinstance(body, dict):
            raise PromptRejected("invalid_prompt", "Invalid prompt: the body must be an object")
        user = principal.user if principal is not None else DEFAULT_USER
        folders = self.folders_of(principal.user if principal is not None else None)
        catalog = self.catalog_of(principal.user if principal is not None else None)
        prompt, outputs, needed, node_errors = validate_partial(
            body.get("prompt"), catalog, body.get("partial_execution_targets")
        )
        extra = body.get("extra_data") or {}
        client_id = body.get("client_id")
        prompt_id = body.get("prompt_id") or str(uuid.uuid4())
        if not isinstance(extra, dict) or not isinstance(prompt_id, str) or len(prompt_id) > 200:
            raise PromptRejected("invalid_prompt", "Invalid prompt: extra_data must be an object "
                                 "and prompt_id a string")  # fmt: skip
        if client_id is not None and not isinstance(client_id, str):
            raise PromptRejected("invalid_prompt", "Invalid prompt: client_id must be a string")
        if self.store.exists(prompt_id):
            raise PromptRejected("invalid_prompt", f"prompt_id '{prompt_id}' is already used")
        raw_target = extra.get("takeflow")
        target: dict[str, Any] = raw_target if isinstance(raw_target, dict) else {}
        settings = self.settings()
        default_project = str(settings.get("project") or DEFAULT_PROJECT)
        project = str(target.get("project") or default_project)
        shot = str(target.get("shot") or settings.get("shot") or DEFAULT_SHOT)
        number = _number(body.get("number"))
        callback = prompt_callback(self.callbacks, extra, project)
        while True:  # outputs that Takeflow's validation refuses are dropped, as ComfyUI does
            translation = Translator(prompt, outputs, needed, catalog, folders.folder("input"),
                                     name=f"comfyui {prompt_id[:8]}").translate()  # fmt: skip
            self._apply_preview_method(translation.graph, extra.get("preview_method"))
            plan = self.bridge.validate(translation.graph, project_id=project, shot=shot,
                                        user=user)  # fmt: skip
            if not isinstance(plan, list):
                break
            rejected = map_issues(plan, translation, prompt, outputs, catalog)
            failed = {o for e in rejected.node_errors.values() for o in e["dependent_outputs"]}
            valid = [nid for nid in outputs if nid not in failed]
            if not rejected.node_errors or not valid or valid == outputs:
                if node_errors:
                    rejected.node_errors = {**node_errors, **rejected.node_errors}
                raise rejected
            node_errors = {**node_errors, **rejected.node_errors}
            outputs, needed = valid, needed_nodes(prompt, valid)
        try:
            self.bridge.require_project(project, principal, create=project == default_project)
            for asset_id, name in translation.imports.items():
                rel = f"01_Assets/{asset_id}"
                if not self.bridge.has_file(project, rel):
                    data = (folders.folder("input") / name).read_bytes()
                    self.bridge.store_file(project, rel, data, f"ComfyUI input {one_line(name)}")
        except TakeflowError as exc:
            if exc.http_status in (401, 403):
                raise
            raise PromptRejected("invalid_prompt", f"Invalid prompt: {exc.message}",
                                 exc.code, exc.to_dict()) from None  # fmt: skip
        translation.cached = translation.cached_nodes(self.bridge.cache_hits(plan))
        if number is None:
            number = self.store.next_number()
        front = bool(body.get("front"))
        if front:
            number = -number
        task_id = self.bridge.new_task_id()
        if before_queue is not None:
            before_queue(task_id)
        stored = {"prompt": prompt, "extra_data": {**extra, "client_id": client_id},
                  "outputs": outputs}  # fmt: skip
        self.store.add(prompt_id, task_id, number, client_id, user, project, stored, translation)
        self.task_prompts[task_id] = prompt_id
        try:
            if callback is not None:
                self.callbacks.register(task_id, callback, project)
            self.bridge.submit(
                task_id, plan, project_id=project, shot=shot, user=user,
                priority=1 if front else 0,
                metadata={"source": "comfyui", "comfyui_prompt_id": prompt_id,
                          "comfyui_client_id": client_id, "comfyui_notes": translation.notes,
                          **({"callback_url": callback} if callback else {})},
            )  # fmt: skip
        except BaseException as exc:
            if callback is not None:
                self.callbacks.forget(task_id)
            self.task_prompts.pop(task_id, None)
            self.store.remove(prompt_id)
            if isinstance(exc, QueueFullError):
                raise PromptRejected("queue_full", exc.message, exc.code, exc.to_dict(),
                                     status=429, retry_after=exc.retry_after) from None  # fmt: skip
            if isinstance(exc, TakeflowError) and exc.http_status not in (401, 403):
                raise PromptRejected("invalid_prompt", f"Invalid prompt: {exc.message}",
                                     exc.code, exc.to_dict()) from None  # fmt: skip
            raise
        shown: float | int = int(number) if float(number).is_integer() else number
        return {"prompt_id": prompt_id, "number": shown, "node_errors": node_errors}

    def _apply_preview_method(self, graph: dict[str, Any], method: Any) -> None:
        """``extra_data.preview_method`` (ComfyUI's names; ``default``: the server's) on every
        node that makes previews."""
        if method is None or method == "default":
            return
        if method not in PREVIEW_METHODS:
            allowed = ", ".join(f"'{m}'" for m in (*PREVIEW_METHODS, "default"))
            raise PromptRejected("invalid_prompt", f"Invalid prompt: extra_data.preview_method "
                                 f"must be one of {allowed}, not {method!r}")  # fmt: skip
        for node in graph["nodes"]:
            if self.bridge.takes_input(node["template"], "preview_method"):
                node["inputs"]["preview_method"] = {"kind": "literal", "value": method}

    # -- queue ------------------------------------------------------------------------------

    def _active_rows(self, principal: Principal | None) -> list[tuple[PromptRow, str]]:
        """Prompts queued or running, by number (from the shared store and task records, so
        every replica answers the same). As in ComfyUI, a prompt leaves the queue in the step
        that writes its history: a finished task counts as running until then (at most
        ``HISTORY_SETTLE_S`` after it ended, should every write fail)."""
        user = principal.user if principal is not None else None
        now = time.time()
        found = []
        for row in self.store.without_history():
            task = self.bridge.task(row.task_id) if self.visible(row, user) else None
            if task is None:
                continue
            if not task.finished:
                found.append((row, task.status))
            elif now - (task.finished_at or row.created) < HISTORY_SETTLE_S:
                found.append((row, "running"))
        return sorted(found, key=lambda item: item[0].number)

    def queue(self, principal: Principal | None) -> dict[str, Any]:
        rows = self._active_rows(principal)
        return {
            "queue_running": [r.queue_item() for r, status in rows if status == "running"],
            "queue_pending": [r.queue_item() for r, status in rows if status != "running"],
        }

    def queue_remaining(self) -> int:
        return len(self._active_rows(None))

    def delete(self, prompt_ids: list[str] | None, principal: Principal | None) -> None:
        """``POST /queue``: cancel pending prompts (all of them when ``None``)."""
        for row, status in self._active_rows(principal):
            if status == "queued" and (prompt_ids is None or row.prompt_id in prompt_ids):
                self.bridge.cancel(row.task_id)

    def interrupt(self, prompt_id: str | None, principal: Principal | None) -> None:
        """Stop the running prompt(s), or only ``prompt_id`` if it is running."""
        for row, status in self._active_rows(principal):
            if status == "running" and (prompt_id is None or row.prompt_id == prompt_id):
                self.bridge.cancel(row.task_id)

    # -- history ----------------------------------------------------------------------------

    def write_history(self, prompt_id: str) -> dict[str, Any] | None:
        """A finished prompt's history entry: written here (output files, then the entry) if
        no other process writes it, once across every replica; ``None`` while the task runs
        or another process is writing it."""
        return self._write_history(prompt_id)[0]

    def _write_history(self, prompt_id: str) -> tuple[dict[str, Any] | None, bool]:
        """``(history, another process is writing it)``."""
        row = self.store.get(prompt_id)
        if row is None:
            return None, False
        if row.history is not None:
            return row.history, False
        task = self.bridge.task(row.task_id)
        if task is not None and not task.finished:
            return None, False
        if not self.store.claim_history(prompt_id, self.instance, HISTORY_LEASE_S):
            written = self.store.get(prompt_id)
            history = written.history if written is not None else None
            return history, history is None and written is not None
        if task is None:  # the task record is gone: record the prompt as failed
            from server.comfy.bridge import TaskInfo

            lost = {"code": "task_lost", "message": "the Takeflow task is gone"}
            task = TaskInfo(row.task_id, "failed", row.project, row.user, row.created, lost)
        try:
            try:
                history = build_history(row, task, self.bridge, self.folders_of(row.user))
            except Exception as exc:  # still an entry: the prompt must leave the queue
                log.exception("could not build the history of prompt %s", prompt_id)
                history = unbuilt_history(row, task, f"{type(exc).__name__}: {exc}")
            self.store.set_history(prompt_id, history)
        except BaseException:
            self.store.release_history(prompt_id, self.instance)
            raise
        return history, False

    def settle_history(self, prompt_id: str, poll_s: float = 0.05) -> dict[str, Any] | None:
        """``write_history``, waiting while another replica writes it (taken over if that
        replica dies: its claim expires after ``HISTORY_LEASE_S``)."""
        deadline = time.monotonic() + HISTORY_SETTLE_S
        while True:
            history, elsewhere = self._write_history(prompt_id)
            if not elsewhere or time.monotonic() > deadline:
                return history
            time.sleep(poll_s)

    def history(
        self, principal: Principal | None, max_items: int | None = None, offset: int = 0
    ) -> dict[str, Any]:
        user = principal.user if principal is not None else None
        rows = self.store.history(max_items, offset, user if self.auth else None)
        return {r.prompt_id: history_view(r) for r in rows if self.visible(r, user)}

    def hide_history(self, prompt_ids: list[str] | None, principal: Principal | None) -> None:
        """``POST /history``: hide the caller's entries (all of them when ``None``)."""
        user = principal.user if self.auth and principal is not None else None
        self.store.hide_history(prompt_ids, user)

    def history_of(self, prompt_id: str, principal: Principal | None) -> dict[str, Any]:
        """``{id: entry}`` once finished; ``{}`` while queued or running, or when unknown."""
        row = self.store.get(prompt_id)
        user = principal.user if principal is not None else None
        if row is None or row.history is None or not self.visible(row, user):
            return {}
        return {prompt_id: history_view(row)}

    # -- descriptions -----------------------------------------------------------------------

    def system_stats(self) -> dict[str, Any]:
        def version(name: str) -> str:
            try:
                return importlib.metadata.version(name)
            except importlib.metadata.PackageNotFoundError:
                return "not installed"

        try:
            pages, page = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
            free = os.sysconf("SC_AVPHYS_PAGES") * page
            total = pages * page
        except (ValueError, OSError, AttributeError):
            total = free = 0
        return {
            "system": {
                "os": platform.system().lower(),
                "ram_total": total,
                "ram_free": free,
                "comfyui_version": COMPAT_VERSION,
                "takeflow_version": version("takeflow"),
                "python_version": sys.version,
                "pytorch_version": version("torch"),
                "embedded_python": False,
                "argv": sys.argv,
                "takeflow_loaded_models": self.bridge.loaded_models(),
            },
            "devices": [
                {"name": "cpu", "type": "cpu", "index": None, "vram_total": 0, "vram_free": 0,
                 "torch_vram_total": 0, "torch_vram_free": 0}
            ],
        }  # fmt: skip


def _number(value: Any) -> float | None:
    """A prompt's ``number`` (its place in the queue): a finite number, else none given."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise PromptRejected(
            "invalid_prompt",
            "Invalid prompt: number must be a finite number",
            "number: NaN, an infinity or beyond a float's range",
        )
    return number
