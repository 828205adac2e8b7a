# ruff: noqa: F811 - the fixtures imported from test_editor are the parameters
"""Node handling in the editor (issue 22), in a real Chromium against a real ``takeflow serve``:
copy/paste across canvases and tabs, the quick-add picker, the context menu with bypass, group
frames, notes, and dragging a link's end.
"""

from __future__ import annotations

import io
import re
from typing import Any

import pytest
from PIL import Image
from playwright.sync_api import expect

from tests.e2e.test_editor import (  # noqa: F401 - fixtures used by name
    Server,
    browser,
    connect,
    drop_template,
    edge_count,
    node_id,
    open_editor,
    page,
    server,
    wait_image,
    web_dist,
)
from tests.e2e.test_editor_bugs import load, put_canvas

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]


def lit(value: Any) -> dict[str, Any]:
    return {"kind": "literal", "value": value}


def link(node: str, output: str) -> dict[str, Any]:
    return {"kind": "link", "node": node, "output": output}


def card_graph(name: str, **extra: Any) -> dict[str, Any]:
    """sky (gradient) -> big (resize to 128x96) -> label (text overlay)."""
    return {
        "format": "takeflow.graph/v1",
        "name": name,
        "nodes": [
            {"id": "sky", "template": "gradient_image",
             "inputs": {"width": lit(64), "height": lit(48), "end_color": lit("#f29e4c")},
             "position": {"x": 0, "y": 0}},
            {"id": "big", "template": "resize",
             "inputs": {"image": link("sky", "image"), "width": lit(128), "height": lit(96)},
             "position": {"x": 340, "y": 0}},
            {"id": "label", "template": "text_overlay",
             "inputs": {"image": link("big", "image"), "text": lit("HI"), "size": lit(12)},
             "position": {"x": 680, "y": 0}},
        ],
        **extra,
    }  # fmt: skip


def by_id(graph: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n["id"]: n for n in graph["nodes"]}


def click_empty(page: Any, x: int = 30, y: int = 600) -> None:
    page.locator(".svelte-flow__pane").click(position={"x": x, "y": y})


def save_as(page: Any, name: str) -> None:
    page.get_by_test_id("canvas-name").fill(name)
    page.get_by_test_id("save-canvas").click()
    page.get_by_test_id("notice").filter(has_text="Saved 02_Source_Creative").wait_for()


def center(locator: Any) -> tuple[float, float]:
    box = locator.bounding_box()
    assert box
    return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2


def test_copy_paste_keeps_values_and_links_across_canvases_and_tabs(
    page: Any, server: Server
) -> None:
    open_editor(page, "clip")
    put_canvas(server, "clip", "card", card_graph("card"))
    load(page, "card")
    click_empty(page)
    page.keyboard.press("Control+a")
    page.keyboard.press("Control+c")
    page.get_by_test_id("notice").filter(has_text="Copied 3 node(s)").wait_for()

    # another tab of the editor, a new canvas: paste lands where the pointer is
    other = page.context.new_page()
    other.goto("/")
    other.wait_for_selector("[data-testid=editor][data-ready=true]")
    other.get_by_role("button", name="New", exact=True).click()
    expect(other.locator(".svelte-flow__node")).to_have_count(0)
    other.mouse.move(500, 400)
    other.keyboard.press("Control+v")
    expect(other.locator(".svelte-flow__node")).to_have_count(3)
    assert edge_count(other, 2) == 2
    first = other.locator(".svelte-flow__node").first.bounding_box()
    assert first and abs(first["x"] - 500) < 60 and abs(first["y"] - 400) < 60, first
    save_as(other, "pasted")

    source = by_id(server.get("/api/v1/projects/clip/canvases/card"))
    pasted = by_id(server.get("/api/v1/projects/clip/canvases/pasted"))
    rename = {"sky": "gradient_image_1", "big": "resize_1", "label": "text_overlay_1"}
    assert set(pasted) == set(rename.values())  # fresh ids
    for old, new in rename.items():
        want = {
            port: link(rename[v["node"]], v["output"]) if v["kind"] == "link" else v
            for port, v in source[old]["inputs"].items()
        }
        got = {p: v for p, v in pasted[new]["inputs"].items() if p in want}
        assert got == want, (old, got, want)
    other.close()

    # pasting into the same canvas again, and Ctrl+D: fresh ids, links among the copies
    page.mouse.move(700, 600)
    page.keyboard.press("Control+v")
    expect(page.locator(".svelte-flow__node")).to_have_count(6)
    page.get_by_test_id("node-resize_1").wait_for()
    assert edge_count(page, 4) == 4
    assert page.get_by_test_id("node-text_overlay_1").get_by_test_id(
        "linked-image"
    ).inner_text() == ("← resize_1.image")
    page.keyboard.press("Control+d")  # the pasted three are selected
    expect(page.locator(".svelte-flow__node")).to_have_count(9)
    assert edge_count(page, 6) == 6
    assert page.get_by_test_id("node-resize_2").get_by_test_id("input-width").input_value() == "128"


