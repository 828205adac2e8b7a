"""Input hardening: size limits and path traversal everywhere, each a 4xx with a stable code."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.server.harness import ServerProcess, running_server

pytestmark = pytest.mark.e2e
SHOT = "ch01/sc01/sh010"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    home = tmp_path_factory.mktemp("input") / "home"
    with running_server(home, "--max-body-bytes", "65536", "--max-graph-nodes", "20") as srv:
        srv.ok("POST", "/api/v1/projects", json={"project_id": "film"})
        yield srv


def refused(
    server: ServerProcess, status: int, code: str, method: str, path: str, **kw: Any
) -> None:
    response = server.http.request(method, path, **kw)
    assert response.status_code == status, (
        f"{method} {path}: {response.status_code} {response.text}"
    )
    assert response.json()["code"] == code, response.text


def _graph(nodes: int) -> dict[str, Any]:
    return {
        "nodes": [
            {
                "id": f"n{i}",
                "template": "number",
                "inputs": {"value": {"kind": "literal", "value": i}},
            }
            for i in range(nodes)
        ]
    }


def test_bodies_and_graphs_have_size_limits(server: ServerProcess) -> None:
    big = {"template_id": "number", "inputs": {"value": 1, "pad": "x" * 70_000}}
    refused(server, 413, "request_too_large", "POST", "/api/v1/functions/tasks", json=big)
    refused(server, 413, "request_too_large", "PUT", "/api/v1/projects/film/canvases/big",
            content=json.dumps({"nodes": [], "pad": "y" * 70_000}),
            headers={"content-type": "application/json"})  # fmt: skip
    refused(server, 413, "graph_too_large", "POST", "/api/v1/runs",
            json={"graph": _graph(21), "project_id": "film"})  # fmt: skip
    assert server.ok("POST", "/api/v1/runs", json={"graph": _graph(20)})["status"] == "submitted"


def test_path_traversal_is_refused_everywhere(server: ServerProcess) -> None:
    before = sorted(p.name for p in (server.home / "projects").iterdir())
    for path in (
        "/api/v1/projects/film/files/..%2F..%2Fstate.db",
        "/api/v1/projects/film/files/%2e%2e/%2e%2e/state.db",
        "/api/v1/projects/film/files/.git/config",
        "/api/v1/projects/film/files/03_Renders/..%2F..%2F..%2Fstate.db",
    ):
        response = server.http.get(path)
        assert response.status_code in (400, 404), path
        assert response.json()["code"] in ("unsafe_path", "not_found", "file_not_found"), path
        assert b"SQLite" not in response.content
    refused(server, 400, "unsafe_path", "GET", "/api/v1/projects/..film/takes")
    refused(server, 404, "not_found", "GET", "/api/v1/projects/..%2Ffilm/takes")
    refused(server, 400, "unsafe_path", "POST", "/api/v1/functions/tasks",
            json={"template_id": "number", "inputs": {}, "project_id": "film",
                  "shot_id": "../../etc"})  # fmt: skip
    refused(server, 400, "unsafe_path", "POST", "/api/v1/functions/tasks",
            json={"template_id": "load_asset", "inputs": {"asset": "asset://../../state.db"},
                  "project_id": "film"})  # fmt: skip
    refused(server, 400, "unsafe_path", "POST", "/api/v1/functions/tasks",
            json={"template_id": "number", "project_id": "film",
                  "inputs": {"value": 1, "nested": [{"ref": "asset://..%2F..%2Fx"}]}})  # fmt: skip
    refused(server, 400, "unsafe_path", "GET", "/api/v1/projects/film/canvases/x..y")
    refused(server, 400, "unsafe_path", "POST", "/api/v1/projects",
            json={"project_id": "../evil"})  # fmt: skip
    uploaded = server.ok(
        "POST", "/api/v1/projects/film/assets", files={"file": ("../../../evil.png", b"png")}
    )
    assert uploaded["path"].startswith("01_Assets/uploads/") and ".." not in uploaded["path"]
    assert (server.home / "projects" / "film" / uploaded["path"]).read_bytes() == b"png"
    assert sorted(p.name for p in (server.home / "projects").iterdir()) == before
    assert not (server.home / "evil.png").exists()
