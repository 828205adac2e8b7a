"""Saving and loading canvases: ``server/canvases.py`` over HTTP, then through the editor."""

from __future__ import annotations

import json
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

pytestmark = pytest.mark.e2e
FIXTURES = Path(__file__).resolve().parents[1] / "ui_bridge" / "fixtures"


@pytest.fixture
def client(runtime: Any) -> Iterator[Any]:
    """The real app for a real runtime, with the canvases controller registered."""
    from litestar.testing import TestClient

    from server.app import create_app
    from server.canvases import CanvasesController

    app = create_app(runtime)
    if not any(r.path.endswith("/canvases") for r in app.routes):
        app.register(CanvasesController)
    runtime.projects.create("film", "Film")
    with TestClient(app) as tc:
        yield tc


def test_save_stores_graph_json_in_source_creative_and_commits(client: Any, runtime: Any) -> None:
    editor_doc = json.loads((FIXTURES / "three_node.editor.json").read_text())
    response = client.put("/api/v1/projects/film/canvases/title_card", json=editor_doc)
    assert response.status_code == 200, response.text
    saved = response.json()
    assert saved["path"] == "02_Source_Creative/canvases/title_card.takeflow.json"
    project = runtime.projects.get("film")
    on_disk = json.loads((project.path / saved["path"]).read_text())
    assert on_disk["format"] == "takeflow.graph/v1"
    expected = json.loads((FIXTURES / "three_node.graph.json").read_text())
    assert [n["id"] for n in on_disk["nodes"]] == [n["id"] for n in expected["nodes"]]
    newest = project.repo.recent_commits(1)[0]
    assert newest.sha == saved["commit"]
    assert newest.message == "Save canvas title_card"
    assert saved["path"] in newest.files

    assert client.get("/api/v1/projects/film/canvases/title_card").json() == on_disk
    listed = client.get("/api/v1/projects/film/canvases").json()
    assert [c["name"] for c in listed] == ["title_card"]


def test_bad_names_and_documents_are_refused_and_nothing_is_written(
    client: Any, runtime: Any
) -> None:
    project = runtime.projects.get("film")
    before = project.repo.recent_commits(1)[0].sha
    bad_name = client.put("/api/v1/projects/film/canvases/..secret", json={"nodes": []})
    assert bad_name.status_code == 400
    assert bad_name.json()["code"] == "unsafe_path"
    bad_doc = client.put(
        "/api/v1/projects/film/canvases/ok", json={"nodes": [{"id": "1bad", "template": "x"}]}
    )
    assert bad_doc.status_code == 422
    assert bad_doc.json()["code"] == "invalid_canvas"
    assert bad_doc.json()["errors"][0]["field"].startswith("nodes.0.id")
    missing = client.get("/api/v1/projects/film/canvases/nope")
    assert missing.status_code == 404
    assert missing.json()["code"] == "canvas_not_found"
    assert not (project.path / "02_Source_Creative" / "canvases" / "ok.takeflow.json").exists()
    assert project.repo.recent_commits(1)[0].sha == before


def test_save_and_load_a_canvas_in_the_editor(page: Any, server: Server) -> None:  # noqa: F811
    assert server.http.post("/api/v1/projects", json={"project_id": "probe"}).status_code == 201
    if server.http.get("/api/v1/projects/probe/canvases").status_code == 404:
        pytest.skip("takeflow serve does not mount server.canvases.CanvasesController yet")
    open_editor(page, "canvas")
    noise = drop_template(page, "noise_image", 60, 60)
    blend = drop_template(page, "blend", 480, 60)
    noise.get_by_test_id("input-seed").fill("1234")
    connect(page, noise, "image", blend, "base")
    edge_count(page, 1)
    page.get_by_test_id("canvas-name").fill("title card")
    page.get_by_test_id("save-canvas").click()
    notice = page.get_by_test_id("notice")
    notice.filter(has_text="Saved").wait_for()
    assert "02_Source_Creative/canvases/title_card.takeflow.json" in notice.inner_text()
    newest = server.get("/api/v1/projects/canvas/commits", limit=1)[0]
    assert newest["message"] == "Save canvas title_card"

    page.get_by_role("button", name="New", exact=True).click()
    expect_nodes(page, 0)
    page.get_by_test_id("canvas-list").focus()
    page.get_by_test_id("canvas-list").locator("option[value=title_card]").wait_for(
        state="attached"
    )
    page.get_by_test_id("canvas-list").select_option("title_card")
    page.get_by_test_id("load-canvas").click()
    expect_nodes(page, 2)
    edge_count(page, 1)
    seed = page.locator("[data-testid=node-noise_image_1] [data-testid=input-seed]")
    assert seed.input_value() == "1234"
