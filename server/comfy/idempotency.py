"""What Takeflow adds to ComfyUI's ``POST /prompt``: an ``Idempotency-Key`` header (a retried
submit answers the first prompt) and ``extra_data.callback_url`` (a signed completion callback,
``server.callbacks``). Both refuse as ComfyUI refuses a prompt (``PromptRejected``)."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from graph_runtime.errors import TakeflowError
from graph_runtime.tasks import DEFAULT_USER
from server.auth import Principal
from server.callbacks import CompletionCallbacks
from server.comfy.errors import PromptRejected
from server.errors import IdempotencyKeyReusedError, InvalidIdempotencyKeyError

if TYPE_CHECKING:
    from server.comfy.service import ComfyService

_KEY_RE = re.compile(r"[\x21-\x7e]{1,255}")  # as the Takeflow API's submits
KIND = "comfyui.prompt"


def _rejected(exc: TakeflowError, status: int | None = None) -> PromptRejected:
    return PromptRejected("invalid_prompt", f"Invalid prompt: {exc.message}", exc.code,
                          exc.to_dict(), status=status or exc.http_status)  # fmt: skip


def prompt_callback(
    callbacks: CompletionCallbacks, extra: dict[str, Any], project: str
) -> str | None:
    """``extra_data.callback_url`` checked (or the project's default callback), else None."""
    url = extra.get("callback_url")
    if url is not None and (not isinstance(url, str) or len(url) > 2048):
        raise PromptRejected("invalid_prompt", "Invalid prompt: extra_data.callback_url must be "
                             "a URL string", "invalid_callback_url")  # fmt: skip
    try:
        return callbacks.resolve(url, project)
    except TakeflowError as exc:
        raise _rejected(exc, status=400) from None  # as any invalid prompt


def submit_once(
    comfy: ComfyService, body: Any, principal: Principal | None, key: str | None
) -> tuple[dict[str, Any], bool]:
    """``comfy.submit(body)``, or with an ``Idempotency-Key`` this user already sent with the
    same body, the first prompt's answer again (``True``: replayed). As for the Takeflow API
    (``Submissions.submit_once``): the lookup and the submit are one step under the intake
    lock; the key is stored before its task and dropped when the submit is refused."""
    if key is None:
        return comfy.submit(body, principal), False
    if not _KEY_RE.fullmatch(key):
        raise _rejected(InvalidIdempotencyKeyError(
            "Idempotency-Key must be 1 to 255 printable ASCII characters without spaces",
            field="Idempotency-Key",
        ))  # fmt: skip
    user = principal.user if principal is not None else DEFAULT_USER
    canonical = json.dumps([KIND, body], sort_keys=True, default=str)
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    keys = comfy.idempotency_keys
    with comfy.bridge.runtime.runner.intake.serialized():
        found = keys.find(user, key)
        if found is not None:
            row = comfy.store.by_task(found[1])
            if found[0] != digest:
                raise _rejected(IdempotencyKeyReusedError(
                    f"Idempotency-Key {key!r} was used for another request; send a new key "
                    "for a new prompt",
                    field="Idempotency-Key",
                    prompt_id=None if row is None else row.prompt_id,
                ))  # fmt: skip
            if row is not None:
                number = row.number
                shown: float | int = int(number) if float(number).is_integer() else number
                return {"prompt_id": row.prompt_id, "number": shown, "node_errors": {}}, True
        remembered = False

        def remember(task_id: str) -> None:
            nonlocal remembered
            keys.put(user, key, digest, task_id)
            remembered = True

        before_queue: Callable[[str], None] = remember
        try:
            answer = comfy.submit(body, principal, before_queue=before_queue)
        except BaseException:
            if remembered:
                keys.forget(user, key)
            raise
    return answer, False