def test_alt_drag_leaves_a_copy_behind(page: Any) -> None:
    open_editor(page, "altdrag")
    noise = drop_template(page, "noise_image", 80, 80)
    noise.get_by_test_id("input-width").fill("72")
    before = noise.bounding_box()
    assert before
    x, y = before["x"] + 60, before["y"] + 12  # the header
    page.keyboard.down("Alt")
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + 200, y + 40, steps=10)
    page.mouse.up()
    page.keyboard.up("Alt")
    expect(page.locator(".svelte-flow__node")).to_have_count(2)
    copy = page.get_by_test_id("node-noise_image_2")
    assert copy.get_by_test_id("input-width").input_value() == "72"
    moved = page.get_by_test_id("node-noise_image_1").bounding_box()
    stayed = copy.bounding_box()
    assert moved and stayed
    assert abs(stayed["x"] - before["x"]) < 3 and abs(stayed["y"] - before["y"]) < 3
    assert moved["x"] - before["x"] > 150


def test_double_click_picker_and_link_release_picker_add_connected_nodes(page: Any) -> None:
    open_editor(page, "picker")
    page.locator(".svelte-flow__pane").dblclick(position={"x": 300, "y": 200})
    picker = page.get_by_test_id("node-picker")
    picker.wait_for()
    page.keyboard.type("gradnt")  # fuzzy
    expect(picker.locator("li.active")).to_have_attribute(
        "data-testid", "picker-item-gradient_image"
    )
    page.keyboard.press("Enter")
    expect(picker).to_have_count(0)
    sky = page.get_by_test_id("node-gradient_image_1")
    sky.wait_for()
    box = sky.bounding_box()
    canvas = page.get_by_test_id("canvas").bounding_box()
    assert box and canvas
    assert abs(box["x"] - (canvas["x"] + 300)) < 30 and abs(box["y"] - (canvas["y"] + 200)) < 30

    # a link from the image output let go on empty canvas: only nodes that take an image
    x, y = center(sky.get_by_test_id("handle-out-image"))
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + 250, y + 120, steps=12)
    # while dragging, inputs that cannot take an image are marked (on the same node: all)
    expect(sky.get_by_test_id("handle-in-width")).to_have_class(re.compile("tf-incompatible"))
    page.mouse.up()
    picker.wait_for()
    assert picker.get_by_test_id("picker-item-resize").count() == 1
    assert picker.get_by_test_id("picker-item-text_prompt").count() == 0
    assert picker.get_by_test_id("picker-item-note").count() == 0
    page.keyboard.type("resize")
    page.keyboard.press("Enter")
    resize = page.get_by_test_id("node-resize_1")
    resize.wait_for()
    assert edge_count(page, 1) == 1
    assert resize.get_by_test_id("linked-image").inner_text() == "← gradient_image_1.image"

    # Escape closes the picker and adds nothing
    page.locator(".svelte-flow__pane").dblclick(position={"x": 100, "y": 420})
    picker.wait_for()
    page.keyboard.press("Escape")
    expect(picker).to_have_count(0)
    expect(page.locator(".svelte-flow__node")).to_have_count(2)


