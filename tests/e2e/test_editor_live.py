"""The editor live: takes made elsewhere appear in the takes panel, progress previews in nodes.

A real ``takeflow serve`` and Debian's Chromium. Takes submitted through the HTTP API (as another
tab, a script or the CLI would) show in the open editor's takes panel without a reload, for the
current project and shot only, and the panel follows the project when it changes. The minimap
stays off the nodes unless asked for. A diffusion node (the demo model, previews every 2 steps)
shows its progress previews while it runs, with the token on their URLs under ``--auth``, and
the finished image replaces them.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.test_auth import create_token
from tests.e2e.test_editor import (  # noqa: F401  (fixtures)
    SHOT,
    Server,
    browser,
    build_title_card,
    drop_template,
    open_editor,
    run_status,
    server,
    wait_image,
    web_dist,
)
from tests.e2e.test_editor_auth import open_page  # noqa: F401  (fixture)
from tests.server.harness import ServerProcess, running_server

pytestmark = pytest.mark.e2e
LIVE_MS = 8_000  # a take made elsewhere shows within this, with no reload


class Frames:
    """JSON messages the page sent on its WebSockets, and the sockets' URLs."""

    def __init__(self, page: Any) -> None:
        self.sent: list[dict[str, Any]] = []
        self.urls: list[str] = []
        page.on("websocket", self._socket)

    def _socket(self, ws: Any) -> None:
        self.urls.append(ws.url)
        ws.on("framesent", self._frame)

    def _frame(self, payload: Any) -> None:
        with contextlib.suppress(TypeError, ValueError):
            self.sent.append(json.loads(payload))

    def subscriptions(self) -> list[dict[str, Any]]:
        return [m for m in self.sent if m.get("project_ids")]


def submit(http: httpx.Client, project: str, shot: str, **inputs: Any) -> str:
    """A one-node task through the HTTP API, as a script or another tab would make it."""
    body = {"template_id": "solid_image", "inputs": {"width": 24, "height": 16, **inputs},
            "project_id": project, "shot_id": shot}  # fmt: skip
    response = http.post("/api/v1/functions/tasks", json=body)
    assert response.status_code == 200, response.text
    return str(response.json()["task_id"])


