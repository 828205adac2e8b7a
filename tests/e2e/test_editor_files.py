# ruff: noqa: F811 - the fixtures imported from test_editor are the parameters
"""Canvas files in the editor (issue 22), in a real Chromium against a real ``takeflow serve``:
JSON export and import (and dropping a file), the unsaved marker and the prompt on leaving,
the overwrite prompt, rename that renames (bug 6), undo across a reload, the first screen."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_editor import (  # noqa: F401 - fixtures used by name
    Server,
    browser,
    connect,
    drop_template,
    edge_count,
    expect_nodes,
    open_editor,
    page,
    server,
    web_dist,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]
CANVASES = "02_Source_Creative/canvases"


def marker(page: Any) -> str:
    return str(page.get_by_test_id("unsaved").get_attribute("data-unsaved"))


def wait_marker(page: Any, value: str) -> None:
    page.wait_for_selector(f"[data-testid=unsaved][data-unsaved={value}]", state="attached")


def export_json(page: Any, tmp: Path, name: str) -> dict[str, Any]:
    page.get_by_test_id("canvas-menu").click()
    with page.expect_download() as info:
        page.get_by_test_id("export-json").click()
    path = tmp / name
    info.value.save_as(path)
    return dict(json.loads(path.read_text()))


def two_linked_nodes(page: Any) -> tuple[Any, Any]:
    noise = drop_template(page, "noise_image", 60, 60)
    blend = drop_template(page, "blend", 480, 60)
    noise.get_by_test_id("input-seed").fill("4321")
    noise.get_by_test_id("input-width").fill("48")
    connect(page, noise, "image", blend, "base")
    edge_count(page, 1)
    return noise, blend


def test_export_then_import_round_trips_equal(page: Any, tmp_path: Path) -> None:
    open_editor(page, "exports")
    two_linked_nodes(page)
    page.get_by_test_id("canvas-name").fill("card")
    first = export_json(page, tmp_path, "first.json")
    assert first["format"] == "takeflow.graph/v1" and first["name"] == "card"
    assert [n["id"] for n in first["nodes"]] == ["noise_image_1", "blend_1"]
    noise = first["nodes"][0]
    assert noise["inputs"]["seed"] == {"kind": "literal", "value": 4321}
    link = {"kind": "link", "node": "noise_image_1", "output": "image"}
    assert first["nodes"][1]["inputs"]["base"] == link

    page.get_by_role("button", name="New", exact=True).click()
    expect_nodes(page, 0)
    page.get_by_test_id("import-file").set_input_files(str(tmp_path / "first.json"))
    page.get_by_test_id("notice").filter(has_text="Imported card").wait_for()
    expect_nodes(page, 2)
    edge_count(page, 1)
    seed = page.locator("[data-testid=node-noise_image_1] [data-testid=input-seed]")
    assert seed.input_value() == "4321"
    wait_marker(page, "true")  # imported, not saved yet
    assert export_json(page, tmp_path, "second.json") == first


def drop_file(page: Any, name: str, text: str) -> None:
    """Drop a file on the canvas as the OS does (a DataTransfer holding a File)."""
    page.evaluate(
        """([name, text]) => {
            const dt = new DataTransfer();
            dt.items.add(new File([text], name, { type: 'application/json' }));
            const target = document.querySelector('[data-testid=canvas]');
            const r = target.getBoundingClientRect();
            const at = { clientX: r.left + 200, clientY: r.top + 200, bubbles: true };
            target.dispatchEvent(new DragEvent('dragover', { ...at, dataTransfer: dt }));
            target.dispatchEvent(new DragEvent('drop', { ...at, dataTransfer: dt }));
        }""",
        [name, text],
    )


def test_dropping_a_canvas_file_imports_it_and_other_files_are_left_alone(page: Any) -> None:
    open_editor(page, "drops")
    take = {"take_id": "t1", "outputs": {}, "metadata": {"graph": {"nodes": []}}}
    drop_file(page, "take.json", json.dumps(take))
    drop_file(page, "notes.json", "{not json")
    page.wait_for_timeout(300)
    expect_nodes(page, 0)
    assert page.get_by_test_id("notice").filter(has_text="Imported").count() == 0

    node = {"id": "noise_image_1", "template": "noise_image",
            "inputs": {"seed": {"kind": "literal", "value": 99}}}  # fmt: skip
    graph = {"format": "takeflow.graph/v1", "name": "dropped", "nodes": [node]}
    drop_file(page, "dropped.takeflow.json", json.dumps(graph))
    page.get_by_test_id("notice").filter(has_text="Imported dropped").wait_for()
    expect_nodes(page, 1)
    seed = page.locator("[data-testid=node-noise_image_1] [data-testid=input-seed]")
    assert seed.input_value() == "99"
    assert page.get_by_test_id("canvas-name").input_value() == "dropped"


def test_unsaved_marker_prompt_on_leaving_and_overwrite_prompt(page: Any, server: Server) -> None:
    open_editor(page, "marks")
    assert marker(page) == "false"  # an empty new canvas has nothing to lose
    noise = drop_template(page, "noise_image", 60, 60)
    wait_marker(page, "true")
    assert page.get_by_test_id("unsaved").inner_text() == "•"
    page.get_by_test_id("canvas-name").fill("mine")
    page.get_by_test_id("save-canvas").click()
    page.get_by_test_id("notice").filter(has_text="Saved").wait_for()
    wait_marker(page, "false")
    assert page.get_by_test_id("unsaved").inner_text() == ""
    noise.get_by_test_id("input-seed").fill("77")
    wait_marker(page, "true")

    # saving under another saved canvas's name asks first; declining keeps theirs
    node = {"id": "blend_1", "template": "blend", "inputs": {}}
    theirs = {"format": "takeflow.graph/v1", "name": "theirs", "nodes": [node]}
    response = server.http.put("/api/v1/projects/marks/canvases/theirs", json=theirs)
    assert response.status_code == 200
    asked: list[tuple[str, str]] = []

    def on_dialog(dialog: Any) -> None:
        asked.append((dialog.type, dialog.message))
        dialog.dismiss()

    page.on("dialog", on_dialog)
    page.get_by_test_id("canvas-name").fill("theirs")
    page.get_by_test_id("save-canvas").click()
    page.get_by_test_id("notice").filter(has_text="Not saved").wait_for()
    assert asked and asked[0][0] == "confirm" and "verwrite" in asked[0][1]
    stored = server.get("/api/v1/projects/marks/canvases/theirs")
    assert [n["id"] for n in stored["nodes"]] == ["blend_1"]
    assert "mine" in [c["name"] for c in server.get("/api/v1/projects/marks/canvases")]
    wait_marker(page, "true")

    # leaving with unsaved changes asks (beforeunload); dismissing keeps the page
    page.close(run_before_unload=True)
    page.wait_for_timeout(500)
    assert [kind for kind, _ in asked].count("beforeunload") == 1
    assert not page.is_closed()


def test_no_prompt_on_leaving_a_saved_canvas(page: Any) -> None:
    open_editor(page, "clean")
    drop_template(page, "noise_image", 60, 60)
    page.get_by_test_id("canvas-name").fill("kept")
    page.get_by_test_id("save-canvas").click()
    page.get_by_test_id("notice").filter(has_text="Saved").wait_for()
    wait_marker(page, "false")
    asked: list[str] = []

    def on_dialog(dialog: Any) -> None:
        asked.append(dialog.type)
        dialog.accept()

    page.on("dialog", on_dialog)
    page.reload()
    page.wait_for_selector("[data-testid=editor][data-ready=true]")
    assert asked == []
    wait_marker(page, "false")  # the reload keeps the saved state too


def test_renaming_a_saved_canvas_renames_it_bug_6(page: Any, server: Server) -> None:
    """Bug 6: a new name and Save left the old file beside a copy."""
    open_editor(page, "renames")
    drop_template(page, "noise_image", 60, 60)
    page.get_by_test_id("canvas-name").fill("draft")
    page.get_by_test_id("save-canvas").click()
    page.get_by_test_id("notice").filter(has_text="Saved").wait_for()
    page.get_by_test_id("notice").get_by_role("button").click()

    page.get_by_test_id("canvas-name").fill("final")
    page.get_by_test_id("save-canvas").click()
    page.get_by_test_id("notice").filter(has_text="Saved").wait_for()
    assert [c["name"] for c in server.get("/api/v1/projects/renames/canvases")] == ["final"]
    assert server.http.get("/api/v1/projects/renames/canvases/draft").status_code == 404
    commits = server.get("/api/v1/projects/renames/commits", limit=5)
    moved = next(c for c in commits if c["message"].startswith("Rename canvas draft to final"))
    assert f"{CANVASES}/draft.takeflow.json" in moved["files"]  # its removal is committed
    index = next(server.home.rglob("projects.json"))
    folder = Path(json.loads(index.read_text())["renames"])
    tracked = subprocess.run(
        ["git", "ls-files", CANVASES], cwd=folder, capture_output=True, text=True, check=True
    ).stdout.split()
    assert tracked == [f"{CANVASES}/final.takeflow.json"]  # git keeps only the new name
    wait_marker(page, "false")


def test_undo_history_survives_a_reload(page: Any) -> None:
    open_editor(page, "undos")
    drop_template(page, "noise_image", 60, 60)
    drop_template(page, "blend", 480, 60)
    expect_nodes(page, 2)
    page.wait_for_timeout(400)  # the history is written soon after each change
    page.reload()
    page.wait_for_selector("[data-testid=editor][data-ready=true]")
    expect_nodes(page, 2)
    undo = page.get_by_test_id("undo")
    assert undo.is_enabled()
    undo.click()
    expect_nodes(page, 1)
    assert page.locator("[data-testid=node-noise_image_1]").count() == 1
    page.get_by_test_id("redo").click()
    expect_nodes(page, 2)


SEED_HISTORY = """() => {
    const saved = JSON.parse(localStorage.getItem('takeflow.doc.v1'));
    const empty = '{"nodes":[],"edges":[]}';
    const past = Array.from({ length: 120 }, () => empty);
    const entry = { past, future: [], current: saved.doc, clean: empty, cleanName: 'untitled' };
    localStorage.setItem('takeflow.history.' + saved.docId, JSON.stringify(entry));
    const others = Array.from({ length: 6 }, (_, i) => 'other' + i);
    for (const id of others) localStorage.setItem('takeflow.history.' + id, '{}');
    localStorage.setItem('takeflow.history.index', JSON.stringify(others));
}"""
KEPT_HISTORY = """() => {
    const saved = JSON.parse(localStorage.getItem('takeflow.doc.v1'));
    const entry = JSON.parse(localStorage.getItem('takeflow.history.' + saved.docId));
    const keys = Object.keys(localStorage).filter(
        (k) => k.startsWith('takeflow.history.') && k !== 'takeflow.history.index');
    return { past: entry.past.length, canvases: keys.length };
}"""


def test_the_kept_history_is_bounded(page: Any) -> None:
    open_editor(page, "bounds")
    drop_template(page, "noise_image", 60, 60)
    page.wait_for_timeout(400)
    page.evaluate(SEED_HISTORY)  # a long history, and six other canvases' histories
    page.reload()
    page.wait_for_selector("[data-testid=editor][data-ready=true]")
    drop_template(page, "blend", 480, 60)
    page.wait_for_timeout(400)
    assert page.evaluate(KEPT_HISTORY) == {"past": 50, "canvases": 4}


@pytest.fixture(scope="module")
def demo_server(web_dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from tests.server.harness import running_server

    home = tmp_path_factory.mktemp("files-demo") / "home"
    home.mkdir(parents=True)
    with running_server(home, "--demo", cli=True) as srv:
        yield srv


def test_first_screen_opens_a_demo_canvas_in_one_click(browser: Any, demo_server: Any) -> None:
    context = browser.new_context(
        viewport={"width": 1440, "height": 900}, base_url=demo_server.base
    )
    context.set_default_timeout(30_000)
    page = context.new_page()
    try:
        page.goto("/")
        page.wait_for_selector("[data-testid=editor][data-ready=true]")
        first = page.get_by_test_id("first-screen")
        first.wait_for()
        assert "add a node" in first.inner_text()
        assert page.get_by_test_id("project-select").input_value() == "demo"
        for name in ("poster", "dream", "shot_video", "next_shot"):  # every demo canvas shows
            assert first.get_by_test_id(f"first-open-{name}").count() == 1, name
        assert first.get_by_test_id("first-more").count() == 0
        first.get_by_test_id("first-open-poster").click()  # one step
        page.get_by_test_id("notice").filter(has_text="Loaded poster").wait_for()
        assert page.locator(".svelte-flow__node").count() > 0
        assert first.count() == 0
        wait_marker(page, "false")
        # the toolbar's list opens a canvas in one step too
        page.get_by_test_id("canvas-list").select_option("dream")
        page.get_by_test_id("notice").filter(has_text="Loaded dream").wait_for()
        assert page.get_by_test_id("canvas-name").input_value() == "dream"
    finally:
        context.close()
