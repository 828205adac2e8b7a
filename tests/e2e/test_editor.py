"""The canvas editor in a real browser (Debian's Chromium) against a real ``takeflow serve``.

A user builds a graph from the palette, connects it, runs it, watches progress, sees the image
on the result node, a new take and a new git commit; refused connections and invalid graphs
show why; a reload mid-run catches up from the last sequence number. Screenshots of the editor
go to ``docs/screenshots/``.
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
WEB = ROOT / "web"
SCREENSHOTS = ROOT / "docs" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
SHOT = "ch01/sc01/sh010"
UI_TIMEOUT_MS = 20_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def web_dist() -> Path:
    """The built editor; built here (``npm ci`` + ``npm run build``) when missing."""
    dist = WEB / "dist"
    if (dist / "index.html").exists():
        return dist
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm is not installed, so the editor (web/) cannot be built")
    if not (WEB / "node_modules").exists():
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=WEB, check=True, timeout=300)
    subprocess.run([npm, "run", "build"], cwd=WEB, check=True, timeout=300)
    return dist


class Server:
    """``takeflow serve`` in a subprocess with its own Takeflow home, on a free loopback port."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = home.parent / "serve.log"
        self.http = httpx.Client(base_url=self.base, timeout=15)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "TAKEFLOW_HOME": str(self.home)}
        takeflow = Path(sys.executable).with_name("takeflow")
        cmd = [str(takeflow)] if takeflow.exists() else [sys.executable, "-m", "server.cli"]
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [*cmd, "--home", str(self.home), "serve", "--port", str(self.port)],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"takeflow serve exited: {self.log.read_text()[-2000:]}")
            try:
                if self.http.get("/api/v1/projects").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"takeflow serve did not answer in 60 s: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        self.http.close()
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)

    def get(self, path: str, **params: Any) -> Any:
        response = self.http.get(path, params=params)
        assert response.status_code == 200, response.text
        return response.json()


@pytest.fixture(scope="module")
def server(web_dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("editor") / "home")
    srv.start()
    try:
        assert srv.http.get("/").text.count('id="app"') == 1, "the server does not serve web/dist"
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=30_000)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser: Any, server: Server) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1440, "height": 900}, base_url=server.base)
    context.set_default_timeout(UI_TIMEOUT_MS)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield pg
    finally:
        context.close()
    assert not errors, f"the editor raised in the browser: {errors}"


# ---- what a user does ------------------------------------------------------------------------


def open_editor(page: Any, project: str) -> None:
    """Open the editor, create ``project`` from the toolbar, pick the shot."""
    page.goto("/")
    page.wait_for_selector("[data-testid=editor][data-ready=true]")
    page.get_by_test_id("new-project").click()
    page.get_by_test_id("new-project-id").fill(project)
    page.get_by_test_id("create-project").click()
    page.wait_for_function(
        "p => document.querySelector('[data-testid=project-select]').value === p", arg=project
    )
    page.get_by_test_id("shot-input").fill(SHOT)
    page.get_by_test_id("shot-input").press("Enter")


def drop_template(page: Any, template: str, x: int, y: int) -> Any:
    """Find ``template`` in the palette (by search) and drag it onto the canvas at (x, y)."""
    page.get_by_test_id("palette-search").fill(template.replace("_", " ").split()[0])
    page.get_by_test_id(f"palette-item-{template}").drag_to(
        page.get_by_test_id("canvas"), target_position={"x": x, "y": y}
    )
    page.get_by_test_id("palette-search").fill("")
    node = page.locator(f"[data-testid^=node-{template}_]").last
    node.wait_for()
    return node


def node_id(node: Any) -> str:
    return str(node.get_attribute("data-testid")).removeprefix("node-")


def connect(page: Any, source: Any, output: str, target: Any, port: str) -> None:
    """Drag from an output handle to an input handle, as a user does."""
    start = source.get_by_test_id(f"handle-out-{output}").bounding_box()
    end = target.get_by_test_id(f"handle-in-{port}").bounding_box()
    assert start and end
    page.mouse.move(start["x"] + start["width"] / 2, start["y"] + start["height"] / 2)
    page.mouse.down()
    page.mouse.move(end["x"] + end["width"] / 2, end["y"] + end["height"] / 2, steps=12)
    page.mouse.up()


