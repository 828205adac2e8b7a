"""``takeflow serve --auth``: the compat listener needs a token too, and users see their own."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import websocket

from server.auth import TokenStore
from tests.comfy.client import ComfyClient, of_prompt, recv, txt2img, until_done
from tests.comfy.conftest import comfy_server


def test_compat_listener_requires_a_token(tmp_path: Path, demo_model_dir: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    ana, _ = TokenStore(home).create("ana", ["comfyui"])
    bob, _ = TokenStore(home).create("bob", ["elsewhere"])
    with comfy_server(home, "--auth", token=ana, demo=demo_model_dir) as (server, client):
        anonymous = ComfyClient(client.base)
        assert anonymous.get("/system_stats")[0] == 401
        status, body = anonymous.post("/prompt", {"prompt": txt2img()})
        assert status == 401 and body["code"] == "unauthorized"
        assert ComfyClient(client.base, "tf_bad_token").get("/queue")[0] == 401
        assert ComfyClient(f"{server.base}/api").post("/prompt", {"prompt": txt2img()})[0] == 401
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            anonymous.connect("anyone")
        assert refused.value.status_code == 401

        client_id = uuid.uuid4().hex
        ws = client.connect(client_id)  # ?token= on the handshake
        try:
            assert recv(ws)["type"] == "status"  # type: ignore[index]
            prompt_id = client.queue_prompt(txt2img(seed=41), client_id)["prompt_id"]
            kinds = [
                m["type"]
                for m in of_prompt(until_done(ws, prompt_id), prompt_id)
                if isinstance(m, dict)
            ]
        finally:
            ws.close()
        assert kinds[-2:] == ["execution_success", "executing"]
        assert prompt_id in client.get("/history")[1]

        other = ComfyClient(client.base, bob)
        assert other.get(f"/history/{prompt_id}") == (200, {})  # another user's prompt
        assert prompt_id not in other.get("/history")[1]
        status, body = other.post("/prompt", {"prompt": txt2img()})
        assert status == 403 and body["code"] == "forbidden"  # bob may not use 'comfyui'
