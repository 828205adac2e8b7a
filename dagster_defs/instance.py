"""The persistent Dagster instance under the Takeflow home.

Two config files share one storage: ``dagster.yaml`` (for the webserver and daemon; it may carry
UI settings such as ``nux``) and ``takeflow-runner.yaml`` (for the runner; it carries no settings
keys, since those make every in-process run call ``logging.config.dictConfig``, which deadlocks
under threads: see docs/runner-design.md).
"""

from __future__ import annotations

from pathlib import Path

from dagster import DagsterInstance

RUNNER_CONFIG = "takeflow-runner.yaml"


def _storage_yaml(dagster_home: Path) -> str:
    history = dagster_home / "history"
    return f"""run_storage:
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
compute_logs:
  module: dagster._core.storage.noop_compute_log_manager
  class: NoOpComputeLogManager
local_artifact_storage:
  module: dagster._core.storage.root
  class: LocalArtifactStorage
  config:
    base_dir: {dagster_home}
"""


def write_instance_config(dagster_home: Path) -> None:
    """Write both config files (idempotent)."""
    dagster_home.mkdir(parents=True, exist_ok=True)
    storage = _storage_yaml(dagster_home)
    ui_settings = "telemetry:\n  enabled: false\nnux:\n  enabled: false\n"
    (dagster_home / "dagster.yaml").write_text(storage + ui_settings)
    (dagster_home / RUNNER_CONFIG).write_text(storage)


def open_runner_instance(dagster_home: Path) -> DagsterInstance:
    """The instance the runner executes on: persistent, thread-safe, no logging reconfiguration."""
    write_instance_config(dagster_home)
    return DagsterInstance.from_config(str(dagster_home), config_filename=RUNNER_CONFIG)
