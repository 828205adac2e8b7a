"""`takeflow ui` as a user starts it: the default (with its Dagster daemon) keeps serving, and
`--no-daemon` still runs what the UI launches (the run coordinator does not queue)."""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from dagster_defs.compiler import job_name
from dagster_defs.runtime import open_runtime
from graph_runtime.canvas import CanvasGraph
from tests.dagster_defs.conftest import save_demo_canvas
from tests.dagster_defs.ui import Ui, graphql, home_env

pytestmark = [pytest.mark.e2e]

DAEMON_HEALTH = (
    "{ instance { daemonHealth { allDaemonStatuses { daemonType healthy required"
    " lastHeartbeatTime } } } }"
)


@dataclass
class UiHome:
    path: Path
    job: str

    def env(self) -> dict[str, str]:
        return home_env(self.path)


@pytest.fixture(scope="module")
def ui_home(tmp_path_factory: pytest.TempPathFactory) -> UiHome:
    """A home with the demo canvas (and its nightly schedule) saved; nothing run yet."""
    home = tmp_path_factory.mktemp("ui-launcher") / "home"
    runtime = open_runtime(home, workers=0)
    try:
        project = runtime.projects.create("demo", "Demo project")
        graph = CanvasGraph.model_validate_json(save_demo_canvas(project).read_text())
        return UiHome(home, job_name(runtime.runner.plan(graph)))
    finally:
        runtime.close()


def _children(pid: int) -> list[str]:
    """Command lines of the live descendants of ``pid``, untruncated (``-ww``: a pipe gets 80
    columns otherwise, and a long checkout path cut the daemon's name off in CI)."""
    out = subprocess.run(["ps", "-ww", "-eo", "pid=,ppid=,args="], capture_output=True, text=True)
    rows = [line.split(None, 2) for line in out.stdout.splitlines() if line.strip()]
    kids: dict[int, list[tuple[int, str]]] = {}
    for row in rows:
        if len(row) == 3:
            kids.setdefault(int(row[1]), []).append((int(row[0]), row[2]))
    found, stack = [], [pid]
    while stack:
        for child, args in kids.get(stack.pop(), []):
            found.append(args)
            stack.append(child)
    return found


@pytest.mark.timeout(300)
def test_takeflow_ui_with_its_daemon_still_serves_after_two_minutes(ui_home: UiHome) -> None:
    ui = Ui(ui_home.path, ui_home.env())
    try:
        ui.wait_ready()
        started = time.monotonic()
        while time.monotonic() - started < 125:  # the UI died within a minute of its start
            assert ui.proc.poll() is None, f"takeflow ui stopped:\n{ui.output()}"
            time.sleep(5)
        assert ui.proc.poll() is None, ui.output()
        assert any("dagster-daemon" in c for c in _children(ui.proc.pid)), _children(ui.proc.pid)
        deadline = time.monotonic() + 60
        while True:  # the scheduler daemon's heartbeat, as the UI's daemon page shows it
            health = graphql(ui.url, DAEMON_HEALTH)["instance"]["daemonHealth"]
            statuses = {s["daemonType"]: s for s in health["allDaemonStatuses"]}
            if statuses["SCHEDULER"]["healthy"]:
                break
            assert time.monotonic() < deadline, (statuses, ui.output())
            time.sleep(2)
        age = time.time() - statuses["SCHEDULER"]["lastHeartbeatTime"]
        assert age < 90, statuses["SCHEDULER"]
        # launches go straight to the launcher: the run queue daemon is not needed
        assert (
            "QUEUED_RUN_COORDINATOR" not in statuses
            or not statuses["QUEUED_RUN_COORDINATOR"]["required"]
        )
    finally:
        ui.stop()
    workspace = str(ui_home.path / "dagster")
    left = subprocess.run(["ps", "-ww", "-eo", "args="], capture_output=True, text=True).stdout
    assert not [ln for ln in left.splitlines() if "dagster-daemon" in ln and workspace in ln]


@pytest.mark.timeout(300)
def test_no_daemon_ui_still_runs_what_it_launches(ui_home: UiHome) -> None:
    ui = Ui(ui_home.path, ui_home.env(), "--no-daemon")
    try:
        ui.wait_ready()
        assert not any("dagster-daemon" in c for c in _children(ui.proc.pid))
        (repo,) = graphql(ui.url, "{ repositoriesOrError { ... on RepositoryConnection {"
                          " nodes { name } } } }")["repositoriesOrError"]["nodes"]  # fmt: skip
        launched = graphql(
            ui.url,
            "mutation($p: ExecutionParams!) { launchRun(executionParams: $p) { __typename"
            " ... on LaunchRunSuccess { run { runId status } }"
            " ... on PythonError { message } ... on RunConfigValidationInvalid { errors"
            " { message } } } }",
            {
                "p": {
                    "selector": {
                        "repositoryLocationName": "takeflow",
                        "repositoryName": repo["name"],
                        "jobName": ui_home.job,
                    },
                    "executionMetadata": {
                        "tags": [{"key": "takeflow/shot", "value": "ch01/sc01/sh030"}]
                    },
                }
            },
        )["launchRun"]
        assert launched["__typename"] == "LaunchRunSuccess", launched
        run_id = launched["run"]["runId"]
        deadline = time.monotonic() + 120
        status = launched["run"]["status"]
        while status not in ("SUCCESS", "FAILURE", "CANCELED"):
            assert time.monotonic() < deadline, f"run still {status} (queued with no daemon?)"
            time.sleep(1)
            status = graphql(
                ui.url,
                "query($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }",
                {"id": run_id},
            )["runOrError"]["status"]
        assert status == "SUCCESS", ui.output()
    finally:
        ui.stop()
