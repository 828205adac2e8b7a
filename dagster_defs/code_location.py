"""The code location's entry point: what ``workspace.yaml``, ``takeflow ui``'s code server and
the daemon load (``dagster_defs.location.LOCATION_MODULE``, attribute ``takeflow_definitions``),
with ``TAKEFLOW_HOME`` naming the Takeflow home.

A run Dagster launches into this process (from the UI, a schedule tick) executes on the home's
runtime, opened here once per home, without workers (so it never recovers or queues), and
closed at exit. The jobs themselves are built by ``dagster_defs.definitions``.
"""

from __future__ import annotations

import atexit
import functools
import threading
from pathlib import Path

from dagster import Definitions

from dagster_defs.definitions import LocationSource, build_definitions
from dagster_defs.runtime import Runtime, open_runtime

_lock = threading.Lock()


@functools.cache
def location_runtime(home: Path) -> Runtime:
    """The runtime that runs adopted runs of ``home`` in this process (opened on first use)."""
    runtime = open_runtime(home, workers=0)
    atexit.register(runtime.close)
    return runtime


def run_backend(source: LocationSource) -> object:
    """The backend a job of ``source`` runs on: its home's runtime, knowing every job of the
    location (the shapes the source registered since, too)."""
    with _lock:
        runtime = location_runtime(source.home.path)
        for plan in source.compiler.registered_plans():
            runtime.compiler.register_plan(plan)
        return runtime.runner.backend


def location_source(home: str | Path | None = None) -> LocationSource:
    """The source the location is built from: ``home`` (default ``$TAKEFLOW_HOME``), its runs
    executed on ``location_runtime``."""
    return LocationSource.open(home, run_backend=run_backend)


def takeflow_definitions() -> Definitions:
    """Entry point named by ``workspace.yaml``: the definitions of ``$TAKEFLOW_HOME``."""
    return build_definitions(location_source())
