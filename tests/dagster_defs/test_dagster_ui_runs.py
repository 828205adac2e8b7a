"""Runs started from Dagster's own interfaces, on the real webserver and daemon that `takeflow ui`
starts (its default, daemon on): a GraphQL `launchRun` with edited config, a re-execution and a
schedule tick evaluated by the daemon. Each take's bytes must equal those of the same graph and
values submitted through Takeflow (provenance: a take is what its record says). Then a browser
pass over the UI pages a user opens, with the screenshots of docs/screenshots refreshed on
request (TAKEFLOW_UPDATE_SCREENSHOTS=1)."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from dagster_defs.compiler import job_name, run_config
from dagster_defs.runtime import open_runtime
from graph_runtime.canvas import CanvasGraph
from graph_runtime.sweeps import set_inputs
from graph_runtime.tasks import TaskStatus
from stores.projects import ProjectCatalog
from tests.dagster_defs.conftest import save_demo_canvas
from tests.dagster_defs.ui import CHROMIUM_FLAGS, REPO, Ui, graphql

SCREENSHOTS = REPO / "docs" / "screenshots"
EDITS = {"grain.seed": 9, "mix.opacity": 0.6, "sky.start_color": "#aa0000"}
TICK_INPUTS = {"grain.seed": 21, "mix.opacity": 0.3}
TICK_SHOT = "ch01/sc01/sh030"
pytestmark = [pytest.mark.e2e]


@dataclass
class UiHome:
    path: Path
    job: str
    edited_config: dict[str, Any]
    references: dict[str, str] = field(default_factory=dict)  # name -> sha256 of its image
    edited_task: str = ""

    def env(self) -> dict[str, str]:
        return {**os.environ, "TAKEFLOW_HOME": str(self.path)}

    def take_sha(self, shot: str, number: int) -> str | None:
        project = ProjectCatalog(self.path).get("demo")
        found = [t for t in project.takes.list(shot=shot) if t.number == number]
        return found[0].outputs["image"].sha256 if found else None

    def take(self, shot: str, number: int) -> Any:
        project = ProjectCatalog(self.path).get("demo")
        return next(t for t in project.takes.list(shot=shot) if t.number == number)


@pytest.fixture(scope="module")
def ui_home(tmp_path_factory: pytest.TempPathFactory) -> UiHome:
    """The demo canvas saved with a schedule due every minute; references made through
    Takeflow's own API (the saved canvas first, so every node of it is in the node cache)."""
    home = tmp_path_factory.mktemp("uiruns") / "home"
    runtime = open_runtime(home, workers=1)
    try:
        project = runtime.projects.create("demo", "Demo project")
        canvas = save_demo_canvas(project)
        sidecar = canvas.with_name("poster.schedules.json")
        schedules = json.loads(sidecar.read_text())
        schedules["schedules"].append(
            {"name": "minutely", "cron": "* * * * *", "shot": TICK_SHOT, "inputs": TICK_INPUTS}
        )
        sidecar.write_text(json.dumps(schedules))
        saved = CanvasGraph.model_validate_json(canvas.read_text())
        edited = set_inputs(saved, EDITS)
        plan = runtime.runner.plan(edited)
        made = UiHome(home, job_name(plan), run_config(plan))

        def submit(name: str, graph: CanvasGraph, shot: str) -> str:
            record = runtime.runner.submit(graph, project_id="demo", shot=shot, user="artist")
            done = runtime.runner.wait(record.task_id, 60)
            assert done.status == TaskStatus.COMPLETED, done.error
            made.references[name] = done.result.outputs["image"]["sha256"]
            return record.task_id

        submit("saved", saved, "ch01/sc01/sh010")  # the canvas's own shot
        made.edited_task = submit("edited", edited, "ref/r01/edited")
        submit("tick", set_inputs(saved, TICK_INPUTS), "ref/r01/tick")
        assert len(set(made.references.values())) == 3
        return made
    finally:
        runtime.close()


@pytest.fixture(scope="module")
def ui(ui_home: UiHome) -> Iterator[str]:
    """`takeflow ui` as the README starts it: webserver, code server and daemon."""
    ui = Ui(ui_home.path, ui_home.env()).wait_ready()
    try:
        yield ui.url
        assert ui.proc.poll() is None, (
            f"takeflow ui stopped while the tests used it:\n{ui.output()}"
        )
    finally:
        ui.stop()


RUN = """query($id: ID!) { runOrError(runId: $id) { __typename
  ... on Run { status tags { key value } } } }"""


def _wait_for_run(url: str, run_id: str, timeout: float = 120) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    status = ""
    while time.monotonic() < deadline:
        run = graphql(url, RUN, {"id": run_id})["runOrError"]
        status = run.get("status", "")
        if status in ("SUCCESS", "FAILURE", "CANCELED"):
            assert status == "SUCCESS", run
            return {t["key"]: t["value"] for t in run["tags"]}
        time.sleep(1)
    pytest.fail(f"run {run_id} still {status or 'unknown'} after {timeout} s")