def test_incompatible_inputs_are_marked_and_a_link_end_re_routes_or_detaches(page: Any) -> None:
    open_editor(page, "reroute")
    prompt = drop_template(page, "text_prompt", 60, 60)
    card = drop_template(page, "text_overlay", 520, 60)
    prompt_id, card = node_id(prompt), page.get_by_test_id(f"node-{node_id(card)}")
    prompt = page.get_by_test_id(f"node-{prompt_id}")
    x, y = center(prompt.get_by_test_id("handle-out-text"))
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + 80, y + 20, steps=5)
    expect(card.get_by_test_id("handle-in-image")).to_have_class(re.compile("tf-incompatible"))
    expect(card.get_by_test_id("handle-in-text")).to_have_class(re.compile("tf-compatible"))
    page.mouse.up()
    page.keyboard.press("Escape")  # the picker of a link let go on empty canvas
    expect(card.get_by_test_id("handle-in-image")).not_to_have_class(re.compile("tf-incompatible"))

    connect(page, prompt, "text", card, "text")
    assert edge_count(page, 1) == 1
    end = page.locator(".svelte-flow__edgeupdater-target")
    # drag the link's end to nothing: it is detached
    ex, ey = center(end)
    page.mouse.move(ex, ey)
    page.mouse.down()
    page.mouse.move(ex + 60, ey + 260, steps=10)
    page.mouse.up()
    assert edge_count(page, 0) == 0
    page.keyboard.press("Escape")
    expect(card.get_by_test_id("linked-text")).to_have_count(0)

    # drag it onto another node's input: the link moves there
    connect(page, prompt, "text", card, "text")
    other = drop_template(page, "text_overlay", 520, 480)
    ex, ey = center(page.locator(".svelte-flow__edgeupdater-target"))
    tx, ty = center(other.get_by_test_id("handle-in-text"))
    page.mouse.move(ex, ey)
    page.mouse.down()
    page.mouse.move(tx, ty, steps=12)
    page.mouse.up()
    expect(other.get_by_test_id("linked-text")).to_have_text(f"← {prompt_id}.text")
    expect(card.get_by_test_id("linked-text")).to_have_count(0)
    assert edge_count(page, 1) == 1


def test_bypassed_node_does_not_run_and_passes_its_input_through(page: Any, server: Server) -> None:
    open_editor(page, "bypass")
    put_canvas(server, "bypass", "card", card_graph("card"))
    load(page, "card")
    big = page.get_by_test_id("node-big")
    big.locator("header").click(button="right")
    page.get_by_test_id("node-menu").wait_for()
    page.get_by_test_id("menu-bypass").click()
    big.get_by_test_id("node-bypassed").wait_for()
    save_as(page, "card")
    saved = by_id(server.get("/api/v1/projects/bypass/canvases/card"))
    assert saved["big"]["properties"]["bypass"] is True

    page.get_by_test_id("run-graph").click()
    page.wait_for_selector("[data-testid=run-status][data-status=completed]", timeout=30_000)
    task_id = page.get_by_test_id("run-status").get_attribute("data-task")
    label = page.get_by_test_id("node-label")
    wait_image(label)
    status = server.get(f"/api/v1/functions/tasks/{task_id}")
    assert "big" not in status["nodes"] and status["nodes"]["label"] == "completed", status
    assert big.get_attribute("data-state") == "idle"
    # the take's image is the gradient's 64x48, not resize's 128x96: resize never ran
    [take] = server.get("/api/v1/projects/bypass/takes", task_id=task_id)
    [output] = take["outputs"].values()
    image = Image.open(io.BytesIO(server.http.get(output["url"]).content))
    assert image.size == (64, 48)

    # bypass off again: the same graph now resizes
    big.locator("header").click(button="right")
    page.get_by_test_id("menu-bypass").click()
    expect(big.get_by_test_id("node-bypassed")).to_have_count(0)
    page.get_by_test_id("run-graph").click()
    page.wait_for_function(
        "t => { const s = document.querySelector('[data-testid=run-status]');"
        " return s.dataset.task !== t && s.dataset.status === 'completed'; }",
        arg=task_id,
        timeout=30_000,
    )
    again = page.get_by_test_id("run-status").get_attribute("data-task")
    [take] = server.get("/api/v1/projects/bypass/takes", task_id=again)
    [output] = take["outputs"].values()
    assert Image.open(io.BytesIO(server.http.get(output["url"]).content)).size == (128, 96)


