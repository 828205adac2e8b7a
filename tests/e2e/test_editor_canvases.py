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


def _save(client: Any, name: str, seed: int = 1) -> None:
    node = {"id": "noise_image_1", "template": "noise_image",
            "inputs": {"seed": {"kind": "literal", "value": seed}}}  # fmt: skip
    graph = {"format": "takeflow.graph/v1", "name": name, "nodes": [node]}
    assert client.put(f"/api/v1/projects/film/canvases/{name}", json=graph).status_code == 200


def _tracked(project: Any) -> list[str]:
    out = project.repo._git("ls-files", "02_Source_Creative/canvases")
    return sorted(line.rsplit("/", 1)[-1] for line in out.splitlines())


def test_rename_moves_the_canvas_in_one_commit(client: Any, runtime: Any) -> None:
    _save(client, "draft", seed=7)
    response = client.post("/api/v1/projects/film/canvases/draft/rename", json={"to": "final"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["name"] == "final" and body["from"] == "draft"
    assert body["path"] == "02_Source_Creative/canvases/final.takeflow.json"
    project = runtime.projects.get("film")
    assert not (project.path / "02_Source_Creative/canvases/draft.takeflow.json").exists()
    assert _tracked(project) == ["final.takeflow.json"]
    newest = project.repo.recent_commits(1)[0]
    assert newest.sha == body["commit"]
    assert newest.message == "Rename canvas draft to final"
    assert set(newest.files) >= {
        "02_Source_Creative/canvases/draft.takeflow.json",
        "02_Source_Creative/canvases/final.takeflow.json",
    }
    moved = client.get("/api/v1/projects/film/canvases/final").json()
    assert moved["name"] == "final"
    assert moved["nodes"][0]["inputs"]["seed"]["value"] == 7
    assert [c["name"] for c in client.get("/api/v1/projects/film/canvases").json()] == ["final"]
    gone = client.get("/api/v1/projects/film/canvases/draft")
    assert gone.status_code == 404 and gone.json()["code"] == "canvas_not_found"


def test_rename_refuses_a_taken_name_unless_told_to_overwrite(client: Any, runtime: Any) -> None:
    _save(client, "a", seed=1)
    _save(client, "b", seed=2)
    project = runtime.projects.get("film")
    before = project.repo.recent_commits(1)[0].sha
    url = "/api/v1/projects/film/canvases/a/rename"
    taken = client.post(url, json={"to": "b"})
    assert taken.status_code == 409
    assert taken.json()["code"] == "canvas_exists" and "'b'" in taken.json()["message"]
    assert project.repo.recent_commits(1)[0].sha == before
    assert _tracked(project) == ["a.takeflow.json", "b.takeflow.json"]
    same = client.post(url, json={"to": "a"})
    assert same.status_code == 409 and same.json()["code"] == "canvas_exists"

    replaced = client.post(url, json={"to": "b", "overwrite": True})
    assert replaced.status_code == 200, replaced.text
    assert _tracked(project) == ["b.takeflow.json"]
    stored = client.get("/api/v1/projects/film/canvases/b").json()
    assert stored["nodes"][0]["inputs"]["seed"]["value"] == 1


def test_rename_and_delete_refuse_bad_input_with_stable_codes(client: Any, runtime: Any) -> None:
    _save(client, "a")
    project = runtime.projects.get("film")
    before = project.repo.recent_commits(1)[0].sha
    missing = client.post("/api/v1/projects/film/canvases/nope/rename", json={"to": "x"})
    assert missing.status_code == 404 and missing.json()["code"] == "canvas_not_found"
    bad = client.post("/api/v1/projects/film/canvases/a/rename", json={"to": "../x"})
    assert bad.status_code == 400 and bad.json()["code"] == "unsafe_path"
    assert "to" in json.dumps(bad.json())
    no_to = client.post("/api/v1/projects/film/canvases/a/rename", json={"name": "x"})
    assert no_to.status_code in (400, 422) and "to" in no_to.text
    gone = client.delete("/api/v1/projects/film/canvases/nope")
    assert gone.status_code == 404 and gone.json()["code"] == "canvas_not_found"
    assert project.repo.recent_commits(1)[0].sha == before
    assert _tracked(project) == ["a.takeflow.json"]


def test_delete_removes_the_canvas_and_commits(client: Any, runtime: Any) -> None:
    _save(client, "old")
    response = client.delete("/api/v1/projects/film/canvases/old")
    assert response.status_code == 200, response.text
    project = runtime.projects.get("film")
    assert _tracked(project) == []
    newest = project.repo.recent_commits(1)[0]
    assert newest.sha == response.json()["commit"]
    assert newest.message == "Delete canvas old"
    assert client.get("/api/v1/projects/film/canvases").json() == []


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
