"""``takeflow serve --auth``: each user's ComfyUI files, history and ``clientId`` are their own,
and nothing a client names (a long subfolder, a huge ``max_items``) answers 500.

One real server with three tokens: ana and bob share the project ``comfyui`` (so both may
queue prompts there), admin holds ``*``. The folders stay transparent: each user gets the
names ComfyUI would give (``plate.png``, ``shot_00001_.png``), never another user's file.
"""

from __future__ import annotations

import io
import json
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import websocket
from PIL import Image

from server.auth import TokenStore
from tests.comfy.client import ComfyClient, of_prompt, recv, txt2img, until_done
from tests.comfy.conftest import comfy_server

Users = dict[str, ComfyClient]


def png(color: tuple[int, int, int], size: int = 64) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, format="PNG")
    return buf.getvalue()


def color_of(data: bytes) -> tuple[int, ...]:
    pixel = Image.open(io.BytesIO(data)).convert("RGB").getpixel((32, 32))
    assert isinstance(pixel, tuple)
    return pixel


@pytest.fixture(scope="module")
def users(tmp_path_factory: pytest.TempPathFactory, demo_model_dir: Path) -> Iterator[Users]:
    home = tmp_path_factory.mktemp("comfy-auth") / "home"
    home.mkdir(parents=True)
    tokens = TokenStore(home)
    ana, _ = tokens.create("ana", ["comfyui"])
    bob, _ = tokens.create("bob", ["comfyui"])
    admin, _ = tokens.create("admin", ["*"])
    with comfy_server(home, "--auth", token=ana, demo=demo_model_dir) as (_, client):
        yield {
            "ana": client,
            "bob": ComfyClient(client.base, bob),
            "admin": ComfyClient(client.base, admin),
        }