def test_menu_renames_and_collapses_a_node(page: Any) -> None:
    open_editor(page, "menu")
    noise = drop_template(page, "noise_image", 80, 80)
    noise.locator("header").click(button="right")
    page.get_by_test_id("menu-label").fill("Grain")
    page.get_by_test_id("menu-rename").click()
    expect(noise.locator(".title")).to_have_text("Grain")
    tall = noise.bounding_box()
    noise.locator("header").click(button="right")
    page.get_by_test_id("menu-collapse").click()
    expect(noise.get_by_test_id("input-width")).to_be_hidden()
    short = noise.bounding_box()
    assert tall and short and short["height"] < tall["height"] * 0.6
    noise.locator("header").click(button="right")
    page.get_by_test_id("menu-delete").click()
    expect(page.locator(".svelte-flow__node")).to_have_count(0)


def test_a_group_moves_its_nodes_and_notes_are_kept_but_not_run(page: Any, server: Server) -> None:
    open_editor(page, "groups")
    annotations = [
        {"id": "g1", "kind": "group", "text": "Sky", "position": {"x": -40, "y": -60},
         "width": 360, "height": 420},
    ]  # fmt: skip
    graph = card_graph("grouped", annotations=annotations)
    put_canvas(server, "groups", "grouped", graph)
    load(page, "grouped")
    frame = page.get_by_test_id("group-g1")
    expect(frame.get_by_test_id("group-title-input")).to_have_value("Sky")
    sky, big = page.get_by_test_id("node-sky"), page.get_by_test_id("node-big")
    sky0, big0 = sky.bounding_box(), big.bounding_box()
    bar = frame.get_by_test_id("group-title").bounding_box()
    assert bar
    x, y = bar["x"] + bar["width"] - 6, bar["y"] + bar["height"] / 2  # the bar, beside the title
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + 150, y + 120, steps=10)
    page.mouse.up()
    sky1, big1 = sky.bounding_box(), big.bounding_box()
    assert sky0 and sky1 and big0 and big1
    assert sky1["x"] - sky0["x"] > 100 and sky1["y"] - sky0["y"] > 80, (sky0, sky1)
    assert abs(big1["x"] - big0["x"]) < 2 and abs(big1["y"] - big0["y"]) < 2  # outside the frame

    # a note from the picker: saved with the canvas, ignored by the run
    page.locator(".svelte-flow__pane").dblclick(position={"x": 60, "y": 60})
    page.keyboard.type("note")
    page.keyboard.press("Enter")
    page.get_by_test_id("note-note_1").get_by_test_id("note-text").fill("try 512 next")
    save_as(page, "grouped")
    stored = server.get("/api/v1/projects/groups/canvases/grouped")
    kept = {a["id"]: a for a in stored["annotations"]}
    assert kept["note_1"]["text"] == "try 512 next" and kept["note_1"]["kind"] == "note"
    assert kept["g1"]["position"]["x"] > 60  # the frame's new place
    assert by_id(stored)["sky"]["position"]["x"] > 60  # and its node's
    assert "note_1" not in by_id(stored)
    page.get_by_test_id("run-graph").click()
    page.wait_for_selector("[data-testid=run-status][data-status=completed]", timeout=30_000)
