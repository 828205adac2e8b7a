"""``takeflow serve --auth``: tokens for users and their projects, over HTTP and WebSocket."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from tests.server.harness import REPO, EventClient, ServerProcess

pytestmark = pytest.mark.e2e
SHOT = "ch01/sc01/sh010"


def create_token(home: Path, user: str, *projects: str) -> str:
    argv = [sys.executable, "-m", "server.cli", "--home", str(home), "token", "create"]
    argv += ["--user", user, *(a for p in projects for a in ("--project", p))]
    env = {**os.environ, "TAKEFLOW_HOME": str(home)}
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


class Caller:
    """One user's HTTP client against the server (bearer token in every request)."""

    def __init__(self, server: ServerProcess, token: str) -> None:
        self.token = token
        self.http = httpx.Client(
            base_url=server.base, timeout=30, headers={"Authorization": f"Bearer {token}"}
        )

    def ok(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.http.request(method, path, **kwargs)
        assert response.status_code < 300, (
            f"{method} {path}: {response.status_code} {response.text}"
        )
        return response.json()

    def refused(self, method: str, path: str, status: int = 403, **kwargs: Any) -> dict[str, Any]:
        response = self.http.request(method, path, **kwargs)
        assert response.status_code == status, f"{method} {path}: {response.text}"
        body: dict[str, Any] = response.json()
        assert body["code"] == {401: "unauthorized", 403: "forbidden"}[status], body
        return body


@contextlib.contextmanager
def authed_server(home: Path, token: str, *extra: str) -> Iterator[ServerProcess]:
    """A server whose readiness probe carries a token; ``server.anonymous`` has none."""
    server = ServerProcess(home, *extra)
    server.http.headers["Authorization"] = f"Bearer {token}"
    try:
        server.wait_ready()
        server.anonymous = httpx.Client(base_url=server.base, timeout=30)  # type: ignore[attr-defined]
        yield server
        server.anonymous.close()  # type: ignore[attr-defined]
    finally:
        server.stop()


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    home = tmp_path_factory.mktemp("auth") / "home"
    home.mkdir(parents=True)
    tokens = {"ana": create_token(home, "ana", "film"), "bob": create_token(home, "bob", "set")}
    stored = (home / "tokens.json").read_text()
    assert tokens["ana"] not in stored and tokens["bob"] not in stored  # only hashes are kept
    assert (home / "tokens.json").stat().st_mode & 0o077 == 0
    with authed_server(home, tokens["ana"], "--auth") as server:
        ana, bob = Caller(server, tokens["ana"]), Caller(server, tokens["bob"])
        ana.ok("POST", "/api/v1/projects", json={"project_id": "film"})
        bob.ok("POST", "/api/v1/projects", json={"project_id": "set"})
        upload = ana.ok(
            "POST", "/api/v1/projects/film/assets", files={"file": ("plate.png", b"\x89PNG...")}
        )
        task = ana.ok(
            "POST",
            "/api/v1/functions/tasks",
            json={"template_id": "noise_image", "inputs": {"width": 8, "height": 8},
                  "project_id": "film", "shot_id": SHOT},
        )["task_id"]  # fmt: skip
        for _ in range(300):
            if ana.ok("GET", f"/api/v1/functions/tasks/{task}")["status"] == "completed":
                break
            asyncio.run(asyncio.sleep(0.05))
        take = ana.ok("GET", "/api/v1/projects/film/takes", params={"task_id": task})[0]
        yield {"server": server, "ana": ana, "bob": bob, "task": task, "take": take,
               "upload": upload, "tokens": tokens}  # fmt: skip
        ana.http.close()
        bob.http.close()


def test_no_token_or_a_bad_token_is_unauthorized(setup: dict[str, Any]) -> None:
    server: ServerProcess = setup["server"]
    for path in ("/api/v1/projects", "/health", "/metrics", "/schema/openapi.json",
                 f"/api/v1/functions/tasks/{setup['task']}"):  # fmt: skip
        response = server.anonymous.get(path)  # type: ignore[attr-defined]
        assert response.status_code == 401, path
        assert response.json()["code"] == "unauthorized"
        assert response.headers["www-authenticate"].startswith("Bearer")
        bad = server.anonymous.get(path, headers={"Authorization": "Bearer tf_nope"})  # type: ignore[attr-defined]
        assert bad.status_code == 401 and bad.json()["code"] == "unauthorized"
    posted = server.anonymous.post(  # type: ignore[attr-defined]
        "/api/v1/functions/tasks", json={"template_id": "number", "inputs": {"value": 1}}
    )
    assert posted.status_code == 401
    assert setup["ana"].ok("GET", "/health")["status"] in ("healthy", "degraded")


def test_a_user_sees_and_uses_only_its_projects(setup: dict[str, Any]) -> None:
    ana: Caller = setup["ana"]
    bob: Caller = setup["bob"]
    task, take = setup["task"], setup["take"]
    assert [p["project_id"] for p in ana.ok("GET", "/api/v1/projects")] == ["film"]
    assert [p["project_id"] for p in bob.ok("GET", "/api/v1/projects")] == ["set"]
    output = next(iter(take["outputs"].values()))
    # ana reads its own files, also with ?token= (what an <img src> can send)
    assert ana.http.get(output["url"]).status_code == 200
    plain = httpx.get(f"{setup['server'].base}{output['url']}", params={"token": ana.token})
    assert plain.status_code == 200 and plain.content
    # bob is refused everything of film: reads, writes, task ids, events, files, uploads
    for method, path, kwargs in [
        ("GET", "/api/v1/projects/film", {}),
        ("GET", "/api/v1/projects/film/takes", {}),
        ("GET", "/api/v1/projects/film/commits", {}),
        ("GET", "/api/v1/projects/film/canvases", {}),
        ("GET", output["url"], {}),
        ("GET", f"/api/v1/projects/film/files/{setup['upload']['path']}", {}),
        ("PUT", "/api/v1/projects/film/canvases/mine", {"json": {"nodes": []}}),
        ("PUT", "/api/v1/projects/film/takes/active",
         {"json": {"shot_id": SHOT, "take_id": take["take_id"]}}),
        ("POST", "/api/v1/projects/film/assets", {"files": {"file": ("x.png", b"x")}}),
        ("GET", f"/api/v1/functions/tasks/{task}", {}),
        ("GET", f"/api/v1/runs/{task}", {}),
        ("GET", f"/api/v1/runs/{task}/events", {}),
        ("POST", f"/api/v1/functions/tasks/{task}/cancel", {}),
        ("POST", "/api/v1/functions/tasks",
         {"json": {"template_id": "number", "inputs": {"value": 1}, "project_id": "film"}}),
        ("POST", "/api/v1/functions/batches",
         {"json": {"tasks": [{"template_id": "number", "inputs": {}, "project_id": "film"}]}}),
        ("POST", "/api/v1/runs",
         {"json": {"graph": {"nodes": [], "context": {"project": "film"}}}}),
        ("POST", "/api/v1/projects", {"json": {"project_id": "film-2"}}),
    ]:  # fmt: skip
        bob.refused(method, path, **kwargs)
    # nothing of film changed: no new take, no new task
    assert ana.ok("GET", "/api/v1/projects/film/takes") == [take]
    assert len(ana.ok("GET", "/api/v1/projects/film/canvases")) == 0


def test_a_batch_of_another_project_is_forbidden(setup: dict[str, Any]) -> None:
    ana: Caller = setup["ana"]
    batch = ana.ok(
        "POST",
        "/api/v1/functions/batches",
        json={"tasks": [{"template_id": "number", "inputs": {"value": 2}, "project_id": "film"}]},
    )
    assert ana.ok("GET", f"/api/v1/functions/batches/{batch['batch_id']}")["total"] == 1
    setup["bob"].refused("GET", f"/api/v1/functions/batches/{batch['batch_id']}")


def test_websocket_needs_a_token_and_subscribes_only_to_own_tasks(setup: dict[str, Any]) -> None:
    server: ServerProcess = setup["server"]
    task, tokens = setup["task"], setup["tokens"]

    async def scenario() -> None:
        for url in (f"{server.ws_base}/ws/ana", f"{server.ws_base}/ws/ana?token=wrong"):
            with pytest.raises(websockets.InvalidStatus) as refused:
                await asyncio.wait_for(websockets.connect(url), 10)
            assert refused.value.response.status_code == 401
            assert json.loads(refused.value.response.body)["code"] == "unauthorized"
        with pytest.raises(websockets.InvalidStatus) as other:  # bob's token as ana
            await asyncio.wait_for(
                websockets.connect(f"{server.ws_base}/ws/ana?token={tokens['bob']}"), 10
            )
        assert other.value.response.status_code == 403

        async with EventClient(f"{server.ws_base}/ws/bob?token={tokens['bob']}") as bob:
            for fields in ({"project_ids": ["film"]}, {"task_ids": [task]},
                           {"project_ids": ["set"], "last_seq": {task: 0}}):  # fmt: skip
                await bob.send({"type": "subscribe", **fields})
                error = await bob.next_control("error", 10)
                assert error["code"] == "forbidden", error
            await bob.send({"type": "subscribe", "task_ids": ["task_doesnotexist"]})
            assert (await bob.next_control("error", 10))["code"] == "task_not_found"
            ack = await bob.subscribe(project_ids=["set"])
            assert ack["project_ids"] == ["set"] and ack["task_ids"] == []
            assert bob.events == []

        headers = {"Authorization": f"Bearer {tokens['ana']}"}
        ws = await asyncio.wait_for(
            websockets.connect(f"{server.ws_base}/ws/ana", additional_headers=headers), 10
        )
        ana = EventClient(f"{server.ws_base}/ws/ana")
        ana.ws = ws  # connected with the header instead of ?token=
        try:
            await ana.subscribe(task_ids=[task])
            assert ana.for_task(task)[-1]["type"] == "task.completed"
            assert [e["seq"] for e in ana.events] == list(range(1, len(ana.events) + 1))
        finally:
            await ana.close()

    asyncio.run(scenario())


def test_binding_beyond_loopback_turns_auth_on(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    token = create_token(home, "ops", "*")
    with authed_server(home, token, "--host", "0.0.0.0") as server:
        assert server.anonymous.get("/health").status_code == 401  # type: ignore[attr-defined]
        assert server.ok("GET", "/api/v1/projects") == []
        assert "bearer tokens required" in server.output()