def edge_count(page: Any, expected: int | None = None) -> int:
    """Edges drawn on the canvas; with ``expected``, first wait (briefly) until that many show."""
    edges = page.locator(".svelte-flow__edge")
    if expected is not None:
        from playwright.sync_api import expect

        expect(edges).to_have_count(expected, timeout=5_000)
    return int(edges.count())


def build_title_card(page: Any, delay_s: float) -> tuple[Any, Any, Any]:
    """Three nodes from the palette: gradient -> text overlay <- delay (text), connected."""
    sky = drop_template(page, "gradient_image", 60, 40)
    wait = drop_template(page, "delay", 60, 420)
    card = drop_template(page, "text_overlay", 480, 120)
    sky.get_by_test_id("input-width").fill("160")
    sky.get_by_test_id("input-height").fill("96")
    sky.get_by_test_id("input-end_color").fill("#f29e4c")
    wait.get_by_test_id("input-seconds").fill(str(delay_s))
    wait.get_by_test_id("input-steps").fill("8")
    wait.get_by_test_id("input-value").fill("TAKE")
    card.get_by_test_id("input-size").fill("24")
    connect(page, sky, "image", card, "image")
    connect(page, wait, "value", card, "text")
    assert edge_count(page, 2) == 2
    assert card.get_by_test_id("linked-image").inner_text() == f"← {node_id(sky)}.image"
    assert card.get_by_test_id("linked-text").inner_text() == f"← {node_id(wait)}.value"
    return sky, wait, card


def run_status(page: Any) -> dict[str, str]:
    status = page.get_by_test_id("run-status")
    return {
        k: str(status.get_attribute(f"data-{k}"))
        for k in ("status", "task", "seq", "applied", "gaps")
    }


def wait_image(card: Any) -> None:
    img = card.get_by_test_id("node-image")
    img.wait_for()
    card.page.wait_for_function(
        "el => el.complete && el.naturalWidth > 0", arg=img.element_handle()
    )


def shoot(page: Any, name: str) -> None:
    """Screenshots for docs/ only when asked (``TAKEFLOW_UPDATE_SCREENSHOTS=1``)."""
    if os.environ.get("TAKEFLOW_UPDATE_SCREENSHOTS") != "1":
        return
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.evaluate("document.querySelectorAll('[data-testid=notice]').forEach(n => n.remove())")
    shot = Image.open(io.BytesIO(page.screenshot()))
    small = shot.convert("RGB").quantize(colors=96, method=Image.Quantize.MEDIANCUT)
    small.save(SCREENSHOTS / f"editor-{name}.png", optimize=True)


# ---- tests -------------------------------------------------------------------------------------


