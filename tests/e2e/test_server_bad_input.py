"""Bad requests get a clear 4xx with a stable code, and leave everything stored as it was."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server.harness import EventClient, ServerProcess, running_server

pytestmark = pytest.mark.e2e
UPLOAD_LIMIT = 4096


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    home = tmp_path_factory.mktemp("server-bad") / "home"
    with running_server(home, "--max-upload-bytes", str(UPLOAD_LIMIT)) as srv:
        srv.ok("POST", "/api/v1/projects", json={"project_id": "film"})
        asset = srv.http.post(
            "/api/v1/projects/film/assets", files={"file": ("plate.png", b"\x89PNG not really")}
        )
        assert asset.status_code == 201
        srv.asset_uri = asset.json()["uri"]  # type: ignore[attr-defined]
        task_id = srv.submit("noise_image", {"width": 8, "height": 8}, project_id="film")
        deadline = 30.0
        while srv.ok("GET", f"/api/v1/functions/tasks/{task_id}")["status"] != "completed":
            deadline -= 0.05
            assert deadline > 0
            asyncio.run(asyncio.sleep(0.05))
        yield srv


def snapshot(server: ServerProcess) -> dict[str, Any]:
    """Everything a request could have changed: tasks, events, takes, commits, project files."""
    db = sqlite3.connect(f"file:{server.home / 'state.db'}?mode=ro", uri=True)
    try:
        tasks = db.execute("SELECT task_id, status FROM tasks ORDER BY task_id").fetchall()
        events = db.execute("SELECT COUNT(*), MAX(id) FROM events").fetchone()
    finally:
        db.close()
    root = server.home / "projects" / "film"
    files = sorted(
        str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and ".git" not in p.parts
    )
    return {
        "tasks": tasks,
        "events": events,
        "takes": server.ok("GET", "/api/v1/projects/film/takes"),
        "commits": [c["sha"] for c in server.ok("GET", "/api/v1/projects/film/commits")],
        "files": files,
        "projects": server.ok("GET", "/api/v1/projects"),
    }


def _task(**fields: Any) -> dict[str, Any]:
    return {"template_id": "noise_image", "inputs": {"width": 8}, "project_id": "film", **fields}


def _graph(*nodes: dict[str, Any]) -> dict[str, Any]:
    return {"graph": {"name": "bad", "nodes": list(nodes)}, "project_id": "film"}


CASES: list[tuple[str, str, str, dict[str, Any], int, str]] = [
    ("malformed JSON", "POST", "/api/v1/functions/tasks",
     {"content": b'{"template_id": "noise_image",',
      "headers": {"content-type": "application/json"}},
     400, "invalid_json"),
    ("unknown template", "POST", "/api/v1/functions/tasks",
     {"json": _task(template_id="noise_imag")}, 404, "unknown_template"),
    ("wrong type of a field", "POST", "/api/v1/functions/tasks",
     {"json": _task(priority="urgent")}, 422, "invalid_request"),
    ("unknown field", "POST", "/api/v1/functions/tasks",
     {"json": _task(colour="red")}, 422, "invalid_request"),
    ("wrong type of an input", "POST", "/api/v1/functions/tasks",
     {"json": _task(inputs={"width": "wide"})}, 422, "invalid_graph"),
    ("input out of range", "POST", "/api/v1/functions/tasks",
     {"json": _task(inputs={"width": 0})}, 422, "invalid_graph"),
    ("unknown project", "POST", "/api/v1/functions/tasks",
     {"json": _task(project_id="nope")}, 404, "project_not_found"),
    ("shot that leaves the project", "POST", "/api/v1/functions/tasks",
     {"json": _task(shot_id="../../etc")}, 400, "unsafe_path"),
    ("asset reference with ..", "POST", "/api/v1/functions/tasks",
     {"json": _task(template_id="load_asset", inputs={"asset": "asset://../../project.json"})},
     400, "unsafe_path"),
    ("nested asset reference with ..", "POST", "/api/v1/functions/tasks",
     {"json": _task(template_id="load_asset",
                    inputs={"asset": "asset://uploads/x.png",
                            "extra": {"layers": [{"src": "asset://uploads/../../.git/config"}]}})},
     400, "unsafe_path"),
    ("asset that does not exist", "POST", "/api/v1/functions/tasks",
     {"json": _task(template_id="load_asset", inputs={"asset": "asset://uploads/missing.png"})},
     404, "asset_not_found"),
    ("graph with many errors", "POST", "/api/v1/runs",
     {"json": _graph({"id": "a", "template": "resize",
                      "inputs": {"width": {"kind": "literal", "value": -3}}},
                     {"id": "b", "template": "ghost"})},
     422, "invalid_graph"),
    ("graph that is not a canvas document", "POST", "/api/v1/runs",
     {"json": _graph({"id": "a", "template": "resize", "inputs": {"width": {"kind": "wire"}}})},
     422, "invalid_graph"),
    ("batch with one bad task", "POST", "/api/v1/functions/batches",
     {"json": {"tasks": [_task(), _task(inputs={"width": -1})]}}, 422, "invalid_request"),
    ("unknown task", "GET", "/api/v1/functions/tasks/task_0000000000000000", {},
     404, "task_not_found"),
    ("cancel unknown task", "POST", "/api/v1/functions/tasks/task_nope/cancel", {},
     404, "task_not_found"),
    ("unknown batch", "GET", "/api/v1/functions/batches/batch_nope", {}, 404, "batch_not_found"),
    ("file path with ..", "GET",
     "/api/v1/projects/film/files/03_Renders/%2e%2e/%2e%2e/%2e%2e/state.db", {},
     400, "unsafe_path"),
    ("file inside .git", "GET", "/api/v1/projects/film/files/.git/config", {}, 400, "unsafe_path"),
    ("missing file", "GET", "/api/v1/projects/film/files/01_Assets/nothing.png", {},
     404, "file_not_found"),
    ("project id that is a path", "GET", "/api/v1/projects/Bad..Id/takes", {}, 400, "unsafe_path"),
    ("existing project", "POST", "/api/v1/projects", {"json": {"project_id": "film"}},
     409, "project_exists"),
    ("active take that does not exist", "PUT", "/api/v1/projects/film/takes/active",
     {"json": {"shot_id": "main/main/main", "take_id": "take_999"}}, 404, "take_not_found"),
    ("oversized upload", "POST", "/api/v1/projects/film/assets",
     {"files": {"file": ("big.png", b"x" * (UPLOAD_LIMIT + 1))}}, 413, "upload_too_large"),
    ("upload without a file field", "POST", "/api/v1/projects/film/assets",
     {"files": {"other": ("a.png", b"x")}}, 422, "invalid_request"),
    ("upload that is not multipart", "POST", "/api/v1/projects/film/assets",
     {"json": {"file": "x"}}, 422, "invalid_request"),
    ("unknown route", "GET", "/api/v1/nothing-here", {}, 404, "not_found"),
]  # fmt: skip


@pytest.mark.parametrize(("method", "path", "kwargs", "status", "code"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])  # fmt: skip
def test_bad_request_is_refused_and_changes_nothing(
    server: ServerProcess, method: str, path: str, kwargs: dict[str, Any], status: int, code: str
) -> None:
    before = snapshot(server)
    response = server.http.request(method, path, **kwargs)
    assert (response.status_code, response.json()["code"]) == (status, code), response.text
    assert response.json()["message"]
    assert snapshot(server) == before


def test_graph_errors_name_every_node_and_port(server: ServerProcess) -> None:
    body = _graph(
        {"id": "a", "template": "resize", "inputs": {"width": {"kind": "literal", "value": -3}}},
        {"id": "b", "template": "ghost"},
    )
    errors = server.http.post("/api/v1/runs", json=body).json()["errors"]
    found = {(e["code"], e.get("node_id"), e.get("port")) for e in errors}
    assert ("out_of_range", "a", "width") in found
    assert ("unknown_template", "b", None) in found
    assert any(e.get("node_id") == "a" and e.get("port") == "image" for e in errors)


def test_batch_errors_say_which_task(server: ServerProcess) -> None:
    body = {"tasks": [_task(), _task(inputs={"width": -1}), _task(template_id="nope")]}
    errors = server.http.post("/api/v1/functions/batches", json=body).json()["errors"]
    assert [(e["index"], e["code"]) for e in errors] == [
        (1, "invalid_graph"),
        (2, "unknown_template"),
    ]


def test_oversized_upload_by_stream_leaves_no_partial_file(server: ServerProcess) -> None:
    """Without a content-length the limit still holds while streaming."""
    before = snapshot(server)
    boundary = "takeflowboundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()

    def body() -> Iterator[bytes]:
        yield head
        for _ in range(8):
            yield b"y" * 1024
        yield f"\r\n--{boundary}--\r\n".encode()

    response = server.http.post(
        "/api/v1/projects/film/assets",
        content=body(),
        headers={"content-type": f"multipart/form-data; boundary={boundary}"},
    )
    assert response.status_code == 413 and response.json()["code"] == "upload_too_large"
    assert snapshot(server) == before
    assert not list((server.home / "projects/film/05_Cache/uploads").glob("*"))


def test_bad_websocket_messages_get_error_replies(server: ServerProcess) -> None:
    async def scenario() -> None:
        async with EventClient(f"{server.ws_base}/ws/tester") as client:
            for bad in ("not json", '["a list"]', '{"type": "dance"}',
                        '{"type": "subscribe", "task_ids": "task_1"}',
                        '{"type": "subscribe", "last_seq": {"t": -1}}'):  # fmt: skip
                await client.ws.send(bad)
                reply = await client.next_control("error", timeout=5)
                assert reply["code"] == "invalid_message" and reply["message"]
            ack = await client.subscribe(task_ids=["task_unknown"])
            assert ack["task_ids"] == ["task_unknown"]

    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_client_cannot_reach_server_files_outside_projects(server: ServerProcess) -> None:
    raw = httpx.get(f"{server.base}/api/v1/projects/film/files/..%2F..%2Fstate.db")
    assert raw.status_code == 400 and raw.json()["code"] == "unsafe_path"
    assert Path(server.home / "state.db").exists()
