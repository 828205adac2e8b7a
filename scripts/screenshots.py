"""The README's editor screenshots, taken from a real ``takeflow serve --demo`` in Chromium.

    PYTHONPATH=. .venv/bin/python scripts/screenshots.py [--only first-screen queue ...] [--out DIR]

Starts ``serve --demo`` on a free loopback port with a temporary home, opens the editor with
Playwright (``/usr/bin/chromium``, 1440x900) and writes ``docs/screenshots/first-screen.png``,
``queue.png``, ``viewer.png``, ``compare.png``, ``video-take.png`` and ``scene-view.png``. A
shot whose UI this build lacks (no element matching its selector below) is skipped with a
message, so the script can run again once that part of the editor is merged. Needs
``web/dist`` built (``cd web && npm run build``).
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.server.harness import ServerProcess  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync"]
SHOTS = ("first-screen", "queue", "viewer", "compare", "video-take", "scene-view")

# What each shot needs on the page; a missing one skips the shot (see the module docstring).
FIRST_SCREEN = "[data-testid=first-screen]"
QUEUE_PANEL = "[data-testid=queue-panel]"
VIEWER_OPEN = "[data-testid=take-open]"  # a take's thumbnail: opens it in the viewer
VIEWER = "[data-testid=take-viewer]"
COMPARE_OPEN = "[data-testid=compare-select]"  # the viewer's "compare with" take choice
COMPARE = "[data-testid=compare-b]"
VIDEO_TAKE = "[data-testid=take-video-player]"  # a video take playing inline in the takes panel
SCENE_OPEN = "[data-testid=open-scene]"  # the takes panel's scene view button
SCENE_PLAYER = "[data-testid=scene-player]"


class Skip(Exception):
    """A shot whose UI is missing from this build."""


def need(page: Any, selector: str, what: str, timeout_ms: int = 3_000) -> Any:
    """The element, or ``Skip`` saying which UI is missing."""
    try:
        page.wait_for_selector(selector, timeout=timeout_ms)
    except Exception as exc:  # Playwright's TimeoutError
        raise Skip(f"no {what} in this build ({selector})") from exc
    return page.locator(selector).first


def save(page: Any, path: Path) -> None:
    """A page screenshot without transient notices, quantized to keep the PNG small."""
    page.evaluate("document.querySelectorAll('[data-testid=notice]').forEach(n => n.remove())")
    shot = Image.open(io.BytesIO(page.screenshot()))
    shot.convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(
        path, optimize=True
    )


def open_demo(page: Any) -> None:
    page.goto("/")
    page.wait_for_selector("[data-testid=editor][data-ready=true]")
    page.wait_for_function("() => document.querySelector('[data-testid=project-select]')?.value")


def load_canvas(page: Any, name: str) -> None:
    listing = page.get_by_test_id("canvas-list")
    listing.focus()
    listing.locator(f"option[value={name}]").wait_for(state="attached")
    listing.select_option(name)
    page.get_by_test_id("notice").filter(has_text=f"Loaded {name}").wait_for()
    page.wait_for_timeout(400)  # spread and fitted


def run_to_end(page: Any) -> None:
    page.get_by_test_id("run-graph").click()
    page.wait_for_selector(
        "[data-testid=run-status][data-status=completed]", timeout=300_000, state="attached"
    )


def first_screen(page: Any) -> None:
    open_demo(page)
    need(page, FIRST_SCREEN, "first screen")
    page.wait_for_selector("[data-testid^=first-open-]")


def queue(page: Any) -> None:
    open_demo(page)
    need(page, QUEUE_PANEL, "queue panel")
    load_canvas(page, "dream")
    for _ in range(3):  # one running, two waiting
        page.get_by_test_id("run-graph").click()
        page.wait_for_timeout(300)
    page.wait_for_timeout(1_500)


def viewer(page: Any) -> None:
    open_demo(page)
    load_canvas(page, "poster")
    run_to_end(page)
    need(page, VIEWER_OPEN, "take viewer button", timeout_ms=10_000).click()
    need(page, VIEWER, "take viewer")
    page.wait_for_timeout(500)


def compare(page: Any) -> None:
    open_demo(page)
    load_canvas(page, "poster")
    run_to_end(page)
    page.locator("[data-testid=run-status] button").first.click()  # clear, then a second take
    run_to_end(page)
    need(page, VIEWER_OPEN, "take viewer button", timeout_ms=10_000).click()
    need(page, COMPARE_OPEN, "A/B compare choice").select_option(index=1)  # the other take
    need(page, COMPARE, "A/B compare view")
    page.wait_for_timeout(500)


def _fade(a: str, b: str) -> dict[str, Any]:
    """A canvas graph: two solid colours cross-faded into a 2 s video."""
    size = {"width": {"kind": "literal", "value": 320}, "height": {"kind": "literal", "value": 192}}
    lit = lambda v: {"kind": "literal", "value": v}  # noqa: E731
    return {
        "name": "fade",
        "nodes": [
            {"id": "a", "template": "solid_image", "inputs": {**size, "color": lit(a)}},
            {"id": "b", "template": "solid_image", "inputs": {**size, "color": lit(b)}},
            {"id": "clip", "template": "frames_to_video", "inputs": {
                "images": {"kind": "link", "node": "a", "output": "image"},
                "end_image": {"kind": "link", "node": "b", "output": "image"},
                "frame_count": lit(48), "fps": lit(24.0)}},
        ],
    }  # fmt: skip


def video_takes(page: Any) -> None:
    """Two shots of ch01/sc01 with a video take each (through the API), the editor on sh010."""
    for shot, colours in (("sh010", ("#1f6feb", "#f29e4c")), ("sh020", ("#7fd962", "#d2a6ff"))):
        body = {"graph": _fade(*colours), "project_id": "demo", "shot_id": f"ch01/sc01/{shot}"}
        task = page.request.post("/api/v1/runs", data=body).json()["task_id"]
        deadline = time.monotonic() + 120
        while page.request.get(f"/api/v1/functions/tasks/{task}").json()["status"] != "completed":
            if time.monotonic() > deadline:
                raise Skip(f"the video task {task} did not complete")
            time.sleep(0.3)
    open_demo(page)
    page.get_by_test_id("shot-input").fill("ch01/sc01/sh010")
    page.get_by_test_id("shot-input").press("Enter")


def play_to(player: Any, t: float) -> None:
    """Play (muted) until ``t`` seconds, then pause: a frame shown, the controls idle."""
    player.evaluate(
        """async (v, t) => { v.muted = true; await v.play();
           while (v.currentTime < t && !v.ended) await new Promise((r) => setTimeout(r, 50));
           v.pause(); }""",
        t,
    )
    player.page.wait_for_timeout(500)


def video_take(page: Any) -> None:
    video_takes(page)
    player = need(page, VIDEO_TAKE, "inline video player", timeout_ms=10_000)
    page.wait_for_function("v => v.readyState >= 1", arg=player.element_handle())
    play_to(player, 1.2)


def scene_view(page: Any) -> None:
    video_takes(page)
    need(page, SCENE_OPEN, "scene view button", timeout_ms=10_000).click()
    page.get_by_test_id("scene-assemble").click()
    player = need(page, SCENE_PLAYER, "scene player", timeout_ms=120_000)
    page.wait_for_function("v => v.readyState >= 1", arg=player.element_handle())
    play_to(player, 2.6)  # inside the second shot


STEPS: dict[str, Callable[[Any], None]] = {
    "first-screen": first_screen,
    "queue": queue,
    "viewer": viewer,
    "compare": compare,
    "video-take": video_take,
    "scene-view": scene_view,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", choices=SHOTS, default=list(SHOTS))
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    args = parser.parse_args()
    if not (ROOT / "web" / "dist" / "index.html").exists():
        sys.exit("web/dist is not built: cd web && npm run build")
    from playwright.sync_api import sync_playwright

    args.out.mkdir(parents=True, exist_ok=True)
    written = 0
    with tempfile.TemporaryDirectory(prefix="screenshots-", ignore_cleanup_errors=True) as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        server = ServerProcess(home, "--demo", cli=True).wait_ready(timeout=180)
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                for name in args.only:
                    context = browser.new_context(
                        viewport={"width": 1440, "height": 900},
                        base_url=server.base,
                    )
                    context.set_default_timeout(30_000)
                    page = context.new_page()
                    try:
                        STEPS[name](page)
                        save(page, args.out / f"{name}.png")
                        written += 1
                        print(f"wrote {args.out / f'{name}.png'}")
                    except Skip as why:
                        print(f"skipped {name}.png: {why}; run again once it is merged")
                    finally:
                        context.close()
                browser.close()
        finally:
            server.stop()
    return 0 if written else 1


if __name__ == "__main__":
    sys.exit(main())