def test_build_run_and_review_a_graph(page: Any, server: Server) -> None:
    open_editor(page, "film")
    _, wait, card = build_title_card(page, delay_s=2.4)
    page.get_by_test_id("fit-view").click()
    shoot(page, "idle")
    commits_before = server.get("/api/v1/projects/film/commits", limit=1)

    page.get_by_test_id("run-graph").click()
    page.wait_for_selector("[data-testid=run-status][data-status=running]")
    status = wait.get_by_test_id("node-status")
    page.wait_for_function(
        "el => el.dataset.state === 'running' && "
        "parseFloat(el.parentElement.querySelector('[data-testid=node-progress]')"
        "?.style.width || '0') > 0",
        arg=status.element_handle(),
    )
    assert "waiting" in wait.get_by_test_id("node-stage").inner_text()
    assert "left" in wait.get_by_test_id("node-eta").inner_text()
    shoot(page, "running")

    wait_image(card)
    assert run_status(page)["status"] == "completed"
    task_id = run_status(page)["task"]
    assert card.get_attribute("data-state") == "completed"

    take = page.locator(f"[data-testid^=take-take_][data-task='{task_id}']")
    take.wait_for()
    thumb = take.locator("img")
    page.wait_for_function("el => el.naturalWidth > 0", arg=thumb.element_handle())
    assert "quality standard" in take.inner_text()
    shoot(page, "finished")

    takes = server.get("/api/v1/projects/film/takes", shot_id=SHOT, task_id=task_id)
    assert len(takes) == 1
    image = next(iter(takes[0]["outputs"].values()))
    assert image["content_type"] == "image/png"
    newest = server.get("/api/v1/projects/film/commits", limit=1)[0]
    assert newest["sha"] != (commits_before[0]["sha"] if commits_before else None)
    assert f"Takeflow-Task: {task_id}" in newest["message"]
    assert page.get_by_test_id("run-commit").get_attribute("title") == newest["sha"]

    # a second run makes a second take; the first can be made active again from the panel
    wait.get_by_test_id("input-seconds").fill("0.2")
    page.get_by_test_id("run-graph").click()
    page.wait_for_function(
        "t => { const s = document.querySelector('[data-testid=run-status]').dataset;"
        " return s.task !== t && s.status === 'completed'; }",
        arg=task_id,
    )
    page.locator("[data-testid^=take-take_]").nth(1).wait_for()
    assert page.locator("[data-testid^=take-take_]").count() == 2
    take.get_by_test_id("take-set-active").or_(take.get_by_test_id("take-active")).wait_for()
    if take.get_by_test_id("take-set-active").count():
        take.get_by_test_id("take-set-active").click()
    take.get_by_test_id("take-active").wait_for()
    assert page.get_by_test_id("take-active").count() == 1
    listed = server.get("/api/v1/projects/film/takes", shot_id=SHOT, task_id=task_id)
    assert listed[0]["active"] is True


def test_type_mismatched_connection_is_refused_with_a_reason(page: Any) -> None:
    open_editor(page, "mismatch")
    prompt = drop_template(page, "text_prompt", 60, 60)
    resize = drop_template(page, "resize", 480, 60)
    connect(page, prompt, "text", resize, "image")
    refusal = page.get_by_test_id("connection-refused")
    refusal.wait_for()
    assert "text output cannot feed the image input 'image'" in refusal.inner_text()
    assert edge_count(page) == 0
    assert resize.get_by_test_id("linked-image").count() == 0
    # widening is allowed: an integer output may feed a float input
    noise = drop_template(page, "noise_image", 60, 360)
    blend = drop_template(page, "blend", 900, 60)
    connect(page, noise, "seed", blend, "opacity")
    assert edge_count(page, 1) == 1
    # undo takes the link away again, redo restores it
    page.get_by_test_id("undo").click()
    assert edge_count(page, 0) == 0
    page.get_by_test_id("redo").click()
    assert edge_count(page, 1) == 1


def test_delete_key_removes_the_selection_and_undo_brings_it_back(page: Any) -> None:
    open_editor(page, "keys")
    noise = drop_template(page, "noise_image", 60, 60)
    blend = drop_template(page, "blend", 480, 60)
    connect(page, noise, "image", blend, "base")
    edge_count(page, 1)
    noise.locator("header .title").click()
    page.keyboard.press("Delete")
    expect_nodes(page, 1)
    edge_count(page, 0)
    page.keyboard.press("Control+z")
    expect_nodes(page, 2)
    edge_count(page, 1)


def expect_nodes(page: Any, n: int) -> None:
    from playwright.sync_api import expect

    expect(page.locator(".svelte-flow__node")).to_have_count(n, timeout=5_000)