def wait_done(http: httpx.Client, task_id: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status = http.get(f"/api/v1/functions/tasks/{task_id}").json()["status"]
        if status in ("completed", "failed", "cancelled"):
            assert status == "completed", status
            return
        time.sleep(0.05)
    raise TimeoutError(f"task {task_id} did not finish in 30 s")


def take_of(page: Any, task_id: str) -> Any:
    return page.locator(f"[data-testid=takes-panel] [data-task='{task_id}']")


def choose(page: Any, project: str, shot: str = SHOT) -> None:
    page.get_by_test_id("project-select").select_option(project)
    page.get_by_test_id("shot-input").fill(shot)
    page.get_by_test_id("shot-input").press("Enter")
    page.wait_for_selector("[data-testid=takes-panel][data-live=connected]")


def test_takes_made_elsewhere_appear_without_a_reload(
    server: Server,  # noqa: F811
    open_page: Any,  # noqa: F811
) -> None:
    for project in ("alpha", "beta"):
        server.http.post("/api/v1/projects", json={"project_id": project, "name": project})
    page = open_page(server.base)
    frames = Frames(page)
    page.goto("/")
    page.wait_for_selector("[data-testid=editor][data-ready=true]")
    choose(page, "alpha")
    page.evaluate("window.__sameDocument = true")  # gone if the page reloads

    # one take for another shot, then one for this shot: only the second shows, live
    elsewhere = submit(server.http, "alpha", "ch01/sc01/sh020", color="#ff0000")
    here = submit(server.http, "alpha", SHOT, color="#00ff00")
    take = take_of(page, here)
    take.wait_for(timeout=LIVE_MS)
    page.wait_for_function(
        "el => el.complete && el.naturalWidth === 24", arg=take.locator("img").element_handle()
    )
    assert take.get_attribute("data-testid") == "take-take_001"
    wait_done(server.http, elsewhere)
    assert take_of(page, elsewhere).count() == 0
    assert page.evaluate("window.__sameDocument") is True

    # a second take of the shot lands on top, still without a reload
    again = submit(server.http, "alpha", SHOT, color="#0000ff")
    take_of(page, again).wait_for(timeout=LIVE_MS)
    listed = page.eval_on_selector_all(
        "[data-testid=takes-panel] [data-task]", "els => els.map(e => e.dataset.task)"
    )
    assert listed == [again, here]
    assert int(str(page.get_by_test_id("takes-panel").get_attribute("data-last-id"))) > 0

    # switching project switches the subscription: beta's takes come, alpha's no longer
    choose(page, "beta")
    page.wait_for_function("() => !document.querySelector('[data-testid=takes-panel] [data-task]')")
    other = submit(server.http, "alpha", SHOT, color="#ffffff")
    mine = submit(server.http, "beta", SHOT, color="#000000")
    take_of(page, mine).wait_for(timeout=LIVE_MS)
    wait_done(server.http, other)
    assert take_of(page, other).count() == 0
    assert page.evaluate("window.__sameDocument") is True

    assert frames.subscriptions()[0] == {"type": "subscribe", "project_ids": ["alpha"]}
    assert {"type": "unsubscribe", "project_ids": ["alpha"]} in frames.sent
    assert {"type": "subscribe", "project_ids": ["beta"]} in frames.sent


# Keeps every WebSocket the page opens in window.__sockets, so a test can drop them.
RECORD_SOCKETS = """
(() => {
  const Native = window.WebSocket;
  window.__sockets = [];
  window.WebSocket = class extends Native {
    constructor(...args) {
      super(...args);
      window.__sockets.push(this);
    }
  };
})();
"""
DROP_SOCKETS = """
() => {
  const open = window.__sockets.filter((s) => s.readyState === WebSocket.OPEN);
  for (const s of open) s.close();
  return open.length;
}
"""


def test_dropped_sockets_reconnect_and_resume_where_they_left_off(
    server: Server,  # noqa: F811
    open_page: Any,  # noqa: F811
) -> None:
    """Both of the editor's sockets (the run watched, the project feed) reconnect after a drop and
    resubscribe from their last position: the run ends with every event once, takes keep coming."""
    page = open_page(server.base)
    page.add_init_script(RECORD_SOCKETS)
    frames = Frames(page)
    open_editor(page, "drops")
    page.wait_for_selector("[data-testid=takes-panel][data-live=connected]")
    elsewhere = submit(server.http, "drops", SHOT, color="#00ff00")
    take_of(page, elsewhere).wait_for(timeout=LIVE_MS)
    build_title_card(page, delay_s=4.0)
    page.get_by_test_id("run-graph").click()
    page.wait_for_function(
        "() => parseInt(document.querySelector('[data-testid=run-status]').dataset.seq) >= 3"
    )
    task = run_status(page)["task"]
    last_id = int(str(page.get_by_test_id("takes-panel").get_attribute("data-last-id")))
    sent_before = len(frames.sent)

    assert page.evaluate(DROP_SOCKETS) == 2  # the run's socket and the feed's
    page.wait_for_selector("[data-testid=run-status][data-connection=connected]")
    page.wait_for_selector("[data-testid=takes-panel][data-live=connected]")
    resent = frames.sent[sent_before:]
    run_again = [m for m in resent if m.get("task_ids") == [task]]
    assert run_again and run_again[0]["last_seq"][task] >= 3, resent
    feed_again = [m for m in resent if m.get("project_ids") == ["drops"]]
    assert feed_again and feed_again[0]["type"] == "subscribe", resent
    assert feed_again[0]["last_id"] >= last_id > 0, resent

    # the run finishes on the new socket: every stored event applied once, no gap
    wait_image(page.locator("[data-testid^=node-text_overlay_]"))
    after = run_status(page)
    stored = server.get(f"/api/v1/runs/{task}/events")
    assert after["status"] == "completed"
    assert after["gaps"] == "0"
    assert int(after["seq"]) == len(stored) and int(after["applied"]) == len(stored)
    # ... and takes made elsewhere still show on the feed's new socket
    again = submit(server.http, "drops", SHOT, color="#0000ff")
    take_of(page, again).wait_for(timeout=LIVE_MS)
    take_of(page, task).wait_for(timeout=LIVE_MS)


def test_minimap_is_off_until_asked_for_then_small_beside_the_controls(
    server: Server,  # noqa: F811
    open_page: Any,  # noqa: F811
) -> None:
    page = open_page(server.base)
    page.goto("/")
    page.wait_for_selector("[data-testid=editor][data-ready=true]")
    assert page.locator(".svelte-flow__minimap").count() == 0  # nothing over the nodes
    page.get_by_test_id("toggle-minimap").click()
    minimap = page.locator(".svelte-flow__minimap").bounding_box()
    controls = page.locator(".svelte-flow__controls").bounding_box()
    canvas = page.get_by_test_id("canvas").bounding_box()
    assert minimap and controls and canvas
    assert minimap["width"] <= 150 and minimap["height"] <= 100
    assert minimap["x"] >= controls["x"] + controls["width"]  # beside the controls, not on them
    assert minimap["x"] < canvas["x"] + canvas["width"] / 3  # bottom left
    assert minimap["y"] + minimap["height"] > canvas["y"] + canvas["height"] * 0.8
    page.reload()  # the choice is remembered
    page.locator(".svelte-flow__minimap").wait_for()
    page.get_by_test_id("toggle-minimap").click()
    assert page.locator(".svelte-flow__minimap").count() == 0


# ---- previews, under auth ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_server(
    web_dist: Path,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ServerProcess, str]]:
    """``takeflow serve --demo --auth``: the tiny demo model, previews every 2 steps."""
    home = tmp_path_factory.mktemp("live") / "home"
    home.mkdir(parents=True)
    (home / "config.json").write_text(
        json.dumps({"diffusion": {"preview_every": 2, "max_batch_size": 1}})
    )
    token = create_token(home, "ana", "demo")
    with running_server(home, "--demo", "--auth", cli=True, token=token) as srv:
        yield srv, token


