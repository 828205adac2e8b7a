"""Dagster on shared PostgreSQL (distributed mode): pooled storages, no per-event NOTIFY."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from dagster import (
    AssetKey,
    AssetMaterialization,
    DagsterEventType,
    DagsterInstance,
    DagsterRunStatus,
    job,
    op,
)
from sqlalchemy.pool import QueuePool

from dagster_defs.instance import open_runner_instance
from dagster_defs.postgres_storage import (
    PooledPostgresEventLogStorage,
    PooledPostgresRunStorage,
    sqlalchemy_url,
)


@op
def shout(context) -> str:  # type: ignore[no-untyped-def]
    context.log_event(AssetMaterialization(asset_key=AssetKey(["takeflow", "demo", "x"])))
    return "hi"


@job
def one_op() -> None:
    shout()


def test_runs_events_and_materializations_land_in_postgres_without_notify(
    pg_url: str, tmp_path: Path
) -> None:
    instance = open_runner_instance(tmp_path / "dagster", pg_url)
    try:
        assert isinstance(instance.run_storage, PooledPostgresRunStorage)
        assert isinstance(instance.event_log_storage, PooledPostgresEventLogStorage)
        assert isinstance(instance.event_log_storage._engine.pool, QueuePool)
        listener = psycopg.connect(pg_url, autocommit=True)
        listener.execute("LISTEN run_events")
        result = one_op.execute_in_process(instance=instance, tags={"takeflow/task_id": "t1"})
        assert result.success
        notified = list(listener.notifies(timeout=0.3, stop_after=1))
        listener.close()
        assert notified == []
        # a second instance (another process's view) sees the run, its events and the asset
        other = open_runner_instance(tmp_path / "other", pg_url)
        run = other.get_run_by_id(result.run_id)
        assert run is not None and run.status == DagsterRunStatus.SUCCESS
        assert run.tags["takeflow/task_id"] == "t1"
        records = other.get_records_for_run(result.run_id).records
        assert len(records) >= 8
        materialized = other.get_latest_materialization_event(AssetKey(["takeflow", "demo", "x"]))
        assert materialized is not None and materialized.run_id == result.run_id
        other.dispose()
    finally:
        instance.dispose()


def _event_types(instance: DagsterInstance, run_id: str) -> list[str]:
    records = instance.get_records_for_run(run_id).records
    return [r.event_log_entry.dagster_event_type or "log" for r in records]  # type: ignore[misc]


def test_step_events_are_grouped_with_run_events_in_emit_order(pg_url: str, tmp_path: Path) -> None:
    """A 1-op run writes its events in a few statements, in the order Dagster emitted them
    (the same order an unpatched in-memory instance stores), all before the run's end."""
    instance = open_runner_instance(tmp_path / "dagster", pg_url)
    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "INSERT INTO event_logs" in statement:
            statements.append(statement)

    engine = instance.event_log_storage._engine  # type: ignore[attr-defined]
    sa.event.listen(engine, "before_cursor_execute", count)
    try:
        result = one_op.execute_in_process(instance=instance)
        assert result.success
        other = open_runner_instance(tmp_path / "other", pg_url)
        stored = _event_types(other, result.run_id)
        reference = DagsterInstance.ephemeral()
        expected = one_op.execute_in_process(instance=reference)
        assert stored == _event_types(reference, expected.run_id)
        assert stored[-1] == DagsterEventType.RUN_SUCCESS.value
        assert len(stored) >= 8
        # RUN_START, the step events with the materialization, RUN_SUCCESS with the rest
        assert len(statements) <= 4, statements
        run = other.get_run_record_by_id(result.run_id)
        assert run is not None and run.dagster_run.status == DagsterRunStatus.SUCCESS
        assert run.start_time is not None and run.end_time is not None
        other.dispose()
        reference.dispose()
    finally:
        sa.event.remove(engine, "before_cursor_execute", count)
        instance.dispose()


RELEASE = threading.Event()


@op
def wait_for_release() -> str:
    assert RELEASE.wait(30)
    return "done"


@job
def long_op() -> None:
    wait_for_release()


def test_a_long_steps_start_is_visible_while_it_runs(pg_url: str, tmp_path: Path) -> None:
    """Grouped events wait at most ``FLUSH_AFTER_S``: the Dagster UI (another process) sees a
    long step as started while it still runs."""
    instance = open_runner_instance(tmp_path / "dagster", pg_url)
    other = open_runner_instance(tmp_path / "other", pg_url)
    RELEASE.clear()
    results: list[Any] = []
    runner = threading.Thread(
        target=lambda: results.append(long_op.execute_in_process(instance=instance))
    )
    runner.start()
    try:
        seen: list[str] = []
        deadline = time.monotonic() + 10
        while DagsterEventType.STEP_START.value not in seen and time.monotonic() < deadline:
            runs = other.get_runs()
            seen = _event_types(other, runs[0].run_id) if runs else []
            time.sleep(0.05)
        assert DagsterEventType.STEP_START.value in seen
        assert DagsterEventType.STEP_SUCCESS.value not in seen
    finally:
        RELEASE.set()
        runner.join(30)
        other.dispose()
        instance.dispose()
    assert results and results[0].success


def test_database_urls_are_pinned_to_psycopg2() -> None:
    assert sqlalchemy_url("postgresql://u@h:5/db") == "postgresql+psycopg2://u@h:5/db"
    assert sqlalchemy_url("postgres://u@h/db") == "postgresql+psycopg2://u@h/db"
    with pytest.raises(ValueError, match="not a PostgreSQL URL: mysql://"):
        sqlalchemy_url("mysql://u@h/db")