def test_invalid_graph_shows_errors_on_the_right_nodes(page: Any, server: Server) -> None:
    open_editor(page, "broken")
    noise = drop_template(page, "noise_image", 60, 60)
    blend = drop_template(page, "blend", 480, 60)
    noise.get_by_test_id("input-width").fill("99999")
    connect(page, noise, "image", blend, "base")
    page.get_by_test_id("run-graph").click()
    noise.get_by_test_id("node-error").first.wait_for()
    noise_errors = noise.get_by_test_id("node-error")
    assert noise_errors.count() == 1
    assert noise_errors.get_attribute("data-port") == "width"
    assert "above the maximum 4096" in noise_errors.inner_text()
    blend_errors = blend.get_by_test_id("node-error")
    assert blend_errors.count() == 1
    assert blend_errors.get_attribute("data-port") == "overlay"
    assert run_status(page)["task"] == ""  # nothing was queued
    assert server.get("/api/v1/projects/broken/takes") == []
    # fixing the value clears that node's pinned error
    noise.get_by_test_id("input-width").fill("64")
    assert noise.get_by_test_id("node-error").count() == 0


def test_reload_mid_run_catches_up_without_gaps(page: Any, server: Server) -> None:
    open_editor(page, "reload")
    build_title_card(page, delay_s=4.0)
    page.get_by_test_id("run-graph").click()
    page.wait_for_function(
        "() => parseInt(document.querySelector('[data-testid=run-status]').dataset.seq) >= 4"
    )
    before = run_status(page)
    assert before["status"] == "running"
    page.reload()
    page.wait_for_selector("[data-testid=editor][data-ready=true]")
    # the canvas came back from autosave and the run resumed from its last sequence number
    card = page.locator("[data-testid^=node-text_overlay_]")
    assert page.locator(".svelte-flow__node").count() == 3
    assert edge_count(page, 2) == 2
    assert run_status(page)["task"] == before["task"]
    assert int(run_status(page)["seq"]) >= int(before["seq"])
    wait_image(card)
    after = run_status(page)
    stored = server.get(f"/api/v1/runs/{after['task']}/events")
    assert after["status"] == "completed"
    assert after["gaps"] == "0"
    assert int(after["seq"]) == stored[-1]["seq"] == len(stored)
    assert int(after["applied"]) == len(stored)  # every event once: none lost, none twice
    assert [e["seq"] for e in stored] == list(range(1, len(stored) + 1))


def test_a_running_task_can_be_cancelled(page: Any) -> None:
    open_editor(page, "cancel")
    wait = drop_template(page, "delay", 60, 60)
    wait.get_by_test_id("input-seconds").fill("30")
    wait.get_by_test_id("input-steps").fill("60")
    page.get_by_test_id("run-graph").click()
    wait.get_by_test_id("node-stage").wait_for()
    page.get_by_test_id("cancel-run").click()
    page.wait_for_selector("[data-testid=run-status][data-status=cancelled]", timeout=10_000)
    assert wait.get_attribute("data-state") == "cancelled"
    assert page.get_by_test_id("cancel-run").is_disabled()


def test_a_failing_node_pins_its_error_message(page: Any) -> None:
    open_editor(page, "failing")
    broken = drop_template(page, "fail", 60, 60)
    broken.get_by_test_id("input-message").fill("the render farm is on fire")
    page.get_by_test_id("run-graph").click()
    failure = broken.get_by_test_id("node-failure")
    failure.wait_for()
    assert "the render farm is on fire" in failure.inner_text()
    assert broken.get_attribute("data-state") == "failed"
    assert "the render farm is on fire" in page.get_by_test_id("run-error").inner_text()


def test_upload_button_fills_an_asset_input(page: Any, server: Server) -> None:
    open_editor(page, "assets")
    loader = drop_template(page, "load_asset", 60, 60)
    buf = io.BytesIO()
    Image.new("RGB", (32, 20), "#3366cc").save(buf, format="PNG")
    loader.get_by_test_id("file-asset").set_input_files(
        {"name": "plate.png", "mimeType": "image/png", "buffer": buf.getvalue()}
    )
    page.wait_for_function(
        "el => el.value.startsWith('asset://')",
        arg=loader.get_by_test_id("input-asset").element_handle(),
    )
    uri = loader.get_by_test_id("input-asset").input_value()
    page.get_by_test_id("run-graph").click()
    wait_image(loader)
    assert loader.get_by_test_id("node-image").evaluate("el => el.naturalWidth") == 32
    assert uri.startswith("asset://")
