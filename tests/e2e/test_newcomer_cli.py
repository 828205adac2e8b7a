"""`takeflow init` leaves a home the README's by-hand Dagster line works on."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from dagster import DagsterInstance

from dagster_defs.instance import TakeflowInstance
from server.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_init_creates_the_dagster_home_the_workspace_needs(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert main(["--home", str(home), "init", str(tmp_path / "My Film")]) == 0
    assert (home / "projects.json").read_text().count('"my-film"') == 1
    assert (home / "dagster" / "dagster.yaml").is_file()
    env = {**os.environ, "TAKEFLOW_HOME": str(home), "DAGSTER_HOME": str(home / "dagster")}
    info = subprocess.run(
        [sys.executable, "-m", "dagster", "instance", "info"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert info.returncode == 0, info.stderr
    assert "class: FastSqliteRunStorage" in info.stdout  # the dagster.yaml Takeflow writes
    instance = DagsterInstance.from_config(str(home / "dagster"))
    try:
        assert isinstance(instance, TakeflowInstance)
    finally:
        instance.dispose()
