"""`takeflow init` + `takeflow run` as a user runs them: real processes, git, LFS and Dagster."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from dagster import AssetKey, DagsterInstance, DagsterRunStatus

ROOT = Path(__file__).resolve().parents[2]
TAKEFLOW = [sys.executable, "-m", "server.cli"]


def takeflow(*args: str, home: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TAKEFLOW_HOME": str(home)}
    return subprocess.run(
        [*TAKEFLOW, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_run_example_graph_makes_take_commit_and_dagster_records(tmp_path: Path) -> None:
    home, project = tmp_path / "home", tmp_path / "spot-01"
    init = takeflow("init", str(project), home=home)
    assert init.returncode == 0, init.stderr
    assert "created project 'spot-01'" in init.stdout

    done = takeflow(
        "run",
        "examples/poster.json",
        "--project",
        str(project),
        "--shot",
        "ch01/sc01/sh010",
        home=home,
    )
    assert done.returncode == 0, done.stderr
    task_id = re.search(r"task (task_[0-9a-f]+): completed", done.stdout).group(1)  # type: ignore[union-attr]
    png = project / "03_Renders/ch01/sc01/sh010/takes/take_001/image.png"
    assert f"take_001 image: {png}" in done.stdout
    assert png.read_bytes().startswith(b"\x89PNG")
    assert "final                completed" in done.stderr  # the per-node progress lines

    log = subprocess.run(
        ["git", "log", "-1", "--format=%B"], cwd=project, capture_output=True, text=True, check=True
    ).stdout
    assert f"Takeflow-Task: {task_id}" in log
    blob = subprocess.run(
        ["git", "cat-file", "-p", "HEAD:03_Renders/ch01/sc01/sh010/takes/take_001/image.png"],
        cwd=project,
        capture_output=True,
        check=True,
    ).stdout
    assert blob.startswith(b"version https://git-lfs.github.com/spec/v1")
    lfs = subprocess.run(["git", "lfs", "ls-files"], cwd=project, capture_output=True, text=True)
    assert "takes/take_001/image.png" in lfs.stdout

    instance = DagsterInstance.from_config(str(home / "dagster"))
    try:
        runs = instance.get_runs()
        assert len(runs) == 1 and runs[0].status == DagsterRunStatus.SUCCESS
        assert runs[0].tags["takeflow/task_id"] == task_id
        mat = instance.get_latest_materialization_event(
            AssetKey(["takeflow", "spot-01", "ch01", "sc01", "sh010", "sh010.image"])
        )
        assert mat is not None and mat.run_id == runs[0].run_id
    finally:
        instance.dispose()


def test_invalid_graph_exits_2_with_every_error(tmp_path: Path) -> None:
    result = takeflow("run", "tests/fixtures/graphs/invalid_everything.json", home=tmp_path / "h")
    assert result.returncode == 2
    assert "error: the graph is invalid (12 problem(s)):" in result.stderr
    assert (
        "  c.widht: [unknown_input] template 'resize' has no input 'widht'; did you mean 'width'?"
        in result.stderr
    )
    assert "[cycle]" in result.stderr


def test_templates_lists_builtins(tmp_path: Path) -> None:
    result = takeflow("templates", home=tmp_path / "h")
    assert result.returncode == 0
    assert re.search(r"^resize@1\.0\.0\s+image\s+\(image:image, width:integer", result.stdout, re.M)
