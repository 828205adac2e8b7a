"""One socket's tasks (a pump that sends, a receiver that reads) run until either ends.

Both of the server's WebSocket endpoints (``/ws/{user_id}`` and ComfyUI's ``/ws``) serve a client
this way: whichever side stops first (the client went away, the pump failed) ends the other,
and nothing is left running when the handler returns.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine, Mapping
from typing import Any


async def run_until_one_ends(
    coroutines: Mapping[str, Coroutine[Any, Any, None]],
) -> list[BaseException]:
    """Run each coroutine as a task (named by its key) until the first ends, then cancel and
    await the others. Returns what the finished ones raised (empty when they returned)."""
    tasks = [asyncio.create_task(coro, name=name) for name, coro in coroutines.items()]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
    return [exc for task in done if not task.cancelled() and (exc := task.exception())]
