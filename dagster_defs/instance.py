"""The persistent Dagster instance under the Takeflow home.

One ``dagster.yaml`` serves the runner, the webserver and the daemon. It names
``TakeflowInstance`` as the instance class: with any settings key in ``dagster.yaml`` (we set
``telemetry`` and ``nux`` off), stock Dagster calls ``logging.config.dictConfig`` on every run,
which deadlocks threads running ``execute_in_process`` together (see docs/runner-design.md).
``TakeflowInstance`` skips that reconfiguration; Takeflow defines no YAML log handlers.

Both modes use Dagster's ``DefaultRunCoordinator``: a run launched from the UI (or a
re-execution) goes straight to the run launcher, so it runs without the daemon; the daemon
(``dagster_defs.ticker``) is only needed for schedule and sensor ticks.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dagster import DagsterInstance
from dagster._core.instance.ref import InstanceRef


class TakeflowInstance(DagsterInstance):
    """A ``DagsterInstance`` that never reconfigures Python logging per run."""

    def get_yaml_python_handlers(self) -> Sequence[logging.Handler]:
        return []

    @classmethod
    def config_schema(cls) -> dict[str, Any]:
        return {}

    @staticmethod
    def config_defaults(base_dir: str) -> Mapping[str, Any]:
        return InstanceRef.config_defaults(base_dir)


def instance_yaml(dagster_home: Path, database_url: str | None = None) -> str:
    """``database_url`` (distributed mode): runs, events and schedules in shared PostgreSQL."""
    history = dagster_home / "history"
    head = """instance_class:
  module: dagster_defs.instance
  class: TakeflowInstance
"""
    coordinator = """run_coordinator:
  module: dagster._core.run_coordinator.default_run_coordinator
  class: DefaultRunCoordinator
"""
    tail = f"""compute_logs:
  module: dagster._core.storage.noop_compute_log_manager
  class: NoOpComputeLogManager
local_artifact_storage:
  module: dagster._core.storage.root
  class: LocalArtifactStorage
  config:
    base_dir: {dagster_home}
telemetry:
  enabled: false
nux:
  enabled: false
"""
    if database_url:  # distributed mode (see dagster_defs/postgres_storage.py)
        from dagster_defs.postgres_storage import storage_yaml

        # Takeflow's job queue is the run queue: launches go straight to the launcher (no
        # daemon needed to dequeue them), which makes each run a queue job for the workers
        launcher = f"""run_launcher:
  module: dagster_defs.launcher
  class: QueueRunLauncher
  config:
    database_url: "{database_url}"
"""
        return head + storage_yaml(database_url) + coordinator + launcher + tail
    return (
        head
        + coordinator
        + f"""run_storage:
  module: dagster_defs.storage
  class: FastSqliteRunStorage
  config:
    base_dir: {history}
event_log_storage:
  module: dagster_defs.storage
  class: FastSqliteEventLogStorage
  config:
    base_dir: {history}
schedule_storage:
  module: dagster._core.storage.schedules
  class: SqliteScheduleStorage
  config:
    base_dir: {dagster_home / "schedules"}
"""
        + tail
    )


def write_instance_config(dagster_home: Path, database_url: str | None = None) -> None:
    """Write ``dagster.yaml`` (idempotent). ``TAKEFLOW_DATABASE_URL`` (distributed mode) is
    honoured when no URL is given, so `takeflow ui` shows the shared PostgreSQL instance."""
    database_url = database_url or os.environ.get("TAKEFLOW_DATABASE_URL") or None
    dagster_home.mkdir(parents=True, exist_ok=True)
    target = dagster_home / "dagster.yaml"
    text = instance_yaml(dagster_home, database_url)
    if not target.exists() or target.read_text() != text:
        target.write_text(text)


def open_runner_instance(dagster_home: Path, database_url: str | None = None) -> DagsterInstance:
    """The persistent instance the runner executes on (thread-safe, no logging reconfiguration)."""
    write_instance_config(dagster_home, database_url)
    instance = DagsterInstance.from_config(str(dagster_home))
    if not isinstance(instance, TakeflowInstance):
        raise RuntimeError(f"{dagster_home}/dagster.yaml does not select TakeflowInstance")
    return instance