# Records every preview <img> put into a node, with the run's status at that moment.
WATCH_PREVIEWS = """
() => {
  window.__previews = [];
  new MutationObserver(() => {
    for (const img of document.querySelectorAll('[data-testid=node-preview]')) {
      if (window.__previews.some(p => p.src === img.getAttribute('src'))) continue;
      const status = document.querySelector('[data-testid=run-status]').dataset.status;
      window.__previews.push({src: img.getAttribute('src'), status});
    }
  }).observe(document.body, {subtree: true, childList: true, attributes: true});
}
"""


def test_progress_previews_show_in_the_running_node(
    demo_server: tuple[ServerProcess, str],
    open_page: Any,  # noqa: F811
) -> None:
    srv, token = demo_server
    page = open_page(srv.base)
    page.add_init_script(f"localStorage.setItem('takeflow.token', {json.dumps(token)})")
    frames = Frames(page)
    page.goto("/")
    page.wait_for_selector("[data-testid=editor][data-ready=true]")
    choose(page, "demo")
    # the socket's user comes from GET /api/v1/auth/me: the token's user
    assert frames.urls and all(f"/ws/ana?token={token}" in u for u in frames.urls), frames.urls

    gen = drop_template(page, "image_generation", 160, 80)
    gen.get_by_test_id("input-prompt").fill("a lighthouse at dusk")
    for name, value in (("steps", 8), ("width", 64), ("height", 64), ("seed", 7)):
        gen.get_by_test_id(f"input-{name}").fill(str(value))
    page.evaluate(WATCH_PREVIEWS)
    page.get_by_test_id("run-graph").click()
    wait_image(gen)
    status = page.get_by_test_id("run-status")
    assert status.get_attribute("data-status") == "completed"

    # steps 2, 4 and 6 of 8 sent a preview; each showed in the node while the task ran
    seen = page.evaluate("window.__previews")
    assert gen.get_attribute("data-previews") == "3"
    assert len(seen) == 3, seen
    assert all(p["status"] in ("queued", "running") for p in seen), seen
    assert all(p["src"].endswith(f"token={token}") for p in seen), seen
    assert all("/files/05_Cache/previews/" in p["src"] for p in seen), seen
    # ... and the finished image replaced the last one
    assert gen.get_by_test_id("node-preview").count() == 0
    assert gen.get_by_test_id("node-image").evaluate("el => el.naturalWidth") == 64
    preview = httpx.get(srv.base + seen[-1]["src"], timeout=10)
    assert preview.status_code == 200 and preview.content.startswith(b"\xff\xd8\xff")  # JPEG
    assert httpx.get(srv.base + seen[-1]["src"].split("?")[0], timeout=10).status_code == 401

    # the take shows in the panel (from the project's live feed, also under auth)
    task_id = str(status.get_attribute("data-task"))
    take_of(page, task_id).wait_for(timeout=LIVE_MS)