@pytest.mark.timeout(300)
def test_a_launch_from_the_ui_with_edited_config_makes_the_take_of_those_values(
    ui_home: UiHome, ui: str
) -> None:
    launched = graphql(
        ui,
        "mutation($p: ExecutionParams!) { launchRun(executionParams: $p) { __typename"
        " ... on LaunchRunSuccess { run { runId } } ... on PythonError { message }"
        " ... on RunConfigValidationInvalid { errors { message } } } }",
        {
            "p": {
                "selector": {
                    "repositoryLocationName": "takeflow",
                    "repositoryName": "__repository__",
                    "jobName": ui_home.job,
                },
                "runConfigData": ui_home.edited_config,
                "executionMetadata": {"tags": [{"key": "takeflow/shot", "value": "ui/u01/launch"}]},
            }
        },
    )["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    tags = _wait_for_run(ui, launched["run"]["runId"])
    assert ui_home.take_sha("ui/u01/launch", 1) == ui_home.references["edited"]
    take = ui_home.take("ui/u01/launch", 1)
    assert take.metadata["inputs"]["grain"]["seed"] == 9
    assert tags["takeflow/task_id"] == take.metadata["task_id"]
    assert tags["takeflow/graph_hash"] == take.metadata["graph_hash"]


@pytest.mark.timeout(300)
def test_a_re_execution_from_the_ui_reproduces_its_run_as_a_new_task(
    ui_home: UiHome, ui: str
) -> None:
    (parent,) = graphql(
        ui,
        "query($f: RunsFilter) { runsOrError(filter: $f) { ... on Runs { results { runId } } } }",
        {"f": {"tags": [{"key": "takeflow/task_id", "value": ui_home.edited_task}]}},
    )["runsOrError"]["results"]
    launched = graphql(
        ui,
        "mutation($id: String!) { launchRunReexecution(reexecutionParams:"
        " {parentRunId: $id, strategy: ALL_STEPS}) { __typename"
        " ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } } }",
        {"id": parent["runId"]},
    )["launchRunReexecution"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    tags = _wait_for_run(ui, launched["run"]["runId"])
    assert ui_home.take_sha("ref/r01/edited", 2) == ui_home.references["edited"]
    take = ui_home.take("ref/r01/edited", 2)
    assert tags["takeflow/task_id"] == take.metadata["task_id"] != ui_home.edited_task
    assert tags["takeflow/parent_task_id"] == ui_home.edited_task
    # the new task's id finds exactly its own run; the parent keeps exactly one
    for task_id, run_id in ((take.metadata["task_id"], launched["run"]["runId"]),
                            (ui_home.edited_task, parent["runId"])):  # fmt: skip
        found = graphql(
            ui,
            "query($f: RunsFilter) { runsOrError(filter: $f) { ... on Runs {"
            " results { runId } } } }",
            {"f": {"tags": [{"key": "takeflow/task_id", "value": task_id}]}},
        )["runsOrError"]["results"]
        assert [r["runId"] for r in found] == [run_id]


@pytest.mark.timeout(300)
def test_the_daemon_ticks_a_schedule_into_the_take_of_its_inputs(ui_home: UiHome, ui: str) -> None:
    deadline = time.monotonic() + 150  # due within a minute, plus the run
    while ui_home.take_sha(TICK_SHOT, 1) is None:
        assert time.monotonic() < deadline, "no take from the minutely schedule"
        time.sleep(2)
    take = ui_home.take(TICK_SHOT, 1)
    assert take.outputs["image"].sha256 == ui_home.references["tick"]
    assert take.metadata["inputs"]["grain"]["seed"] == 21
    assert take.metadata["schedule"] == "demo__poster__minutely"


PAGES = {
    "dagster-runs": "/runs",
    "dagster-asset-graph": "/locations/__repository__@takeflow/asset-groups/takeflow_demo",
    "dagster-take-asset": "/assets/takeflow/demo/ch01/sc01/sh010/sh010.image?view=events",
    "dagster-schedules": "/automation",
}


@pytest.mark.timeout(300)
def test_browser_pass_over_the_dagster_ui(ui_home: UiHome, ui: str, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    (run,) = graphql(
        ui,
        "query($f: RunsFilter) { runsOrError(filter: $f) { ... on Runs { results { runId } } } }",
        {"f": {"tags": [{"key": "takeflow/task_id", "value": ui_home.edited_task}]}},
    )["runsOrError"]["results"]
    pages = {**PAGES, "dagster-run": f"/runs/{run['runId']}"}
    expected = {
        "dagster-runs": ui_home.job.split("__")[0],
        "dagster-asset-graph": "poster.stamp",
        "dagster-take-asset": "take_001",
        "dagster-schedules": "demo__poster__minutely",
        "dagster-run": "takeflow_takes",
    }
    shots = {}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            for name, path in pages.items():
                page.goto(f"{ui}{path}", timeout=60_000)
                try:
                    page.get_by_text(expected[name], exact=False).first.wait_for(timeout=60_000)
                except Exception:
                    page.screenshot(path=str(tmp_path / f"failed-{name}.png"))
                    raise AssertionError(f"{name}: no {expected[name]!r} ({tmp_path})") from None
                page.wait_for_function(
                    "() => !document.body.innerText.includes('Loading...')", timeout=60_000
                )
                if name == "dagster-take-asset":  # the take's thumbnail, shown inline
                    page.locator("img[src^='data:image/png']").first.wait_for(timeout=30_000)
                page.wait_for_timeout(1000)  # let the layout settle
                shots[name] = tmp_path / f"{name}.png"
                page.screenshot(path=str(shots[name]))
        finally:
            browser.close()
    for name, shot in shots.items():
        data = shot.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000, name
        if os.environ.get("TAKEFLOW_UPDATE_SCREENSHOTS") == "1":  # docs refresh, on request
            shutil.copy(shot, SCREENSHOTS / shot.name)
