# ruff: noqa: F811 - the fixtures imported from test_editor are the parameters
"""Issue 22, queue and takes, in a real Chromium against a real ``takeflow serve``: each Run
queues a task and the queue panel follows, reorders and cancels them (the server's task list
agrees); the take viewer pages with the keyboard and compares two takes; a take's graph and
values come back onto the canvas from the viewer and from its dropped PNG or take.json."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.e2e.test_editor import (  # noqa: F401 - fixtures used by name
    Server,
    browser,
    drop_template,
    open_editor,
    page,
    run_status,
    server,
    wait_image,
    web_dist,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]
TASKS = "/api/v1/functions/tasks"
SHOT = "ch01/sc01/sh010"


def tasks_of(server: Server, project: str) -> dict[str, dict[str, Any]]:
    listed = server.get(TASKS, project_id=project, limit=50)["tasks"]
    return {t["task_id"]: t for t in listed}


def wait_until(check: Any, what: str, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, what
        time.sleep(0.1)
    return found


def row(page: Any, task_id: str) -> Any:
    return page.locator(f"[data-testid=queue-task][data-task-id='{task_id}']")


# ---- the queue ---------------------------------------------------------------------------------


def test_three_queued_runs_one_reordered_the_second_cancelled(page: Any, server: Server) -> None:
    open_editor(page, "queue")
    # a run started elsewhere (the API) by the same user holds one of the two workers
    api_task = server.http.post(
        TASKS, json={"template_id": "delay", "inputs": {"seconds": 60, "steps": 240},
                     "project_id": "queue", "shot_id": SHOT, "user_id": "editor"},
    ).json()["task_id"]  # fmt: skip
    row(page, api_task).and_(page.locator("[data-status=running]")).wait_for()

    wait = drop_template(page, "delay", 60, 60)
    wait.get_by_test_id("input-seconds").fill("6")  # the first still runs when the second goes
    wait.get_by_test_id("input-steps").fill("30")
    for n in range(1, 4):  # each Run adds one task
        page.get_by_test_id("run-graph").click()
        wait_until(lambda n=n: len(tasks_of(server, "queue")) == n + 1, f"run {n} not queued")
    ours = sorted(
        (t for t in tasks_of(server, "queue").values() if t["task_id"] != api_task),
        key=lambda t: t["created_at"],
    )
    first, second, third = (t["task_id"] for t in ours)
    assert run_status(page)["task"] == first  # the canvas watches the first
    for task_id in (second, third):
        row(page, task_id).and_(page.locator("[data-status=queued]")).wait_for()
    page.wait_for_function(
        "() => document.querySelectorAll('[data-testid=queue-task]').length === 4"
    )

    # the third moves before the second: the server's line says so
    row(page, third).get_by_test_id("queue-up").click()
    wait_until(
        lambda: (
            (t := tasks_of(server, "queue"))[third]["queue_position"] < t[second]["queue_position"]
        ),
        "the move did not reach the server",
    )
    row(page, third).and_(page.locator("[data-position='0']")).wait_for()

    # cancel the second while the first runs
    assert server.get(f"{TASKS}/{first}")["status"] == "running"
    row(page, second).get_by_test_id("queue-cancel").click()
    row(page, second).wait_for(state="detached")
    assert server.get(f"{TASKS}/{second}")["status"] == "cancelled"
    assert server.get(f"{TASKS}/{first}")["status"] == "running"
    # cancel the running one started elsewhere: the third gets its worker
    row(page, api_task).get_by_test_id("queue-cancel").click()

    wait_until(
        lambda: all(tasks_of(server, "queue")[t]["status"] == "completed" for t in (first, third)),
        "the first and third runs did not complete",
    )
    listed = tasks_of(server, "queue")
    assert {t: listed[t]["status"] for t in (first, second, third, api_task)} == {
        first: "completed", second: "cancelled", third: "completed", api_task: "cancelled",
    }  # fmt: skip
    # the canvas watched the first, then the next run it queued that still ran
    page.wait_for_selector(f"[data-testid=run-status][data-task='{third}'][data-status=completed]")
    page.wait_for_function(
        "() => document.querySelectorAll('[data-testid=queue-task]').length === 0"
    )


def test_a_run_count_queues_variations_with_other_seeds(page: Any, server: Server) -> None:
    open_editor(page, "variations")
    # a schedule's task (another user): shown with "all", not with "mine"; cancelled from there
    other = server.http.post(
        TASKS, json={"template_id": "delay", "inputs": {"seconds": 60, "steps": 240},
                     "project_id": "variations", "shot_id": SHOT, "user_id": "scheduler"},
    ).json()["task_id"]  # fmt: skip
    page.get_by_test_id("queue-scope").select_option("all")
    row(page, other).wait_for()
    page.get_by_test_id("queue-scope").select_option("mine")
    row(page, other).wait_for(state="detached")
    page.get_by_test_id("queue-scope").select_option("all")
    row(page, other).get_by_test_id("queue-cancel").click()
    row(page, other).wait_for(state="detached")
    assert server.get(f"{TASKS}/{other}")["status"] == "cancelled"
    page.get_by_test_id("queue-scope").select_option("mine")
    noise = drop_template(page, "noise_image", 60, 60)
    noise.get_by_test_id("input-width").fill("8")
    noise.get_by_test_id("input-height").fill("8")
    noise.get_by_test_id("input-seed").fill("7")
    page.get_by_test_id("run-count").fill("3")
    page.get_by_test_id("run-graph").click()

    def ours() -> dict[str, Any]:
        return {k: v for k, v in tasks_of(server, "variations").items() if k != other}

    done = wait_until(
        lambda: len(t := ours()) == 3 and all(x["status"] == "completed" for x in t.values()) and t,
        "three variations did not complete",
    )
    listed = server.get("/api/v1/projects/variations/takes", shot_id=SHOT)
    takes = listed["takes"] if isinstance(listed, dict) else listed
    assert {t["metadata"]["task_id"] for t in takes} == set(done)
    seeds = [t["metadata"]["seeds"]["noise_image_1"] for t in takes]
    assert 7 in seeds and len(set(seeds)) == 3, seeds


# ---- takes: viewer, compare, recall --------------------------------------------------------------


def two_takes(page: Any, server: Server, project: str) -> list[dict[str, Any]]:
    """Two noise takes of the shot (seeds 1 and 2), newest first, shown in the takes panel;
    each with the graph the editor sent for it (``sent``)."""
    sent: list[dict[str, Any]] = []
    page.on(
        "request",
        lambda r: (
            sent.append(r.post_data_json["graph"])
            if r.method == "POST" and r.url.endswith("/api/v1/runs")
            else None
        ),
    )
    open_editor(page, project)
    noise = drop_template(page, "noise_image", 60, 60)
    noise.get_by_test_id("input-width").fill("24")
    noise.get_by_test_id("input-height").fill("16")
    for seed in ("1", "2"):
        noise.get_by_test_id("input-seed").fill(seed)
        page.get_by_test_id("run-graph").click()
        page.wait_for_selector("[data-testid=run-status][data-status=completed]")
        wait_image(noise)
    takes = server.get(f"/api/v1/projects/{project}/takes", shot_id=SHOT)
    listed = takes["takes"] if isinstance(takes, dict) else takes
    page.get_by_test_id("take-take_002").wait_for()
    assert len(sent) == 2
    ordered = sorted(listed, key=lambda t: t["number"])
    return [{**t, "sent": g} for t, g in reversed(list(zip(ordered, sent, strict=True)))]


def test_the_viewer_pages_with_keys_and_compares_two_takes(page: Any, server: Server) -> None:
    two_takes(page, server, "viewer")
    page.get_by_test_id("take-take_002").get_by_test_id("take-open").click()
    viewer = page.get_by_test_id("take-viewer")
    assert viewer.get_attribute("data-take") == "take_002"
    image = viewer.get_by_test_id("viewer-image")
    page.wait_for_function(
        "el => el.complete && el.naturalWidth === 24", arg=image.element_handle()
    )
    assert "seed" in viewer.get_by_test_id("viewer-params").inner_text()
    assert "task" in viewer.get_by_test_id("viewer-provenance").inner_text()
    page.keyboard.press("ArrowRight")
    page.wait_for_selector("[data-testid=take-viewer][data-take=take_001]")
    page.keyboard.press("ArrowLeft")
    page.wait_for_selector("[data-testid=take-viewer][data-take=take_002]")
    viewer.get_by_test_id("viewer-zoom-in").click()
    assert viewer.get_attribute("data-zoom") == "1.25"
    page.keyboard.press("0")
    assert viewer.get_attribute("data-zoom") == "1.00"

    viewer.get_by_test_id("compare-select").select_option("take_001")
    a, b = viewer.get_by_test_id("compare-a"), viewer.get_by_test_id("compare-b")
    for img, take in ((a, "take_002"), (b, "take_001")):
        page.wait_for_function("el => el.complete && el.naturalWidth > 0", arg=img.element_handle())
        assert img.get_attribute("alt") == take
    box_a, box_b = a.bounding_box(), b.bounding_box()
    assert box_a and box_b and box_a["x"] + box_a["width"] <= box_b["x"]  # side by side
    viewer.get_by_test_id("compare-slide").click()
    slider = viewer.get_by_test_id("compare-slider")
    clip = "el => getComputedStyle(el).clipPath"
    for value in ("20", "75"):
        slider.fill(value)
        assert viewer.get_by_test_id("compare-b").evaluate(clip) == f"inset(0px 0px 0px {value}%)"
    page.keyboard.press("Escape")
    viewer.wait_for(state="detached")


def canvas_graph(page: Any) -> dict[str, Any]:
    """The canvas as the editor keeps it (its autosaved document): per node, the template and
    every input (a literal value or a link)."""
    saved = json.loads(page.evaluate("localStorage.getItem('takeflow.doc.v1')"))
    doc = json.loads(saved["doc"])
    out = {}
    for n in doc["nodes"]:
        out[n["id"]] = {"template": n["data"]["template"], "inputs": dict(n["data"]["values"])}
    for e in doc["edges"]:
        port = e["targetHandle"].removeprefix("in-")
        out[e["target"]]["inputs"][port] = ["link", e["source"], e["sourceHandle"][4:]]
    return out


def ran_graph(graph: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for n in graph["nodes"]:
        inputs = {
            port: v["value"] if v["kind"] == "literal" else ["link", v["node"], v["output"]]
            for port, v in n["inputs"].items()
        }
        out[n["id"]] = {"template": n["template"].split("@")[0], "inputs": inputs}
    return out


def drop_file(page: Any, url: str, name: str, mime: str) -> None:
    """Fetch ``url`` in the page and drop it on the canvas as the file ``name``."""
    page.evaluate(
        """async ([url, name, mime]) => {
            const blob = await (await fetch(url)).blob();
            const dt = new DataTransfer();
            dt.items.add(new File([blob], name, { type: mime }));
            const el = document.querySelector('[data-testid=canvas]');
            const r = el.getBoundingClientRect();
            el.dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true,
                cancelable: true, clientX: r.left + 200, clientY: r.top + 200 }));
        }""",
        [url, name, mime],
    )


def test_recall_a_take_from_the_viewer_and_from_its_png_and_take_json(
    page: Any, server: Server
) -> None:
    takes = two_takes(page, server, "recall")
    older = takes[1]
    want = ran_graph(older["sent"])  # the graph the editor sent for that take
    assert want["noise_image_1"]["inputs"]["seed"] == 1

    def recalled(label: str) -> None:
        page.get_by_test_id("notice").filter(has_text=f"Recalled {label}").wait_for()
        assert canvas_graph(page) == want
        node = page.get_by_test_id("node-noise_image_1")
        assert node.get_by_test_id("input-seed").input_value() == "1"
        assert node.get_by_test_id("input-width").input_value() == "24"

    # the viewer's button
    page.get_by_role("button", name="New", exact=True).click()
    assert canvas_graph(page) == {}
    page.get_by_test_id("take-take_001").get_by_test_id("take-open").click()
    page.get_by_test_id("viewer-recall").click()
    page.get_by_test_id("take-viewer").wait_for(state="detached")
    recalled("take_001")

    # the take's PNG (its tEXt chunk), dropped on the canvas
    page.get_by_role("button", name="New", exact=True).click()
    png = older["outputs"]["image"]["url"]
    drop_file(page, png, "image.png", "image/png")
    recalled("image.png")

    # its take.json, dropped on the canvas
    page.get_by_role("button", name="New", exact=True).click()
    take_json = f"/api/v1/projects/recall/files/{older['path']}/take.json"
    drop_file(page, take_json, "take.json", "application/json")
    recalled("take.json")
