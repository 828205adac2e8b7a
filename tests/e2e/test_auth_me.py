"""``GET /api/v1/auth/me``: who the caller is, which projects it may use, whether auth is on."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
import websockets

from tests.e2e.test_auth import create_token
from tests.server.harness import running_server

pytestmark = pytest.mark.e2e


def test_me_names_the_tokens_user_and_projects_under_auth(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    ana = create_token(home, "ana", "film", "set")
    root = create_token(home, "root", "*")
    with running_server(home, "--auth", token=ana) as server:
        assert server.ok("GET", "/api/v1/auth/me") == {
            "user_id": "ana",
            "projects": ["film", "set"],
            "auth": True,
        }
        everything = httpx.get(
            f"{server.base}/api/v1/auth/me", headers={"Authorization": f"Bearer {root}"}
        )
        assert everything.json() == {"user_id": "root", "projects": None, "auth": True}
        # ?token= works too (a GET), as for the editor's image URLs
        by_query = httpx.get(f"{server.base}/api/v1/auth/me", params={"token": ana})
        assert by_query.json()["user_id"] == "ana"

        anonymous = httpx.get(f"{server.base}/api/v1/auth/me")
        assert anonymous.status_code == 401 and anonymous.json()["code"] == "unauthorized"
        wrong = httpx.get(
            f"{server.base}/api/v1/auth/me", headers={"Authorization": "Bearer tf_x_nope"}
        )
        assert wrong.status_code == 401

        # the user it names is the one whose WebSocket path the server accepts
        async def subscribe(user: str) -> dict[str, object]:
            url = f"{server.ws_base}/ws/{user}?token={ana}"
            async with websockets.connect(url) as ws:
                await ws.send(json.dumps({"type": "subscribe", "project_ids": ["film"]}))
                reply: dict[str, object] = json.loads(await asyncio.wait_for(ws.recv(), 10))
                return reply

        me = server.ok("GET", "/api/v1/auth/me")["user_id"]
        assert asyncio.run(subscribe(me))["type"] == "subscribed"
        with pytest.raises(websockets.exceptions.WebSocketException):
            asyncio.run(subscribe("someone-else"))


def test_me_without_auth_is_the_local_user(tmp_path: Path) -> None:
    with running_server(tmp_path / "home") as server:
        response = httpx.get(f"{server.base}/api/v1/auth/me")
        assert response.status_code == 200
        assert response.json() == {"user_id": "local", "projects": None, "auth": False}
        schema = server.ok("GET", "/schema/openapi.json")
        assert "/api/v1/auth/me" in schema["paths"]
