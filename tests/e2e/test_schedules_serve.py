"""Saved schedules tick with only `takeflow serve` running: the server supervises the Dagster
daemon (real `dagster-daemon`, real code location), whose run is adopted as a take and committed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from dagster_defs.runtime import open_runtime
from dagster_defs.ticker import dagster_environment, write_module_workspace
from stores.projects import ProjectCatalog
from tests.dagster_defs.conftest import save_demo_canvas
from tests.server.harness import ServerProcess

pytestmark = [pytest.mark.e2e]
SHOT = "ch01/sc01/sh020"
SCHEDULE = "demo__poster__minutely"


def save_minutely_schedule(canvas: Path, **fields: Any) -> None:
    """A sidecar whose schedule is due at the start of every minute (UTC)."""
    schedule: dict[str, Any] = {"name": "minutely", "cron": "* * * * *", "shot": SHOT}
    schedule |= {"inputs": {"grain.seed": 7}, "user": "scheduler", **fields}
    doc = {"format": "takeflow.schedules/v1", "schedules": [schedule]}
    canvas.with_name("poster.schedules.json").write_text(json.dumps(doc))


def home_with_schedule(root: Path) -> tuple[Path, Path]:
    """A home with the demo poster saved and a schedule due every minute; (home, project)."""
    home = root / "home"
    runtime = open_runtime(home, workers=0)
    try:
        project = runtime.projects.create("demo", "Demo project")
        save_minutely_schedule(save_demo_canvas(project))
        return home, project.path
    finally:
        runtime.close()


def scheduled_takes(home: Path) -> list[Any]:
    project = ProjectCatalog(home).get("demo")
    return [t for t in project.takes.list(shot=SHOT) if t.metadata.get("schedule") == SCHEDULE]


def wait_for_scheduled_take(home: Path, server: ServerProcess, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while not (takes := scheduled_takes(home)):
        assert server.proc.poll() is None, server.output()
        daemon_log = home / "dagster" / "ticker-daemon.log"
        tail = daemon_log.read_text(errors="replace")[-3000:] if daemon_log.exists() else ""
        assert time.monotonic() < deadline, f"no scheduled take:\n{server.output()}\n{tail}"
        time.sleep(2)
    return takes[0]


def wait_for_commit(project: Path, take_id: str, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        log = subprocess.run(
            ["git", "-C", str(project), "log", "--format=%s"], capture_output=True, text=True
        ).stdout
        if f"{take_id} of {SHOT} (poster)" in log:
            return log
        assert time.monotonic() < deadline, log
        time.sleep(1)


def schedules_check(server: ServerProcess) -> dict[str, Any]:
    report = server.http.get("/health", timeout=60).json()
    return dict(next(c for c in report["checks"] if c["name"] == "schedules"))


@pytest.mark.timeout(240)
def test_a_schedule_ticks_with_only_takeflow_serve_running(tmp_path: Path) -> None:
    home, project = home_with_schedule(tmp_path)
    with ServerProcess(home, cli=True) as server:
        take = wait_for_scheduled_take(home, server, timeout=150)
        assert take.metadata["user_id"] == "scheduler"
        assert take.metadata["dagster_run_id"]
        wait_for_commit(project, take.take_id)
        check = schedules_check(server)
        assert check["status"] == "ok", check
        assert check["details"]["state"] == "ticking" and check["details"]["live"], check
        assert check["details"]["daemon_pid"], check

        # a changed schedule restarts the daemon, so that it loads the new definitions
        save_minutely_schedule(project / "02_Source_Creative" / "poster.json", description="new")
        deadline, first_pid = time.monotonic() + 45, check["details"]["daemon_pid"]
        while schedules_check(server)["details"]["daemon_pid"] in (None, first_pid):
            assert time.monotonic() < deadline, "the daemon was not restarted"
            time.sleep(1)
        assert schedules_check(server)["details"]["restarts"] == 0  # a reload, not a crash


@pytest.mark.timeout(120)
def test_no_schedules_runs_no_daemon_and_health_says_so(tmp_path: Path) -> None:
    home, _ = home_with_schedule(tmp_path)
    with ServerProcess(home, "--no-schedules", cli=True) as server:
        time.sleep(3)
        check = schedules_check(server)
        assert check["status"] == "degraded", check
        assert check["details"]["state"] == "off" and not check["details"]["live"], check
        assert "--no-schedules" in check["message"]
        assert not (home / "dagster" / "ticker-daemon.log").exists()


@pytest.mark.timeout(180)
def test_a_schedule_started_from_dagster_starts_the_daemon(tmp_path: Path) -> None:
    """The demo's sample schedule is saved stopped; starting it in Dagster makes serve tick."""
    home, project = home_with_schedule(tmp_path)
    save_minutely_schedule(project / "02_Source_Creative" / "poster.json", enabled=False)
    with ServerProcess(home, cli=True) as server:
        time.sleep(6)  # a ticker poll
        assert schedules_check(server)["details"]["state"] == "idle"
        workspace = write_module_workspace(home / "dagster")
        dagster = str(Path(sys.executable).parent / "dagster")
        started = subprocess.run(
            [dagster, "schedule", "start", SCHEDULE, "-w", str(workspace)],
            env=dagster_environment(home, home / "dagster"),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert started.returncode == 0, started.stderr[-2000:]
        deadline = time.monotonic() + 30
        while (details := schedules_check(server)["details"])["daemon_pid"] is None:
            assert time.monotonic() < deadline, details
            time.sleep(1)
        assert details["state"] == "ticking" and details["enabled_schedules"] == 0, details
