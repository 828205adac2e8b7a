# ruff: noqa: F811 - the fixtures imported from test_editor are the parameters
"""Editor bugs of issue 22, each pinned in a real Chromium against a real ``takeflow serve``.

One server and one browser for the module (a fresh browser context per test), so the file stays
quick. Each test failed on the editor before its fix.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_editor import (  # noqa: F401 - fixtures used by name
    Server,
    browser,
    connect,
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
DEMO = Path(__file__).resolve().parents[2] / "server" / "demo" / "canvases"


def templates_of(server: Server) -> dict[str, Any]:
    body = server.get("/api/v1/functions/templates")
    listed = body["templates"] if isinstance(body, dict) else body
    return {t["id"]: t for t in listed}


def tasks_of(server: Server, project: str) -> list[dict[str, Any]]:
    return list(server.get(TASKS, project_id=project, limit=50)["tasks"])


def start_long_delay(page: Any) -> Any:
    wait = drop_template(page, "delay", 60, 60)
    wait.get_by_test_id("input-seconds").fill("30")
    wait.get_by_test_id("input-steps").fill("60")
    page.get_by_test_id("run-graph").click()
    wait.get_by_test_id("node-stage").wait_for()
    return wait


def cancel_and_wait(page: Any) -> None:
    page.get_by_test_id("cancel-run").click()
    page.wait_for_selector("[data-testid=run-status][data-status=cancelled]", timeout=10_000)


def put_canvas(server: Server, project: str, name: str, graph: dict[str, Any]) -> None:
    response = server.http.put(f"/api/v1/projects/{project}/canvases/{name}", json=graph)
    assert response.status_code == 200, response.text


def load(page: Any, name: str) -> None:
    listing = page.get_by_test_id("canvas-list")
    listing.focus()
    listing.locator(f"option[value={name}]").wait_for(state="attached")
    listing.select_option(name)
    page.get_by_test_id("load-canvas").click()
    page.get_by_test_id("notice").filter(has_text=f"Loaded {name}").wait_for()


# ---- 1: Ctrl+Enter during a run ----------------------------------------------------------------


def test_ctrl_enter_during_a_run_queues_a_second_task_the_editor_keeps(
    page: Any, server: Server
) -> None:
    """Each Run queues one more task (issue 22's queue): the editor forgets neither, Cancel stops
    the watched first one, the canvas then watches the second, and the queue panel cancels it."""
    open_editor(page, "twice")
    start_long_delay(page)
    first = run_status(page)["task"]
    page.locator(".svelte-flow__pane").click(position={"x": 700, "y": 500})
    page.keyboard.press("Control+Enter")
    deadline = time.monotonic() + 10
    while len(tasks_of(server, "twice")) < 2:
        assert time.monotonic() < deadline, "Ctrl+Enter queued no second task"
        time.sleep(0.1)
    (second,) = [t["task_id"] for t in tasks_of(server, "twice") if t["task_id"] != first]
    assert run_status(page)["task"] == first  # still watching the first
    page.locator(f"[data-testid=queue-task][data-task-id='{second}']").wait_for()
    page.get_by_test_id("cancel-run").click()  # Cancel stops the watched (first) task
    page.wait_for_selector(f"[data-testid=run-status][data-task='{second}']")  # then the next
    assert server.get(f"{TASKS}/{first}")["status"] == "cancelled"
    page.locator(f"[data-testid=queue-task][data-task-id='{second}']").get_by_test_id(
        "queue-cancel"
    ).click()
    page.wait_for_selector(f"[data-testid=run-status][data-task='{second}'][data-status=cancelled]")
    assert server.get(f"{TASKS}/{second}")["status"] == "cancelled"


# ---- 2: run results leak between canvases ------------------------------------------------------


def test_run_results_do_not_leak_into_another_canvas(page: Any, server: Server) -> None:
    open_editor(page, "leak")
    width = {"width": {"kind": "literal", "value": 16}}
    node = {"id": "noise_image_1", "template": "noise_image", "inputs": width}
    other = {"format": "takeflow.graph/v1", "name": "other", "nodes": [node]}
    put_canvas(server, "leak", "other", other)
    noise = drop_template(page, "noise_image", 60, 60)
    noise.get_by_test_id("input-width").fill("24")
    noise.get_by_test_id("input-height").fill("16")
    page.get_by_test_id("run-graph").click()
    wait_image(noise)
    assert noise.get_attribute("data-state") == "completed"

    page.get_by_role("button", name="New", exact=True).click()
    fresh = drop_template(page, "noise_image", 60, 60)
    assert fresh.get_attribute("data-testid") == "node-noise_image_1"
    assert fresh.get_attribute("data-state") == "idle"
    assert fresh.get_by_test_id("node-image").count() == 0
    assert fresh.get_by_test_id("node-status").count() == 0

    load(page, "other")
    loaded = page.get_by_test_id("node-noise_image_1")
    assert loaded.get_by_test_id("input-width").input_value() == "16"
    assert loaded.get_attribute("data-state") == "idle"
    assert loaded.get_by_test_id("node-image").count() == 0


# ---- 3 and 7: pinned errors and the "graph has N error(s)" notice -------------------------------


def invalid_noise(page: Any, project: str) -> Any:
    open_editor(page, project)
    noise = drop_template(page, "noise_image", 60, 60)
    noise.get_by_test_id("input-width").fill("99999")
    noise.get_by_test_id("input-height").fill("99999")
    page.get_by_test_id("run-graph").click()
    page.get_by_test_id("notice").filter(has_text="2 error(s)").wait_for()
    assert noise.get_by_test_id("node-error").count() == 2
    return noise


def test_fixing_one_input_keeps_the_other_errors_of_the_node(page: Any) -> None:
    noise = invalid_noise(page, "pins")
    noise.get_by_test_id("input-width").fill("64")
    errors = noise.get_by_test_id("node-error")
    assert errors.count() == 1
    assert errors.get_attribute("data-port") == "height"
    assert "above the maximum 4096" in errors.inner_text()
    noise.get_by_test_id("input-height").fill("64")
    assert noise.get_by_test_id("node-error").count() == 0


def test_the_graph_errors_notice_goes_once_the_errors_do(page: Any) -> None:
    noise = invalid_noise(page, "notice")
    noise.get_by_test_id("input-width").fill("64")
    assert page.get_by_test_id("notice").filter(has_text="error(s)").count() == 1  # one left
    noise.get_by_test_id("input-height").fill("64")
    page.get_by_test_id("notice").filter(has_text="error(s)").wait_for(
        state="detached", timeout=3_000
    )
    # ... and New takes it away too
    noise.get_by_test_id("input-width").fill("99999")
    page.get_by_test_id("run-graph").click()
    page.get_by_test_id("notice").filter(has_text="1 error(s)").wait_for()
    page.get_by_role("button", name="New", exact=True).click()
    page.get_by_test_id("notice").filter(has_text="error(s)").wait_for(
        state="detached", timeout=3_000
    )


# ---- 4: a loaded canvas shows the template defaults ---------------------------------------------


def test_a_loaded_canvas_shows_what_will_run(page: Any, server: Server) -> None:
    open_editor(page, "defaults")
    poster = json.loads((DEMO / "poster.takeflow.json").read_text())
    put_canvas(server, "defaults", "poster", poster)
    load(page, "poster")
    templates = templates_of(server)
    shown = 0
    for gn in poster["nodes"]:
        node = page.get_by_test_id(f"node-{gn['id']}")
        props = templates[gn["template"]]["inputs_schema"]["properties"]
        for port, schema in props.items():
            if port in gn["inputs"] or "default" not in schema or schema["default"] is None:
                continue
            field = node.get_by_test_id(f"input-{port}")
            if field.get_attribute("type") == "checkbox":
                assert field.is_checked() == bool(schema["default"]), (gn["id"], port)
            else:
                value = field.input_value()
                assert value != "", (
                    f"{gn['id']}.{port} is blank; it runs with {schema['default']!r}"
                )
                if isinstance(schema["default"], (int, float)):
                    assert float(value) == float(schema["default"]), (gn["id"], port)
                else:
                    assert value == str(schema["default"]), (gn["id"], port)
            shown += 1
    assert shown >= 2  # text_overlay's color, resize's resample at least


def test_a_number_box_and_its_slider_agree(page: Any, server: Server) -> None:
    templates = templates_of(server)
    if "image_generation" not in templates:
        pytest.skip("image_generation is not installed on this server")
    guidance = templates["image_generation"]["inputs_schema"]["properties"]["guidance"]
    open_editor(page, "slider")
    prompt = {"prompt": {"kind": "literal", "value": "a lighthouse"}}
    node = {"id": "gen", "template": "image_generation", "inputs": prompt}
    graph = {"format": "takeflow.graph/v1", "name": "gen", "nodes": [node]}
    put_canvas(server, "slider", "gen", graph)
    load(page, "gen")
    node = page.get_by_test_id("node-gen")
    box = node.get_by_test_id("input-guidance").input_value()
    slider = node.get_by_test_id("slider-guidance").input_value()
    assert box != "" and float(box) == float(slider) == float(guidance["default"])


# ---- 9: the toolbar keeps its height ------------------------------------------------------------


def test_the_toolbar_keeps_its_height_when_a_run_starts(page: Any) -> None:
    page.set_viewport_size({"width": 1280, "height": 800})
    open_editor(page, "toolbar")
    toolbar = page.locator("header.toolbar")
    before = toolbar.bounding_box()
    start_long_delay(page)
    during = toolbar.bounding_box()
    assert before and during
    assert during["height"] == before["height"], (before, during)
    status = page.get_by_test_id("run-status").bounding_box()
    badge = page.locator("[data-testid=run-status] .badge").bounding_box()
    assert status and badge  # the run's badge still shows whole, within the toolbar
    assert (
        status["x"] <= badge["x"] and badge["x"] + badge["width"] <= status["x"] + status["width"]
    )
    cancel_and_wait(page)
    after = toolbar.bounding_box()
    assert after and after["height"] == before["height"]


# ---- 10: favicon, wording ----------------------------------------------------------------------


def test_no_404_on_load_and_messages_read_right(page: Any) -> None:
    failed: list[str] = []
    page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    open_editor(page, "words")
    page.wait_for_load_state("networkidle")
    assert failed == []
    icon = page.evaluate("() => document.querySelector('link[rel~=icon]')?.href ?? '/favicon.ico'")
    assert page.request.get(icon).status == 200, f"{icon} is missing"
    noise = drop_template(page, "noise_image", 60, 60)
    prompt = drop_template(page, "text_prompt", 60, 380)
    blend = drop_template(page, "blend", 480, 60)
    connect(page, noise, "image", prompt, "text")
    refusal = page.get_by_test_id("connection-refused")
    refusal.wait_for()
    assert "an image output cannot feed the text input 'text'" in refusal.inner_text()
    page.get_by_test_id("run-graph").click()
    blend.get_by_test_id("node-error").first.wait_for()
    for i in range(blend.get_by_test_id("node-error").count()):
        message = blend.get_by_test_id("node-error").nth(i).inner_text()
        assert "type one in" not in message, message
    assert "connect" in blend.get_by_test_id("node-error").first.inner_text()


# ---- 5: nodes never land on each other -------------------------------------------------------


def node_boxes(page: Any) -> list[dict[str, float]]:
    return [n.bounding_box() for n in page.locator(".svelte-flow__node").all()]


def assert_apart(boxes: list[dict[str, float]]) -> None:
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            apart = (
                a["x"] + a["width"] <= b["x"]
                or b["x"] + b["width"] <= a["x"]
                or a["y"] + a["height"] <= b["y"]
                or b["y"] + b["height"] <= a["y"]
            )
            assert apart, f"nodes overlap: {a} {b}"


def zoom(page: Any) -> float:
    style = page.locator(".svelte-flow__viewport").get_attribute("style") or ""
    return float(style.split("scale(")[1].split(")")[0])


def test_loaded_and_new_nodes_do_not_land_on_each_other(page: Any, server: Server) -> None:
    open_editor(page, "layout")
    poster = json.loads((DEMO / "poster.takeflow.json").read_text())
    put_canvas(server, "layout", "poster", poster)
    load(page, "poster")
    page.wait_for_timeout(400)  # measured, spread, fitted
    assert len(node_boxes(page)) == 6
    assert_apart(node_boxes(page))

    page.get_by_test_id("fit-view").click()
    for _ in range(3):
        page.locator(".svelte-flow__controls-zoomin").click()
    assert zoom(page) > 1
    page.get_by_role("button", name="New", exact=True).click()
    assert zoom(page) == 1
    for template in ("noise_image", "gradient_image", "blend"):
        page.get_by_test_id("palette-search").fill(template.split("_")[0])
        page.get_by_test_id(f"palette-item-{template}").dblclick()
    page.locator(".svelte-flow__node").nth(2).wait_for()
    page.wait_for_timeout(200)
    assert_apart(node_boxes(page))


# ---- 8: Ctrl+A and shift-click select nodes ----------------------------------------------------


def test_ctrl_a_selects_every_node_and_shift_click_adds_one(page: Any) -> None:
    open_editor(page, "select")
    for template in ("noise_image", "gradient_image", "blend"):
        page.get_by_test_id("palette-search").fill(template.split("_")[0])
        page.get_by_test_id(f"palette-item-{template}").dblclick()
    nodes = page.locator(".svelte-flow__node")
    nodes.nth(2).wait_for()
    selected = page.locator(".svelte-flow__node.selected")
    page.locator(".svelte-flow__pane").click(position={"x": 900, "y": 600})
    page.keyboard.press("Control+a")
    assert page.evaluate("() => String(window.getSelection())") == ""  # no page text selected
    assert selected.count() == 3

    page.locator(".svelte-flow__pane").click(position={"x": 900, "y": 600})
    assert selected.count() == 0
    nodes.nth(0).locator("header .title").click()
    nodes.nth(1).locator("header .title").click(modifiers=["Shift"])
    assert selected.count() == 2


# ---- 6: saving over another canvas asks first ---------------------------------------------------


def test_saving_over_another_canvas_asks_first(page: Any, server: Server) -> None:
    open_editor(page, "overwrite")
    seed = {"seed": {"kind": "literal", "value": 1}}
    theirs = {"format": "takeflow.graph/v1", "name": "title", "nodes": [
        {"id": "noise_image_1", "template": "noise_image", "inputs": seed}]}  # fmt: skip
    put_canvas(server, "overwrite", "title", theirs)
    asked: list[str] = []
    answer = {"accept": False}

    def on_dialog(dialog: Any) -> None:
        asked.append(dialog.message)
        dialog.accept() if answer["accept"] else dialog.dismiss()

    page.on("dialog", on_dialog)
    drop_template(page, "blend", 480, 60)
    page.get_by_test_id("canvas-name").fill("title")
    page.get_by_test_id("save-canvas").click()
    page.get_by_test_id("notice").filter(has_text="Not saved").wait_for()
    assert len(asked) == 1 and "title" in asked[0] and "verwrite" in asked[0]
    stored = server.get("/api/v1/projects/overwrite/canvases/title")
    assert [n["id"] for n in stored["nodes"]] == ["noise_image_1"]  # theirs, untouched

    answer["accept"] = True
    saved = page.get_by_test_id("notice").filter(has_text="Saved 02_Source_Creative")
    page.get_by_test_id("save-canvas").click()
    saved.wait_for()
    assert len(asked) == 2
    stored = server.get("/api/v1/projects/overwrite/canvases/title")
    assert [n["id"] for n in stored["nodes"]] == ["blend_1"]
    # saving the canvas again under its own name asks nothing
    saved.get_by_role("button").click()
    page.get_by_test_id("save-canvas").click()
    saved.wait_for()
    assert len(asked) == 2


# ---- 10: a generation node keeps its last preview ----------------------------------------------


@pytest.fixture(scope="module")
def demo_server(web_dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """``takeflow serve --demo``: the tiny demo model, a preview every 2 steps."""
    from tests.server.harness import running_server

    home = tmp_path_factory.mktemp("bugs-demo") / "home"
    home.mkdir(parents=True)
    config = {"diffusion": {"preview_every": 2, "max_batch_size": 1}}
    (home / "config.json").write_text(json.dumps(config))
    with running_server(home, "--demo", cli=True) as srv:
        yield srv


def test_a_generation_node_keeps_its_last_preview_after_the_run(
    browser: Any, demo_server: Any
) -> None:
    context = browser.new_context(
        viewport={"width": 1440, "height": 900}, base_url=demo_server.base
    )
    context.set_default_timeout(60_000)
    page = context.new_page()
    try:
        page.goto("/")
        page.wait_for_selector("[data-testid=editor][data-ready=true]")
        page.get_by_test_id("project-select").select_option("demo")
        gen = drop_template(page, "image_generation", 160, 80)
        gen.get_by_test_id("input-prompt").fill("a lighthouse at dusk")
        for name, value in (("steps", 6), ("width", 64), ("height", 64), ("seed", 7)):
            gen.get_by_test_id(f"input-{name}").fill(str(value))
        size = drop_template(page, "resize", 700, 80)
        size.get_by_test_id("input-width").fill("32")
        size.get_by_test_id("input-height").fill("32")
        connect(page, gen, "image", size, "image")
        page.get_by_test_id("run-graph").click()
        wait_image(size)  # the last node shows the finished image ...
        assert run_status(page)["status"] == "completed"
        assert gen.get_by_test_id("node-image").count() == 0  # (the generator has none of its own)
        preview = gen.get_by_test_id("node-preview")  # ... and the generator its last preview
        assert preview.count() == 1
        assert "last preview" in gen.locator("figcaption").inner_text()
    finally:
        context.close()
