"""Through Dagster's own interfaces: the `dagster` CLI against workspace.yaml, and the GraphQL API
and UI of the webserver that `takeflow ui` starts, on a home where Takeflow already ran a graph."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from dagster_defs.compiler import job_name
from dagster_defs.runtime import open_runtime
from graph_runtime.canvas import CanvasGraph
from graph_runtime.tasks import TaskStatus
from tests.dagster_defs.conftest import FIXTURES, save_demo_canvas
from tests.dagster_defs.ui import CHROMIUM_FLAGS, REPO, Ui, graphql, home_env

SCREENSHOT = REPO / "docs" / "screenshots" / "dagster-asset-graph.png"


@dataclass
class DemoHome:
    path: Path
    project_path: Path
    task_id: str
    job: str

    def env(self) -> dict[str, str]:
        return home_env(self.path)


@pytest.fixture(scope="module")
def demo_home(tmp_path_factory: pytest.TempPathFactory) -> DemoHome:
    """A home with the demo canvas saved and run once from Takeflow."""
    home = tmp_path_factory.mktemp("ui") / "home"
    runtime = open_runtime(home, workers=1)
    try:
        project = runtime.projects.create("demo", "Demo project")
        graph = CanvasGraph.model_validate_json(save_demo_canvas(project).read_text())
        record = runtime.runner.submit(graph, project_id="demo", user="artist")
        assert runtime.runner.wait(record.task_id, 60).status == TaskStatus.COMPLETED
        return DemoHome(home, project.path, record.task_id, job_name(runtime.runner.plan(graph)))
    finally:
        runtime.close()


@pytest.fixture(scope="module")
def ui_url(demo_home: DemoHome) -> Iterator[str]:
    """`takeflow ui --no-daemon` on a free loopback port (code server + dagster-webserver)."""
    ui = Ui(demo_home.path, demo_home.env(), "--no-daemon").wait_ready()
    try:
        yield ui.url
    finally:
        ui.stop()


REPOSITORY = """{ repositoriesOrError { ... on RepositoryConnection { nodes {
  name location { name }
  jobs { name tags { key value } }
  schedules { name cronSchedule executionTimezone scheduleState { status } }
} } } }"""


def _dagster_cli(demo_home: DemoHome, *args: str) -> str:
    result = subprocess.run(
        [str(Path(sys.executable).parent / "dagster"), *args, "-w", "workspace.yaml"],
        cwd=REPO,
        env=demo_home.env(),
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@pytest.mark.timeout(200)
def test_dagster_cli_lists_the_job_and_the_schedule(demo_home: DemoHome) -> None:
    assert demo_home.job in _dagster_cli(demo_home, "job", "list").split()
    schedules = _dagster_cli(demo_home, "schedule", "list")
    assert "demo__poster__nightly" in schedules and "[RUNNING]" in schedules


@pytest.mark.e2e
@pytest.mark.timeout(240)
def test_graphql_shows_job_run_lineage_and_schedule(demo_home: DemoHome, ui_url: str) -> None:
    (repo,) = graphql(ui_url, REPOSITORY)["repositoriesOrError"]["nodes"]
    assert repo["location"]["name"] == "takeflow"
    jobs = {j["name"]: {t["key"]: t["value"] for t in j["tags"]} for j in repo["jobs"]}
    assert jobs[demo_home.job]["takeflow/project"] == "demo"
    (schedule,) = repo["schedules"]
    assert schedule == {
        "name": "demo__poster__nightly",
        "cronSchedule": "0 2 * * *",
        "executionTimezone": "Europe/Paris",
        "scheduleState": {"status": "RUNNING"},
    }

    runs = graphql(
        ui_url,
        "query($f: RunsFilter) { runsOrError(filter: $f) { ... on Runs { results {"
        " runId jobName status tags { key value } } } } }",
        {"f": {"tags": [{"key": "takeflow/task_id", "value": demo_home.task_id}]}},
    )["runsOrError"]["results"]
    (run,) = runs
    tags = {t["key"]: t["value"] for t in run["tags"]}
    assert (run["jobName"], run["status"]) == (demo_home.job, "SUCCESS")
    assert tags["takeflow/project"] == "demo" and tags["takeflow/shot"] == "ch01/sc01/sh010"
    assert tags["takeflow/user"] == "artist"

    nodes = graphql(ui_url, "{ assetNodes { assetKey { path } dependencyKeys { path } } }")
    edges = {
        ("/".join(d["path"][2:]), "/".join(n["assetKey"]["path"][2:]))
        for n in nodes["assetNodes"]
        for d in n["dependencyKeys"]
    }
    for edge in [
        ("01_Assets/logo.png", "poster/poster.logo"),
        ("poster/poster.logo", "poster/poster.stamp"),
        ("poster/poster.mix", "poster/poster.stamp"),
        ("poster/poster.stamp", "poster/poster.final"),
        ("poster/poster.final", "ch01/sc01/sh010/sh010.image"),
    ]:
        assert edge in edges, (edge, sorted(edges))

    # the take is a materialization of the take asset, with its metadata
    asset = graphql(
        ui_url,
        "{ assetOrError(assetKey: {path:"
        ' ["takeflow","demo","ch01","sc01","sh010","sh010.image"]}) {'
        " ... on Asset { assetMaterializations(limit: 5) { runId metadataEntries { label"
        " ... on TextMetadataEntry { text } ... on IntMetadataEntry { intValue } } } } } }",
    )["assetOrError"]
    (materialization,) = asset["assetMaterializations"]
    entries = materialization["metadataEntries"]
    meta = {m["label"]: m.get("text", m.get("intValue")) for m in entries}
    assert materialization["runId"] == run["runId"]
    assert meta["take_id"] == "take_001" and meta["task_id"] == demo_home.task_id


@pytest.mark.timeout(200)
def test_a_takeflow_run_can_be_re_executed_from_the_ui(demo_home: DemoHome, ui_url: str) -> None:
    (run,) = graphql(
        ui_url,
        "query($f: RunsFilter) { runsOrError(filter: $f) { ... on Runs { results { runId } } } }",
        {"f": {"tags": [{"key": "takeflow/task_id", "value": demo_home.task_id}]}},
    )["runsOrError"]["results"]
    launched = graphql(
        ui_url,
        "mutation($id: String!) { launchRunReexecution(reexecutionParams:"
        " {parentRunId: $id, strategy: ALL_STEPS}) { __typename"
        " ... on LaunchRunSuccess { run { runId jobName tags { key value } } }"
        " ... on PythonError { message } } }",
        {"id": run["runId"]},
    )["launchRunReexecution"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    assert launched["run"]["jobName"] == demo_home.job
    tags = {t["key"]: t["value"] for t in launched["run"]["tags"]}
    assert tags["dagster/parent_run_id"] == run["runId"]
    assert tags["takeflow/project"] == "demo"  # the daemon's run is adopted as a new task


@pytest.mark.e2e
@pytest.mark.timeout(240)
def test_a_new_canvas_appears_after_a_reload(demo_home: DemoHome, ui_url: str) -> None:
    source = demo_home.project_path / "02_Source_Creative"
    graph = json.loads((FIXTURES / "poster.json").read_text())
    graph["name"] = "poster-b"
    (source / "poster_b.json").write_text(json.dumps(graph))
    try:
        reloaded = graphql(
            ui_url,
            'mutation { reloadRepositoryLocation(repositoryLocationName: "takeflow") {'
            " __typename } }",
        )
        assert reloaded["reloadRepositoryLocation"]["__typename"] == "WorkspaceLocationEntry"
        names: list[str] = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:  # the code server restarts its process on a reload
            repos = graphql(ui_url, REPOSITORY)["repositoriesOrError"].get("nodes") or []
            names = [j["name"] for r in repos for j in r["jobs"]]
            if any(n.startswith("poster_b__") for n in names):
                break
            time.sleep(1)
        assert any(n.startswith("poster_b__") for n in names), names
    finally:
        (source / "poster_b.json").unlink()
        graphql(
            ui_url,
            'mutation { reloadRepositoryLocation(repositoryLocationName: "takeflow")'
            " { __typename } }",
        )


@pytest.mark.e2e
@pytest.mark.timeout(240)
def test_screenshot_of_the_asset_graph(ui_url: str, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    url = f"{ui_url}/locations/__repository__@takeflow/asset-groups/takeflow_demo"
    shot = tmp_path / "asset-graph.png"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.goto(url, timeout=60_000)
            # every node of the lineage is drawn, from the uploaded logo to the take
            for label in ("logo.png", "stamp", "final"):
                page.get_by_text(label, exact=False).first.wait_for(timeout=60_000)
            page.wait_for_function(
                "() => !document.body.innerText.includes('Loading...')", timeout=60_000
            )
            page.wait_for_timeout(1000)  # let the layout settle
            # the take Takeflow made shows as the take asset's materialization
            assert "Materialized" in page.inner_text("body")
            page.screenshot(path=str(shot))
        finally:
            browser.close()
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    if os.environ.get("TAKEFLOW_UPDATE_SCREENSHOTS") == "1":  # docs refresh, not every run
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, SCREENSHOT)
