"""What a new user meets first, on a real server: the page at ``/`` without a built editor,
projects created from a name alone, and ``/health`` probes that leave nothing behind."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server.harness import ServerProcess, running_server

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("newcomer")
    with running_server(root / "home", "--web-dist", str(root / "no-editor-here")) as srv:
        yield srv


def test_root_without_a_built_editor_says_how_to_build_it(server: ServerProcess) -> None:
    page = server.http.get("/")
    assert page.status_code == 404
    assert page.headers["content-type"].startswith("text/html")
    assert "cd web &amp;&amp; npm ci &amp;&amp; npm run build" in page.text
    assert "./scripts/install" in page.text
    api = server.http.get("/api/v1/nothing")  # the API's own 404s stay JSON
    assert (api.status_code, api.json()["code"]) == (404, "not_found")


def test_a_project_from_a_name_alone_gets_a_unique_safe_id(server: ServerProcess) -> None:
    first = server.http.post("/api/v1/projects", json={"name": "My Film"})
    second = server.http.post("/api/v1/projects", json={"name": "My  Film!"})
    assert (first.status_code, second.status_code) == (201, 201), second.text
    assert (first.json()["project_id"], first.json()["name"]) == ("my-film", "My Film")
    assert second.json()["project_id"] == "my-film-2"
    accents = server.ok("POST", "/api/v1/projects", json={"name": "Été à Noël"})
    assert accents["project_id"] == "ete-a-noel"
    assert (server.home / "projects" / "my-film-2" / ".git").is_dir()
    ids = {p["project_id"] for p in server.ok("GET", "/api/v1/projects")}
    assert {"my-film", "my-film-2", "ete-a-noel"} <= ids


def test_a_project_needs_a_name_or_an_id(server: ServerProcess) -> None:
    empty = server.http.post("/api/v1/projects", json={})
    assert empty.status_code == 422
    assert empty.json()["code"] == "invalid_request"
    assert "'name'" in empty.json()["message"]
    taken = server.http.post("/api/v1/projects", json={"project_id": "taken", "name": "A"})
    again = server.http.post("/api/v1/projects", json={"project_id": "taken"})
    assert taken.status_code == 201
    assert (again.status_code, again.json()["code"]) == (409, "project_exists")


def _stored(home: Path) -> tuple[int, int, list[str]]:
    """Task records, events in the durable log, and node-cache files of a home."""
    db = sqlite3.connect(f"file:{home / 'state.db'}?mode=ro", uri=True)
    try:
        tasks = db.execute("SELECT COUNT(*) FROM tasks").fetchone()[0]
        events = db.execute("SELECT COUNT(*) FROM events").fetchone()[0]
    finally:
        db.close()
    cache = sorted(str(p.relative_to(home)) for p in (home / "cache").rglob("*") if p.is_file())
    return tasks, events, cache


def test_health_probes_leave_no_task_event_run_or_cache_file(server: ServerProcess) -> None:
    kept = server.submit("number", {"value": 3.0})  # one real task, which must stay
    deadline = time.monotonic() + 30
    while server.ok("GET", f"/api/v1/functions/tasks/{kept}")["status"] != "completed":
        assert time.monotonic() < deadline, "the user's task did not complete"
        time.sleep(0.05)
    first = server.ok("GET", "/health")
    assert first["status"] == "healthy", first
    before = _stored(server.home)
    runs = next(c for c in first["checks"] if c["name"] == "dagster_instance")["details"]["runs"]
    for _ in range(4):
        report = server.ok("GET", "/health")
        checks = {c["name"]: c for c in report["checks"]}
        assert checks["data_flow"]["status"] == "ok", checks["data_flow"]
        assert checks["data_flow"]["details"]["events"][-1] == "task.completed"
        assert checks["dagster_instance"]["details"]["runs"] == runs
    assert _stored(server.home) == before
    assert before[0] == 1 and before[2]  # the user's task and its cache entry are still there
    assert server.ok("GET", f"/api/v1/functions/tasks/{kept}")["status"] == "completed"
