"""Dagster on shared PostgreSQL (distributed mode): pooled storages, no per-event NOTIFY."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from dagster import AssetKey, AssetMaterialization, DagsterRunStatus, job, op
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


def test_database_urls_are_pinned_to_psycopg2() -> None:
    assert sqlalchemy_url("postgresql://u@h:5/db") == "postgresql+psycopg2://u@h:5/db"
    assert sqlalchemy_url("postgres://u@h/db") == "postgresql+psycopg2://u@h/db"
    with pytest.raises(ValueError, match="not a PostgreSQL URL: mysql://"):
        sqlalchemy_url("mysql://u@h/db")
