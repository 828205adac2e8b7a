"""Litestar's logging set up once per process, before the runtime starts its threads.

Litestar calls ``logging.config.dictConfig`` in every app's constructor. ``dictConfig`` takes
logging's module lock and then each existing handler's lock to close it; a worker thread that is
inside a handler (holding its lock) and needs the module lock, as Dagster's and SQLAlchemy's
loggers do, deadlocks with it. A restart that recovered tasks while building the app hung that
way in CI. ``serve`` configures logging (Litestar's, then uvicorn's) before opening the runtime;
every later app reuses it and uvicorn is told not to configure it again (``log_config=None``).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

from litestar.logging.config import LoggingConfig

_configured = threading.Event()
_configuring = threading.Lock()


@dataclass
class LoggingOnce(LoggingConfig):
    """A ``LoggingConfig`` whose ``configure`` applies ``dictConfig`` only the first time."""

    def configure(self) -> Any:
        with _configuring:
            if _configured.is_set():
                return logging.getLogger
            get_logger = super().configure()
            _configured.set()
            return get_logger


def logging_config() -> LoggingOnce:
    """The config every Takeflow app passes to Litestar."""
    return LoggingOnce()


def configure_logging() -> None:
    """Apply Litestar's and uvicorn's logging now (call it while the process has one thread)."""
    import copy
    import logging.config

    from uvicorn.config import LOGGING_CONFIG

    logging_config().configure()
    logging.config.dictConfig(copy.deepcopy(LOGGING_CONFIG))
