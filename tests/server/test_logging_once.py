"""Building an app never reconfigures logging once ``serve`` has (``server.logging_once``).

``dictConfig`` takes each handler's lock; with worker threads logging, it deadlocked a restart in
CI. Here a handler's lock is held the way a thread mid-emit holds it: building the main app and
the ComfyUI app must not wait for it.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

import pytest

from server.app import create_app
from server.comfy.app import create_comfy_app
from server.comfy.service import ComfyService
from server.logging_once import configure_logging

if TYPE_CHECKING:
    from dagster_defs.runtime import Runtime


@pytest.mark.timeout(60)
def test_apps_build_while_a_thread_holds_a_handler_lock(runtime: Runtime) -> None:
    configure_logging()  # what ``serve`` does before it opens the runtime
    busy = logging.StreamHandler()
    logging.getLogger().addHandler(busy)
    built = threading.Event()

    def build() -> None:
        create_app(runtime)
        create_comfy_app(ComfyService(runtime))
        built.set()

    busy.acquire()  # a worker thread inside ``emit``
    try:
        builder = threading.Thread(target=build, daemon=True)
        builder.start()
        builder.join(timeout=15)
        assert built.is_set(), "building the app waited on a handler's lock (dictConfig again)"
    finally:
        busy.release()
        builder.join(timeout=15)
        logging.getLogger().removeHandler(busy)
