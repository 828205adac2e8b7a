# ruff: noqa: F811 - the fixtures imported from test_editor are the parameters
"""The editor plays video, in a real Chromium against a real ``takeflow serve``: a video take
(made by a real ``frames_to_video`` task) plays inline in the takes panel; the scene view plays
the scene's cut (a real assembly) with the shot boundaries on its timeline, one click makes
another take active, and Assemble makes the next cut with that take in place."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import pytest

from tests.e2e.test_editor import browser, drop_template, page, server, shoot, web_dist  # noqa: F401
from tests.e2e.test_editor_bugs import load

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

SCENE = "ch01/sc01"


def _lit(value: Any) -> dict[str, Any]:
    return {"kind": "literal", "value": value}


def _link(node: str, output: str) -> dict[str, Any]:
    return {"kind": "link", "node": node, "output": output}


def _fade(start: str, end: str, frames: int = 12, fps: float = 12.0) -> dict[str, Any]:
    """A canvas graph: two solid colours cross-faded into a video (``frames`` at ``fps``)."""
    size = {"width": _lit(64), "height": _lit(48)}
    return {
        "name": "fade",
        "nodes": [
            {"id": "a", "template": "solid_image", "inputs": {**size, "color": _lit(start)}},
            {"id": "b", "template": "solid_image", "inputs": {**size, "color": _lit(end)}},
            {"id": "clip", "template": "frames_to_video", "inputs": {
                "images": _link("a", "image"), "end_image": _link("b", "image"),
                "frame_count": _lit(frames), "fps": _lit(fps)}},
        ],
    }  # fmt: skip


def _still(color: str) -> dict[str, Any]:
    size = {"width": _lit(64), "height": _lit(48)}
    return {
        "name": "still",
        "nodes": [{"id": "s", "template": "solid_image", "inputs": {**size, "color": _lit(color)}}],
    }


def make_take(server: Any, project: str, shot: str, graph: dict[str, Any]) -> dict[str, Any]:
    """Run ``graph`` for ``shot`` through the API and wait for its take."""
    body = {"graph": graph, "project_id": project, "shot_id": shot}
    response = server.http.post("/api/v1/runs", json=body)
    assert response.status_code < 300, response.text
    task_id = response.json()["task_id"]
    deadline = time.monotonic() + 90
    while True:
        task = server.get(f"/api/v1/functions/tasks/{task_id}")
        if task["status"] in ("completed", "failed", "cancelled"):
            break
        assert time.monotonic() < deadline, f"task {task_id} still {task['status']}"
        time.sleep(0.1)
    assert task["status"] == "completed", task
    takes = server.get(f"/api/v1/projects/{project}/takes", task_id=task_id)
    assert len(takes) == 1, takes
    return dict(takes[0])


def open_project(page: Any, project: str, shot: str) -> None:
    page.goto("/")
    page.wait_for_selector("[data-testid=editor][data-ready=true]")
    page.get_by_test_id("project-select").select_option(project)
    page.get_by_test_id("shot-input").fill(shot)
    page.get_by_test_id("shot-input").press("Enter")


def plays(page: Any, video: Any, past: float = 0.3) -> float:
    """Press play (muted, as autoplay rules allow without a gesture) and wait until the
    ``<video>`` has advanced past ``past`` seconds or ended; return where it got to."""
    handle = video.element_handle()
    assert page.evaluate("v => v.canPlayType('video/mp4; codecs=\"avc1.42E01E\"')", handle)
    page.evaluate("v => { v.muted = true; return v.play(); }", handle)
    page.wait_for_function(
        "([v, t]) => v.ended || (v.currentTime > t && v.readyState >= 2)",
        arg=[handle, past],
        timeout=20_000,
    )
    return float(page.evaluate("v => v.currentTime", handle))


def advances(page: Any, video: Any, past: float = 0.3) -> None:
    """Wait, without pressing play, until the ``<video>`` plays past ``past`` s (or ends)."""
    page.wait_for_function(
        "([v, t]) => v.ended || v.currentTime > t", arg=[video.element_handle(), past]
    )


def test_a_video_take_plays_in_the_takes_panel(page: Any, server: Any) -> None:
    server.http.post("/api/v1/projects", json={"project_id": "reel"})
    shot = f"{SCENE}/sh010"
    take = make_take(server, "reel", shot, _fade("#ff0000", "#0000ff"))
    assert take["outputs"]["video"]["content_type"] == "video/mp4"

    open_project(page, "reel", shot)
    card = page.get_by_test_id(f"take-{take['take_id']}")
    player = card.get_by_test_id("take-video-player")
    player.wait_for()
    assert card.get_by_test_id("take-video-facts").inner_text() == (
        "12 fps · 1.00 s · 12 frames · 64\u00d748"
    )
    poster = str(player.get_attribute("poster"))
    assert poster.endswith(take["outputs"]["video_poster"]["path"].split("/")[-1])
    assert player.get_attribute("preload") == "metadata"
    page.wait_for_function(
        "v => v.readyState >= 1 && Math.abs(v.duration - 1) < 0.05", arg=player.element_handle()
    )
    assert plays(page, player) > 0.3
    shoot(page, "video-take")

    # the viewer plays it full size too, with its facts
    card.get_by_test_id("take-open").click()
    viewer = page.get_by_test_id("take-viewer")
    assert "12 frames" in viewer.get_by_test_id("viewer-video-facts").inner_text()
    assert plays(page, viewer.get_by_test_id("viewer-video"), past=0.2) > 0.2
    page.keyboard.press("Escape")
    viewer.wait_for(state="detached")


def test_the_scene_view_plays_the_cut_and_one_click_changes_the_active_take(
    page: Any, server: Any
) -> None:
    server.http.post("/api/v1/projects", json={"project_id": "cut"})
    assert server.get("/api/v1/projects/cut/assemblies", scene=SCENE) == []  # no cut yet
    first = make_take(server, "cut", f"{SCENE}/sh010", _fade("#ff0000", "#0000ff"))
    second = make_take(server, "cut", f"{SCENE}/sh010", _fade("#00ff00", "#ffff00"))
    make_take(server, "cut", f"{SCENE}/sh020", _still("#ffffff"))
    listed = server.get("/api/v1/projects/cut/takes", shot_id=f"{SCENE}/sh010")
    assert {t["take_id"] for t in listed if t["active"]} == {first["take_id"]}  # the first take

    # a scene without takes: no cut, and Assemble shows the server's refusal
    open_project(page, "cut", "ch01/sc09/sh010")
    page.get_by_test_id("open-scene").click()
    view = page.get_by_test_id("scene-view")
    view.get_by_test_id("scene-no-cut").wait_for()
    view.get_by_test_id("scene-assemble").click()
    refusal = view.get_by_test_id("scene-refusal")
    assert "has no scene 'ch01/sc09' with takes" in refusal.inner_text()
    assert refusal.get_attribute("data-code") == "unknown_scene"
    # another scene from the view's menu (the scenes with takes)
    view.get_by_test_id("scene-select").select_option(SCENE)
    page.wait_for_function("el => el.dataset.scene === 'ch01/sc01'", arg=view.element_handle())
    view.get_by_test_id("scene-no-cut").wait_for()  # nothing assembled yet: said so
    assert view.get_by_test_id("scene-refusal").count() == 0  # the last scene's refusal is gone

    view.get_by_test_id("scene-assemble").click()
    job = view.get_by_test_id("scene-job")
    job.wait_for()
    page.wait_for_function(
        "el => el.dataset.status === 'completed'", arg=job.element_handle(), timeout=120_000
    )
    player = view.get_by_test_id("scene-player")
    player.wait_for()
    cuts = server.get("/api/v1/projects/cut/assemblies", scene=SCENE)
    assert len(cuts) == 1 and view.get_attribute("data-cut") == cuts[0]["take_id"]
    manifest = cuts[0]["manifest"]
    assert [s["shot"] for s in manifest["shots"]] == [f"{SCENE}/sh010", f"{SCENE}/sh020"]
    assert manifest["shots"][0]["take_id"] == first["take_id"]

    # the new cut plays by itself (Assemble starts it); the timeline marks where each shot starts
    advances(page, player)
    segments = view.get_by_test_id("scene-segment")
    assert segments.count() == 2
    starts = [float(segments.nth(i).get_attribute("data-start")) for i in range(2)]
    assert starts == [s["start"] for s in manifest["shots"]]
    # a click on the second shot's boundary seeks there
    page.evaluate("v => v.pause()", player.element_handle())
    segments.nth(1).click()
    page.wait_for_function(
        "([v, t]) => Math.abs(v.currentTime - t) < 0.1", arg=[player.element_handle(), starts[1]]
    )
    shoot(page, "scene-view")

    # one click makes the second take of sh010 active (the API agrees); the shot is marked stale
    shot = view.locator(f"[data-testid=scene-shot][data-shot='{SCENE}/sh010']")
    chip = shot.locator(f"[data-testid=scene-take][data-take={second['take_id']}]")
    assert chip.get_attribute("data-active") == "false"
    chip.click()
    page.wait_for_function("el => el.dataset.active === 'true'", arg=chip.element_handle())
    assert shot.get_attribute("data-stale") == "true"
    listed = server.get("/api/v1/projects/cut/takes", shot_id=f"{SCENE}/sh010")
    assert {t["take_id"] for t in listed if t["active"]} == {second["take_id"]}

    # Assemble again: the next cut, with the newly active take in place, plays
    view.get_by_test_id("scene-assemble").click()
    page.wait_for_function(
        "([el, old]) => el.dataset.cut && el.dataset.cut !== old",
        arg=[view.element_handle(), cuts[0]["take_id"]],
        timeout=120_000,
    )
    cuts = server.get("/api/v1/projects/cut/assemblies", scene=SCENE)
    assert len(cuts) == 2 and view.get_attribute("data-cut") == cuts[1]["take_id"]
    assert cuts[1]["manifest"]["shots"][0]["take_id"] == second["take_id"]
    assert shot.get_attribute("data-stale") == "false"
    advances(page, view.get_by_test_id("scene-player"), past=0.2)


def _assembled(server: Any, project: str) -> dict[str, Any]:
    """POST an assembly of ``SCENE`` and wait for its task; returns the accepted body."""
    response = server.http.post(f"/api/v1/projects/{project}/assemblies", json={"scene": SCENE})
    assert response.status_code == 202, response.text
    deadline = time.monotonic() + 120
    while (task := server.get(f"/api/v1/functions/tasks/{response.json()['task_id']}"))[
        "status"
    ] not in ("completed", "failed", "cancelled"):
        assert time.monotonic() < deadline, task
        time.sleep(0.1)
    assert task["status"] == "completed", task
    return dict(response.json())


def test_an_older_cut_is_picked_and_played_and_a_cut_made_active(page: Any, server: Any) -> None:
    """Two cuts (sh010's take changed between them): the view opens on the latest, lists both
    (latest and active marked, each with its shots), plays the older one when picked (its
    manifest's shots on the timeline), and ★ makes the latest the scene's active cut."""
    server.http.post("/api/v1/projects", json={"project_id": "reels"})
    make_take(server, "reels", f"{SCENE}/sh010", _fade("#ff0000", "#0000ff"))
    make_take(server, "reels", f"{SCENE}/sh020", _still("#ffffff"))
    _assembled(server, "reels")
    second = make_take(server, "reels", f"{SCENE}/sh010", _fade("#00ff00", "#ffff00", frames=24))
    server.http.put(
        "/api/v1/projects/reels/takes/active",
        json={"shot_id": f"{SCENE}/sh010", "take_id": second["take_id"]},
    )
    _assembled(server, "reels")
    old, new = server.get("/api/v1/projects/reels/assemblies", scene=SCENE)
    assert (old["take_id"], old["active"], new["take_id"], new["active"]) == (
        "take_001", True, "take_002", False)  # fmt: skip
    assert old["manifest"]["duration"] != new["manifest"]["duration"]

    open_project(page, "reels", f"{SCENE}/sh010")
    page.get_by_test_id("open-scene").click()
    view = page.get_by_test_id("scene-view")
    page.wait_for_function("el => el.dataset.cut === 'take_002'", arg=view.element_handle())
    entries = view.get_by_test_id("scene-cut")
    assert entries.count() == 2
    latest, older = entries.nth(0), entries.nth(1)  # newest first
    assert (latest.get_attribute("data-take"), older.get_attribute("data-take")) == (
        "take_002", "take_001")  # fmt: skip
    assert (
        latest.get_attribute("data-latest") == "true"
        and older.get_attribute("data-active") == "true"
    )
    assert latest.get_attribute("data-current") == "true"
    assert "sh010 #002" in latest.get_by_test_id("scene-cut-shots").inner_text()
    assert "sh010 #001" in older.get_by_test_id("scene-cut-shots").inner_text()
    made = older.get_by_test_id("scene-cut-date").get_attribute("datetime")  # epoch s, not ms
    assert abs(datetime.fromisoformat(made).timestamp() - old["created_at"]) < 1

    # pick the older cut: it loads and plays; the timeline is its manifest's
    older.get_by_role("button").first.click()
    page.wait_for_function("el => el.dataset.cut === 'take_001'", arg=view.element_handle())
    player = view.get_by_test_id("scene-player")
    assert player.get_attribute("src").endswith(old["video"])
    advances(page, player, past=0.2)
    segments = view.get_by_test_id("scene-segment")
    assert [
        (
            segments.nth(i).get_attribute("data-shot"),
            float(segments.nth(i).get_attribute("data-start")),
        )
        for i in range(segments.count())
    ] == [(s["shot"], s["start"]) for s in old["manifest"]["shots"]]
    assert "take_001" in segments.nth(0).inner_text()
    assert view.get_by_test_id("scene-cut-activate").count() == 0  # the active cut already

    # back to the latest, made the scene's active cut with one click (the API agrees)
    latest.get_by_role("button").first.click()
    page.wait_for_function("el => el.dataset.cut === 'take_002'", arg=view.element_handle())
    assert view.get_by_test_id("scene-player").get_attribute("src").endswith(new["video"])
    view.get_by_test_id("scene-cut-activate").click()
    page.wait_for_function("el => el.dataset.active === 'true'", arg=latest.element_handle())
    assert older.get_attribute("data-active") == "false"
    cuts = server.get("/api/v1/projects/reels/assemblies", scene=SCENE)
    assert [c["active"] for c in cuts] == [False, True]


def test_a_video_result_plays_on_its_node_and_video_inputs_take_links_only(
    page: Any, server: Any
) -> None:
    server.http.post("/api/v1/projects", json={"project_id": "nodes"})
    response = server.http.put("/api/v1/projects/nodes/canvases/fade", json=_fade("#000", "#fff"))
    assert response.status_code == 200, response.text
    open_project(page, "nodes", f"{SCENE}/sh030")
    load(page, "fade")
    page.get_by_test_id("run-graph").click()
    clip = page.get_by_test_id("node-clip")
    assert plays(page, clip.get_by_test_id("node-video"), past=0.2) > 0.2
    # the take arrived live (take.created) in the takes panel, as a video with its facts
    facts = page.get_by_test_id("takes-panel").get_by_test_id("take-video-facts")
    assert "12 frames" in facts.inner_text()

    trim = drop_template(page, "trim", 700, 60)
    assert trim.get_by_test_id("hint-video").inner_text() == "connect a video"
    assert trim.get_by_test_id("input-video").count() == 0  # no text field for a video