def run(client: ComfyClient, prompt: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Queue a prompt, wait for its end on the socket; its id and history entry."""
    client_id = uuid.uuid4().hex
    ws = client.connect(client_id)
    try:
        prompt_id = client.queue_prompt(prompt, client_id)["prompt_id"]
        until_done(ws, prompt_id)
    finally:
        ws.close()
    _, history = client.get(f"/history/{prompt_id}")
    entry = history[prompt_id]
    assert entry["status"]["status_str"] == "success", entry["status"]
    return prompt_id, dict(entry)


def load_and_save(image: str, prefix: str) -> dict[str, Any]:
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": image}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": prefix}},
    }


def test_uploads_and_outputs_are_each_users_own(users: Users) -> None:
    ana, bob, admin = users["ana"], users["bob"], users["admin"]
    red, blue = png((200, 30, 30)), png((30, 30, 200))
    assert bob.upload("plate.png", red) == (
        200,
        {"name": "plate.png", "subfolder": "", "type": "input"},
    )
    assert bob.upload("bobonly.png", red)[1]["name"] == "bobonly.png"
    # ana's upload of the same name lands in her own folder, under the name she sent
    assert ana.upload("plate.png", blue, overwrite="true")[1]["name"] == "plate.png"
    assert ana.upload("plate.png", blue)[1]["name"] == "plate.png"  # her bytes: no clash
    plate = {"filename": "plate.png", "subfolder": "", "type": "input"}
    assert bob.view(plate) == (200, red)
    assert ana.view(plate) == (200, blue)
    bobonly = {"filename": "bobonly.png", "subfolder": "", "type": "input"}
    assert ana.view(bobonly)[0] == 404
    choices = {
        name: client.get("/object_info/LoadImage")[1]["LoadImage"]["input"]["required"]["image"][0]
        for name, client in users.items()
    }
    assert "bobonly.png" in choices["bob"] and "bobonly.png" not in choices["ana"]
    status, body = ana.post("/prompt", {"prompt": load_and_save("bobonly.png", "x")})
    assert status == 400, body
    assert body["node_errors"]["1"]["errors"][0]["type"] == "value_not_in_list"

    # LoadImage reads the caller's own plate.png; SaveImage counts in the caller's folder
    _, bob_entry = run(bob, load_and_save("plate.png", "shot"))
    _, ana_entry = run(ana, load_and_save("plate.png", "shot"))
    bob_image = bob_entry["outputs"]["2"]["images"][0]
    ana_image = ana_entry["outputs"]["2"]["images"][0]
    assert (
        bob_image
        == ana_image
        == {
            "filename": "shot_00001_.png",
            "subfolder": "",
            "type": "output",
        }
    )
    status, bob_saved = bob.view(bob_image)
    assert status == 200 and color_of(bob_saved) == (200, 30, 30)
    status, ana_saved = ana.view(ana_image)
    assert status == 200 and color_of(ana_saved) == (30, 30, 200)

    # overwriting "shot_00001_.png" (an output) writes ana's file, never bob's
    assert ana.upload("shot_00001_.png", red, type="output", overwrite="1")[0] == 200
    assert ana.view(ana_image) == (200, red)
    assert bob.view(bob_image) == (200, bob_saved)
    assert ana.view({**bob_image, "filename": "shot_00002_.png"})[0] == 404

    # an admin (project '*') sees its own folder by default and any user's on request
    assert admin.view(bobonly)[0] == 404
    query = urllib.parse.urlencode({**bobonly, "user": "bob"})
    assert admin.get_bytes(f"/view?{query}") == (200, red)
    status, body = ana.get(f"/view?{query}")  # user= is for '*' tokens only
    assert status == 403 and body["code"] == "forbidden", body


def test_history_clear_and_delete_touch_only_the_callers_prompts(users: Users) -> None:
    ana, bob = users["ana"], users["bob"]
    ana_id, _ = run(ana, txt2img(seed=21, steps=1))
    bob_id, _ = run(bob, txt2img(seed=22, steps=1))
    assert ana.post("/history", {"delete": [bob_id]})[0] == 200
    assert bob_id in bob.get("/history")[1]
    assert ana.post("/history", {"clear": True})[0] == 200
    assert ana_id not in ana.get("/history")[1]
    history = bob.get("/history")[1]
    assert bob_id in history and ana_id not in history
    assert bob.post("/history", {"delete": [bob_id]})[0] == 200
    assert bob_id not in bob.get("/history")[1]


def test_a_client_id_belongs_to_the_user_who_first_used_it(users: Users) -> None:
    ana, bob = users["ana"], users["bob"]
    client_id = uuid.uuid4().hex
    ws = bob.connect(client_id)
    try:
        first = recv(ws)
        assert isinstance(first, dict) and first["data"]["sid"] == client_id
        with pytest.raises(websocket.WebSocketBadStatusException) as refused:
            ana.connect(client_id)
        assert refused.value.status_code == 403
        # bob's socket stayed open and gets his prompt's messages
        prompt_id = bob.queue_prompt(txt2img(seed=31, steps=1), client_id)["prompt_id"]
        kinds = [
            m["type"]
            for m in of_prompt(until_done(ws, prompt_id), prompt_id)
            if isinstance(m, dict)
        ]
        assert kinds[-2:] == ["execution_success", "executing"]
    finally:
        ws.close()
    with pytest.raises(websocket.WebSocketBadStatusException) as again:
        ana.connect(client_id)  # also while bob is away
    assert again.value.status_code == 403
    ws = bob.connect(client_id)  # bob comes back
    try:
        assert recv(ws)["type"] == "status"  # type: ignore[index]
    finally:
        ws.close()


def _field_error(status: int, body: Any, field: str) -> None:
    assert status == 400, (status, body)
    assert body.get("field") == field and field in body["message"], body
    assert body["code"].startswith("invalid_"), body


def test_bad_names_and_numbers_answer_4xx_naming_the_field(users: Users) -> None:
    ana = users["ana"]
    image = png((1, 2, 3))
    _field_error(*ana.upload("x.png", image, subfolder="a" * 5000), "subfolder")
    _field_error(*ana.upload("x.png", image, subfolder="/".join(["b" * 200] * 30)), "subfolder")
    _field_error(*ana.upload(".", image), "filename")
    _field_error(*ana.upload("a" * 300 + ".png", image), "filename")
    _field_error(*ana.upload("x.png", image, type="elsewhere"), "type")
    assert ana.upload("folder.png", image, subfolder="sub")[0] == 200
    # a name that is a folder: a new name, or 400 when asked to overwrite it
    assert ana.upload("sub", image)[1]["name"] == "sub (1)"
    _field_error(*ana.upload("sub", image, overwrite="true"), "filename")
    # a subfolder that runs through a file
    _field_error(*ana.upload("x.png", image, subfolder="sub/folder.png"), "subfolder")

    huge = str(10**30)
    _field_error(*ana.get(f"/history?max_items={huge}"), "max_items")
    _field_error(*ana.get(f"/history?max_items=-{huge}"), "max_items")
    _field_error(*ana.get(f"/history?offset={huge}"), "offset")
    assert ana.get("/history?max_items=1&offset=-5")[0] == 200

    _field_error(*ana.get(f"/view?filename={'a' * 5000}.png"), "filename")
    _field_error(*ana.get(f"/view?filename=x.png&subfolder={'a' * 5000}"), "subfolder")
    assert ana.get("/view?filename=x.png&subfolder=sub/folder.png")[0] == 404

    prompt = json.dumps({"prompt": txt2img(steps=1)})[1:-1]
    for number in ("1" + "0" * 400, "NaN", "Infinity", "1e400"):
        status, body = ana.post("/prompt", raw=f'{{"number": {number}, {prompt}}}'.encode())
        assert status == 400, (number, status, body)
        assert body["error"]["type"] == "invalid_prompt" and "number" in body["error"]["message"]
    assert ana.upload("prefix.png", image)[0] == 200
    status, body = ana.post("/prompt", {"prompt": load_and_save("prefix.png", "p" * 300)})
    assert status == 400, body
    assert body["node_errors"]["2"]["errors"][0]["extra_info"]["input_name"] == "filename_prefix"


def test_an_output_that_cannot_be_written_ends_the_prompt_with_an_error(users: Users) -> None:
    """A SaveImage prefix whose folder is a file: the prompt ends (``execution_error``) instead
    of waiting forever for a history entry that could not be written."""
    ana = users["ana"]
    assert ana.upload("wall.png", png((9, 9, 9)), type="output")[0] == 200
    prompt = txt2img(seed=41, steps=1)
    prompt["9"]["inputs"]["filename_prefix"] = "wall.png/shot"
    client_id = uuid.uuid4().hex
    ws = ana.connect(client_id)
    try:
        prompt_id = ana.queue_prompt(prompt, client_id)["prompt_id"]
        messages = of_prompt(until_done(ws, prompt_id, timeout=30), prompt_id)
    finally:
        ws.close()
    error = next(m for m in messages if isinstance(m, dict) and m["type"] == "execution_error")
    assert error["data"]["exception_type"] == "output_not_saved"
    assert error["data"]["node_id"] == "9" and "wall" not in error["data"]["exception_message"]
    _, history = ana.get(f"/history/{prompt_id}")
    assert history[prompt_id]["status"]["status_str"] == "error"
