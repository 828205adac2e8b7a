"""The code location's entry point: a job Dagster runs in this process executes on the runtime of
the location's own home, opened once per home (no process-wide runtime singleton)."""

from __future__ import annotations

import atexit
from pathlib import Path

import pytest

from dagster_defs.code_location import location_runtime, location_source, run_backend
from dagster_defs.compiler import RESOURCE_KEY
from dagster_defs.definitions import LocationSource, build_definitions
from graph_runtime.errors import TakeflowError


def test_each_home_runs_its_jobs_on_its_own_runtime(tmp_path: Path) -> None:
    first, second = location_source(tmp_path / "first"), location_source(tmp_path / "second")
    try:
        backend = run_backend(first)
        assert run_backend(first) is backend  # opened once for the home
        assert run_backend(second) is not backend
        for source in (first, second):
            runtime = location_runtime(source.home.path)
            assert runtime.home.path == source.home.path
            assert run_backend(source) is runtime.runner.backend
    finally:
        for source in (first, second):
            runtime = location_runtime(source.home.path)
            atexit.unregister(runtime.close)
            runtime.close()
        location_runtime.cache_clear()


def test_a_source_without_a_runtime_builds_jobs_but_runs_none(tmp_path: Path) -> None:
    source = LocationSource.open(tmp_path / "home")
    assert build_definitions(source).get_repository_def().get_all_jobs() == []
    bridge = source.compiler.resource_defs[RESOURCE_KEY]
    with pytest.raises(TakeflowError, match="runs no jobs: load the location through"):
        bridge.resource_fn(None)
