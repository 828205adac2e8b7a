# ruff: noqa: F811 - the fixtures imported from test_editor are the parameters
"""The mask painter in a real Chromium against ``takeflow serve --demo``: paint a mask on the demo
inpaint canvas, save it (an uploaded asset linked through a load_mask node), run, and the take
appears; outside the painted mask the take's pixels are the source image's."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from graph_runtime.projects import asset_relpath
from graph_runtime.templates import NullReporter
from tests.e2e.test_editor import browser, run_status, wait_image, web_dist  # noqa: F401
from tests.e2e.test_editor_bugs import load

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]
DEMO = Path(__file__).resolve().parents[2] / "server" / "demo" / "canvases"


@pytest.fixture(scope="module")
def demo_server(web_dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """``takeflow serve --demo`` on a home whose demo models are built already (copied)."""
    from nodes.diffusion.demo import build_random_pipeline
    from nodes.diffusion.inpaint_demo import build_random_inpaint_pipeline
    from tests.server.harness import running_server

    home = tmp_path_factory.mktemp("mask-painter") / "home"
    demo = build_random_pipeline(home / "models" / "demo", "tiny", seed=0)
    build_random_inpaint_pipeline(home / "models" / "demo-inpaint", base=demo)
    config = {"diffusion": {"preview_every": 4, "max_batch_size": 1}}
    (home / "config.json").write_text(json.dumps(config))
    with running_server(home, "--demo", cli=True) as srv:
        yield srv


def test_paint_a_mask_run_the_demo_inpaint_canvas_and_the_take_appears(
    browser: Any, demo_server: Any
) -> None:
    context = browser.new_context(
        viewport={"width": 1440, "height": 900}, base_url=demo_server.base
    )
    context.set_default_timeout(60_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        page.goto("/")
        page.wait_for_selector("[data-testid=editor][data-ready=true]")
        page.get_by_test_id("project-select").select_option("demo")
        load(page, "inpaint")
        node = page.get_by_test_id("node-inpaint")
        from playwright.sync_api import expect

        # the link label fills in once the loaded canvas's edges are drawn
        expect(node.get_by_test_id("linked-mask")).to_contain_text("mask.mask", timeout=20_000)

        node.get_by_test_id("paint-mask").click()
        painter = page.get_by_test_id("mask-painter")
        assert (
            painter.get_by_test_id("mask-dims").inner_text() == "256\u00d7256"
        )  # the photo's size
        painter.get_by_test_id("mask-size").fill("40")
        box = painter.get_by_test_id("mask-canvas").bounding_box()
        scale = box["width"] / 256

        def drag(y: float, x0: float, x1: float) -> None:  # canvas pixels
            page.mouse.move(box["x"] + x0 * scale, box["y"] + y * scale)
            page.mouse.down()
            for x in np.linspace(x0, x1, 8):
                page.mouse.move(box["x"] + x * scale, box["y"] + y * scale)
            page.mouse.up()

        drag(60, 40, 200)
        drag(200, 40, 200)
        painter.get_by_test_id("mask-eraser").check()  # rub out the left end of the lower stroke
        drag(200, 20, 100)
        painter.get_by_test_id("mask-brush").check()
        assert painter.get_by_test_id("mask-canvas").get_attribute("data-painted") == "true"
        painter.get_by_test_id("mask-save").click()
        painter.wait_for(state="detached")

        page.get_by_test_id("node-painted_mask_1").wait_for()
        assert "painted_mask_1.mask" in node.get_by_test_id("linked-mask").inner_text()
        node.get_by_test_id("input-steps").fill("2")
        page.get_by_test_id("run-graph").click()
        page.wait_for_selector(  # the first run imports torch and loads the model: slow on CI
            "[data-testid=run-status]:is([data-status=completed],[data-status=failed])",
            timeout=180_000,
        )
        failures = page.locator("[data-testid=node-failure], [data-testid=node-error]")
        assert run_status(page)["status"] == "completed", failures.all_inner_texts()
        wait_image(node)
        page.locator("[data-testid^=take-take_]").first.wait_for()  # the take, in the panel

        task_id = run_status(page)["task"]
        takes = demo_server.ok("GET", "/api/v1/projects/demo/takes", params={"task_id": task_id})
        assert len(takes) == 1
        meta = takes[0]["metadata"]
        assert meta["model"] == "demo-inpaint" and meta["inpaint"]["unet_in_channels"] == 9
        uri = meta["inputs"]["painted_mask_1"]["asset"]
        project = demo_server.home / "projects" / "demo"
        mask = np.asarray(Image.open(project / asset_relpath(uri)).convert("L"))
        assert mask.shape == (256, 256)
        assert mask[60, 120] == 255 and mask[200, 160] == 255  # painted
        assert mask[200, 50] == 0 and mask[130, 120] == 0  # erased, never painted
        out = np.asarray(Image.open(project / takes[0]["outputs"]["image"]["path"]).convert("RGB"))
        from nodes.builtin import gradient_image

        raw = json.loads((DEMO / "inpaint.takeflow.json").read_text())
        literals = {k: v["value"] for k, v in raw["nodes"][0]["inputs"].items()}
        photo = gradient_image(NullReporter(), {"direction": "vertical", **literals})["image"]
        keep = mask == 0
        assert np.array_equal(out[keep], np.asarray(photo.convert("RGB"))[keep])
        assert not np.array_equal(out[~keep], np.asarray(photo.convert("RGB"))[~keep])
    finally:
        context.close()
    assert not errors, f"the editor raised in the browser: {errors}"
