"""The request guard (``server.guard``) on a real server with its ComfyUI listener: ``Host``,
``Origin``, JSON content types and JSON depth, on every JSON route of both listeners and on the
WebSockets; plus the API answers that no longer show server paths or unchecked values. (Its
pieces: test_guard_policy.py.)"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from tests.comfy.conftest import wait_compat
from tests.server.fuzzing import COMFY_JSON_ROUTES, MAIN_JSON_ROUTES
from tests.server.harness import ServerProcess, free_port, running_server

TASK = {"template_id": "noise_image", "inputs": {"width": 16, "height": 16}}
DEEP_ARRAY = "[" * 100_000 + "]" * 100_000
DEEP_OBJECT = '{"a":' * 50_000 + "1" + "}" * 50_000
EVIL = "http://evil.example"


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, str]]:
    """``serve --comfy-port`` on loopback, no tokens; a ``demo`` project."""
    home = tmp_path_factory.mktemp("guard") / "home"
    port = free_port()
    with running_server(home, "--comfy-port", str(port)) as server:
        comfy = f"http://127.0.0.1:{port}"
        wait_compat(comfy)
        server.ok("POST", "/api/v1/projects", json={"project_id": "demo", "name": "Demo"})
        yield server, comfy


# -- F5: deep JSON ---------------------------------------------------------------------------


@pytest.mark.parametrize("body", [DEEP_ARRAY, DEEP_OBJECT], ids=["array", "object"])
def test_deep_json_is_refused_on_every_json_route_of_both_listeners(
    servers: tuple[ServerProcess, str], body: str
) -> None:
    server, comfy = servers
    calls = [(m, f"{server.base}{p}", "application/json") for m, p in MAIN_JSON_ROUTES]
    for path in COMFY_JSON_ROUTES:  # ComfyUI reads JSON whatever the content type
        calls.append(("POST", f"{comfy}{path}", "application/x-www-form-urlencoded"))
        calls.append(("POST", f"{server.base}/api{path}", "text/plain"))
    for method, url, content_type in calls:
        answer = httpx.request(
            method, url, content=body, headers={"Content-Type": content_type}, timeout=30
        )
        assert answer.status_code == 400, f"{method} {url}: {answer.status_code} {answer.text}"
        assert answer.json()["code"] == "json_too_deep", answer.text
    assert "Traceback" not in server.output()


def test_deep_websocket_messages_are_answered_and_the_socket_stays(
    servers: tuple[ServerProcess, str],
) -> None:
    server, _ = servers

    async def talk() -> list[dict[str, Any]]:
        async with websockets.connect(f"{server.ws_base}/ws/ana", max_size=None) as ws:
            await ws.send(DEEP_ARRAY)
            first = json.loads(await asyncio.wait_for(ws.recv(), 10))
            await ws.send(json.dumps({"type": "ping"}))
            second = json.loads(await asyncio.wait_for(ws.recv(), 10))
            return [first, second]

    first, second = asyncio.run(talk())
    assert first["type"] == "error" and first["code"] == "json_too_deep", first
    assert second == {"type": "pong"}


# -- F1: content types, Origin, Host ---------------------------------------------------------


def _takes(server: ServerProcess, shot: str) -> list[Any]:
    return list(server.ok("GET", "/api/v1/projects/demo/takes", params={"shot_id": shot}))


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_takeflow_json_routes_need_a_json_content_type(
    servers: tuple[ServerProcess, str], content_type: str | None
) -> None:
    server, _ = servers
    shot = f"ct/c/{(content_type or 'none').split('/')[-1].replace('-', '_')}"
    body = json.dumps({**TASK, "project_id": "demo", "shot_id": shot})
    headers = {"Content-Type": content_type} if content_type else {}
    answer = httpx.post(f"{server.base}/api/v1/functions/tasks", content=body, headers=headers)
    assert answer.status_code == 415, answer.text
    assert answer.json()["code"] == "unsupported_media_type"
    assert "application/json" in answer.json()["message"]
    assert _takes(server, shot) == []
    sent = server.http.post(
        "/api/v1/functions/tasks",
        content=json.dumps(TASK),
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    assert sent.status_code == 200, sent.text


def test_cross_origin_writes_are_refused_and_same_origin_ones_pass(
    servers: tuple[ServerProcess, str],
) -> None:
    server, comfy = servers
    body = {**TASK, "project_id": "demo", "shot_id": "xo/x/x"}
    for origin in (EVIL, "null", "http://localhost:1", f"http://127.0.0.1:{server.port + 1}"):
        answer = server.http.post("/api/v1/functions/tasks", json=body, headers={"Origin": origin})
        assert answer.status_code == 403, f"{origin}: {answer.text}"
        assert answer.json()["code"] == "origin_not_allowed"
    for url in (f"{comfy}/prompt", f"{server.base}/api/prompt", f"{comfy}/interrupt"):
        answer = httpx.post(url, content=b"{}", headers={"Origin": EVIL})
        assert answer.status_code == 403 and answer.json()["code"] == "origin_not_allowed"
    assert _takes(server, "xo/x/x") == []
    # reads carry no risk without CORS; the server's own page writes as before
    assert server.http.get("/api/v1/projects", headers={"Origin": EVIL}).status_code == 200
    own = server.http.post("/api/v1/functions/tasks", json=body, headers={"Origin": server.base})
    assert own.status_code == 200, own.text


def test_cross_site_websockets_are_refused_at_the_handshake(
    servers: tuple[ServerProcess, str],
) -> None:
    server, comfy = servers
    comfy_ws = comfy.replace("http://", "ws://")

    async def opens(url: str, origin: str | None) -> int | None:
        try:
            async with websockets.connect(url, origin=origin) as ws:  # type: ignore[arg-type]
                await ws.send(json.dumps({"type": "ping"}))
                return None
        except websockets.InvalidStatus as exc:
            return int(exc.response.status_code)

    for url in (f"{server.ws_base}/ws/anyone", f"{comfy_ws}/ws?clientId=x"):
        assert asyncio.run(opens(url, EVIL)) == 403, url
        assert asyncio.run(opens(url, "null")) == 403, url
        assert asyncio.run(opens(url, None)) is None, url  # scripts send no Origin
    assert asyncio.run(opens(f"{server.ws_base}/ws/ana", server.base)) is None


def test_a_rebinding_host_is_refused(servers: tuple[ServerProcess, str]) -> None:
    server, comfy = servers
    for host in ("evil.example", "evil.example:80", "127.0.0.1.evil.example", "localhostx"):
        for url in (f"{server.base}/api/v1/projects", f"{comfy}/queue", f"{server.base}/"):
            answer = httpx.get(url, headers={"Host": host})
            assert answer.status_code == 421, f"{host} {url}: {answer.text}"
            assert answer.json()["code"] == "host_not_allowed"
    for host in ("localhost", f"localhost:{server.port}", "127.0.0.1", "[::1]:1", "LOCALHOST."):
        answer = httpx.get(f"{server.base}/api/v1/projects", headers={"Host": host})
        assert answer.status_code == 200, f"{host}: {answer.text}"


def test_allowed_hosts_and_origins_come_from_the_cli_and_the_home(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.json").write_text(json.dumps({"server": {"allowed_hosts": ["a.example"]}}))
    extra = ("--allowed-host", "b.example", "--allowed-origin", "https://studio.example")
    with running_server(home, *extra) as server:
        for host in ("a.example", "b.example:8470"):
            answer = server.http.get("/api/v1/projects", headers={"Host": host})
            assert answer.status_code == 200, answer.text
        assert server.http.get("/api/v1/projects", headers={"Host": "c.example"}).status_code == 421
        answer = server.http.post(
            "/api/v1/projects",
            json={"project_id": "p"},
            headers={"Origin": "https://studio.example"},
        )
        assert answer.status_code == 201, answer.text


# -- F10, F11: no server paths, no unchecked values -----------------------------------------


def test_projects_do_not_show_server_paths(servers: tuple[ServerProcess, str]) -> None:
    server, _ = servers
    created = server.http.post("/api/v1/projects", json={"project_id": "paths"})
    answers = [
        created,
        server.http.get("/api/v1/projects"),
        server.http.get("/api/v1/projects/paths"),
    ]
    for answer in answers:
        assert answer.status_code < 300, answer.text
        assert str(server.home) not in answer.text and '"path"' not in answer.text, answer.text
    assert {"project_id": "paths", "name": "paths"}.items() <= created.json().items()


def test_numbers_beyond_what_a_template_can_hold_are_refused(
    servers: tuple[ServerProcess, str],
) -> None:
    server, _ = servers
    huge = 10**400
    literal = {"kind": "literal", "value": huge}
    graph = {"nodes": [{"id": "n1", "template": "number", "inputs": {"value": literal}}]}
    for path, body in (
        ("/api/v1/functions/tasks", {"template_id": "number", "inputs": {"value": huge}}),
        ("/api/v1/runs", {"graph": graph}),
        ("/api/v1/functions/tasks", {**TASK, "inputs": {**TASK["inputs"], "seed": 2**64}}),
    ):
        answer = server.http.post(path, json=body)
        assert answer.status_code == 422, answer.text
        error = answer.json()["errors"][0]
        assert error["code"] == "out_of_range" and error["port"] in ("value", "seed"), error
        assert error["node_id"] in ("n1", "node")


def test_a_quality_the_template_has_no_preset_for_is_refused(
    servers: tuple[ServerProcess, str],
) -> None:
    server, _ = servers
    for body, field in (
        ({**TASK, "quality": "ultra"}, "quality"),
        ({**TASK, "inputs": {**TASK["inputs"], "quality": "high"}}, "inputs.quality"),
    ):
        answer = server.http.post("/api/v1/functions/tasks", json=body)
        assert answer.status_code == 422, answer.text
        assert answer.json()["field"] == field and "noise_image" in answer.json()["message"]
    assert server.http.post(
        "/api/v1/functions/tasks", json={**TASK, "quality": "standard"}
    ).is_success
