"""The rest of the protocol: images over the socket, upload + img2img, bad prompts, /view
traversal, interrupt, queue — each as a ComfyUI client does it."""

from __future__ import annotations

import io
import json
import struct
import time
import uuid
from typing import Any

import pytest
from PIL import Image

from tests.comfy.client import ComfyClient, of_prompt, recv, txt2img, until_done
from tests.server.harness import ServerProcess

Comfy = tuple[ServerProcess, ComfyClient]


def png(color: tuple[int, int, int], size: int = 64) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, format="PNG")
    return buf.getvalue()


def test_save_image_websocket_streams_png_frames(comfy: Comfy) -> None:
    """websockets_api_example_ws_images.py: POST /api/prompt, frames after its executing; a
    batch of 2 is 2 frames, and 2 images of a SaveImage beside it."""
    _, client = comfy
    client_id = uuid.uuid4().hex
    ws = client.connect(client_id)
    prompt = txt2img(seed=3, batch=2, save="SaveImageWebsocket")
    prompt["9"] = {
        "class_type": "SaveImage",
        "inputs": {"images": ["8", 0], "filename_prefix": "batch/two"},
    }
    try:
        answer = client.post("/api/prompt", {"prompt": prompt, "client_id": client_id})
        assert answer[0] == 200, answer
        prompt_id = answer[1]["prompt_id"]
        images: list[bytes] = []
        current = ""
        while True:
            message = recv(ws)
            if isinstance(message, dict):
                data = message["data"]
                if message["type"] == "executing" and data["prompt_id"] == prompt_id:
                    if data["node"] is None:
                        break
                    current = data["node"]
            elif current == "save_image_websocket_node":
                assert struct.unpack(">II", message[:8]) == (1, 2)  # preview image, PNG
                images.append(message[8:])
    finally:
        ws.close()
    assert len(images) == 2
    decoded = [Image.open(io.BytesIO(b)) for b in images]
    assert all(i.format == "PNG" and i.size == (64, 64) for i in decoded)
    assert decoded[0].tobytes() != decoded[1].tobytes()  # seeds 3 and 4
    _, history = client.get(f"/history/{prompt_id}")
    assert history[prompt_id]["status"]["status_str"] == "success"
    outputs = history[prompt_id]["outputs"]
    assert list(outputs) == ["9"]  # SaveImageWebsocket returns no ui output
    saved = outputs["9"]["images"]
    assert [(i["subfolder"], i["type"]) for i in saved] == [("batch", "output")] * 2
    assert [i["filename"] for i in saved] == ["two_00001_.png", "two_00002_.png"]
    stored = [client.view(i)[1] for i in saved]
    assert stored == images  # the socket sent the saved images, in batch order


def test_upload_then_image_to_image_on_the_main_app(comfy: Comfy) -> None:
    """Upload (name clash -> ``name (1).png``), then LoadImage -> VAEEncode -> KSampler 0.5,
    through the routes the main app serves under /api/."""
    server, _ = comfy
    client = ComfyClient(f"{server.base}/api")
    red, blue = png((200, 30, 30)), png((30, 30, 200))
    assert client.upload("plate.png", red)[1] == {
        "name": "plate.png",
        "subfolder": "",
        "type": "input",
    }
    assert client.upload("plate.png", red)[1]["name"] == "plate.png"  # same bytes: same name
    assert client.upload("plate.png", blue)[1]["name"] == "plate (1).png"
    assert client.upload("plate.png", blue, overwrite="true")[1]["name"] == "plate.png"
    _, info = client.get("/object_info/LoadImage")
    assert "plate (1).png" in info["LoadImage"]["input"]["required"]["image"][0]

    prompt = txt2img(seed=11)
    prompt["10"] = {"class_type": "LoadImage", "inputs": {"image": "plate (1).png"}}
    prompt["11"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["10", 0], "vae": ["4", 2]}}
    prompt["3"]["inputs"].update(latent_image=["11", 0], denoise=0.5)
    del prompt["5"]
    client_id = uuid.uuid4().hex
    ws = client.connect(client_id)
    try:
        prompt_id = client.queue_prompt(prompt, client_id)["prompt_id"]
        messages = of_prompt(until_done(ws, prompt_id), prompt_id)
    finally:
        ws.close()
    texts = [m for m in messages if isinstance(m, dict)]
    assert texts[-2]["type"] == "execution_success"
    progress = [(m["data"]["value"], m["data"]["max"]) for m in texts if m["type"] == "progress"]
    assert progress == [(1, 2), (2, 2)]  # ComfyUI's step semantics: 2 steps at denoise 0.5
    _, history = client.get(f"/history/{prompt_id}")
    entry = history[prompt_id]
    image = entry["outputs"]["9"]["images"][0]
    status, data = client.view(image)
    assert status == 200 and Image.open(io.BytesIO(data)).size == (64, 64)
    take = server.ok(
        "GET", "/api/v1/projects/comfyui/takes", params={"task_id": entry["takeflow"]["task_id"]}
    )[0]
    inputs = take["metadata"]["inputs"]
    sampler = next(v for k, v in inputs.items() if k.startswith("ksampler"))
    assert sampler["strength"] == 0.5 and sampler["steps"] == 4
    loader = next(v for k, v in inputs.items() if k.startswith("load"))
    assert loader["asset"].startswith("asset://uploads/comfyui/")


def _rejected(client: ComfyClient, prompt: Any, raw: bytes | None = None) -> dict[str, Any]:
    status, body = client.post("/prompt", {"prompt": prompt}, raw=raw)
    assert status == 400, (status, body)
    assert set(body) == {"error", "node_errors"}
    assert set(body["error"]) == {"type", "message", "details", "extra_info"}
    return dict(body)


def test_bad_prompts_answer_400_with_node_errors(comfy: Comfy) -> None:
    _, client = comfy
    _, before = client.get("/history")

    unknown = txt2img()
    unknown["12"] = {"class_type": "CLIPVisionLoader", "inputs": {"clip_name": "x"}}
    body = _rejected(client, unknown)
    assert body["error"]["type"] == "missing_node_type"
    assert "CLIPVisionLoader" in body["error"]["message"]
    assert body["error"]["extra_info"]["class_type"] == "CLIPVisionLoader"
    assert body["node_errors"]["12"]["class_type"] == "CLIPVisionLoader"

    bad_link = txt2img()
    bad_link["8"]["inputs"]["samples"] = ["99", 0]
    body = _rejected(client, bad_link)
    assert body["error"]["type"] == "prompt_outputs_failed_validation"
    error = body["node_errors"]["8"]["errors"][0]
    assert error["type"] == "bad_linked_input" and error["extra_info"]["input_name"] == "samples"
    assert body["node_errors"]["8"]["dependent_outputs"] == ["9"]
    assert body["node_errors"]["8"]["class_type"] == "VAEDecode"

    wrong_type = txt2img()
    wrong_type["8"]["inputs"]["samples"] = ["4", 0]  # MODEL into LATENT
    error = _rejected(client, wrong_type)["node_errors"]["8"]["errors"][0]
    assert error["type"] == "return_type_mismatch"

    missing = txt2img()
    del missing["3"]["inputs"]["steps"]
    error = _rejected(client, missing)["node_errors"]["3"]["errors"][0]
    assert error["type"] == "required_input_missing" and error["details"] == "steps"

    too_small = txt2img(size=32)  # Takeflow's own validation: sizes from 64
    errors = _rejected(client, too_small)["node_errors"]["5"]["errors"]
    assert {(e["type"], e["extra_info"]["input_name"]) for e in errors} == {
        ("value_smaller_than_min", "width"),
        ("value_smaller_than_min", "height"),
    }
    assert errors[0]["extra_info"]["received_value"] == 32

    too_many = txt2img(steps=100_000)
    error = _rejected(client, too_many)["node_errors"]["3"]["errors"][0]
    assert (error["type"], error["extra_info"]["input_name"]) == ("value_bigger_than_max", "steps")

    no_model = txt2img(ckpt="v1-5-pruned-emaonly.safetensors")
    error = _rejected(client, no_model)["node_errors"]["4"]["errors"][0]
    assert error["type"] == "value_not_in_list" and "demo" in error["details"]

    sampler = txt2img()
    sampler["3"]["inputs"]["sampler_name"] = "dpmpp_3m_sde"
    error = _rejected(client, sampler)["node_errors"]["3"]["errors"][0]
    assert error["type"] == "value_not_in_list"

    not_json = _rejected(client, None, raw=b"{prompt: nope")
    assert not_json["error"]["type"] == "invalid_prompt" and not_json["node_errors"] == {}
    assert _rejected(client, None, raw=b"{}")["error"]["type"] == "no_prompt"
    no_outputs = {k: v for k, v in txt2img().items() if k != "9"}
    assert _rejected(client, no_outputs)["error"]["type"] == "prompt_no_outputs"

    outside = txt2img()
    outside["9"]["inputs"]["filename_prefix"] = "../../escape"
    error = _rejected(client, outside)["node_errors"]["9"]["errors"][0]
    assert error["extra_info"]["input_name"] == "filename_prefix"

    assert client.get("/history")[1] == before  # nothing was queued
    assert client.get("/queue")[1] == {"queue_running": [], "queue_pending": []}


@pytest.mark.parametrize(
    ("query", "status"),
    [
        ("filename=../comfyui.sqlite&type=output", 400),
        ("filename=..%2F..%2Fconfig.json&type=input", 400),
        ("filename=%2Fetc%2Fpasswd", 400),
        ("filename=config.json&subfolder=../..&type=output", 403),
        ("filename=x.png&subfolder=%2Fetc", 403),
        ("filename=x.png&type=secrets", 400),
        ("filename=nothing-here.png", 404),
    ],
)
def test_view_refuses_paths_outside_its_folders(comfy: Comfy, query: str, status: int) -> None:
    _, client = comfy
    got, body = client.get_bytes(f"/view?{query}")
    assert got == status, body
    assert b"{" in body and b"home" not in body


def test_interrupt_stops_the_running_prompt(comfy: Comfy) -> None:
    _, client = comfy
    client_id = uuid.uuid4().hex
    ws = client.connect(client_id)
    try:
        prompt_id = client.queue_prompt(txt2img(seed=9, size=128, steps=200), client_id)[
            "prompt_id"
        ]
        while True:
            message = recv(ws)
            if isinstance(message, dict) and message["type"] == "progress":
                break
        _, queue = client.get("/queue")
        assert [item[1] for item in queue["queue_running"]] == [prompt_id]
        assert client.post("/interrupt", {"prompt_id": "someone-else"})[0] == 200
        assert client.post("/interrupt", raw=b"")[0] == 200
        messages = of_prompt(until_done(ws, prompt_id), prompt_id)
    finally:
        ws.close()
    kinds = [m["type"] for m in messages if isinstance(m, dict) and m["type"] != "progress_state"]
    assert kinds[-2:] == ["execution_interrupted", "executing"]
    interrupted = [m for m in messages if isinstance(m, dict)][-2]["data"]
    # ComfyUI lists the nodes that ran before the interrupt (not the interrupted one)
    assert interrupted["node_id"] == "3"
    assert sorted(interrupted["executed"]) == ["4", "5", "6", "7"]
    progress = [m for m in messages if isinstance(m, dict) and m["type"] == "progress"]
    assert len(progress) < 199
    _, history = client.get(f"/history/{prompt_id}")
    status = history[prompt_id]["status"]
    assert status["status_str"] == "error" and status["completed"] is False
    assert status["messages"][-1][0] == "execution_interrupted"
    assert status["messages"][-1][1]["node_id"] == "3"
    assert status["messages"][-1][1]["executed"] == interrupted["executed"]


def test_a_prompt_is_always_queued_running_or_in_history(comfy: Comfy) -> None:
    """ComfyUI moves a finished prompt from the queue into its history in one step: a client
    that polls ``GET /queue`` and then reads ``GET /history/{id}`` never finds it in neither
    (50 prompts, a few queued at a time)."""
    _, client = comfy
    seeds = iter(range(1000, 1050))
    pending: list[str] = []
    finished = 0
    deadline = time.monotonic() + 180
    while finished < 50:
        assert time.monotonic() < deadline, f"{50 - finished} prompts not finished"
        while len(pending) < 3 and (seed := next(seeds, None)) is not None:
            pending.append(client.queue_prompt(txt2img(seed=seed, steps=1))["prompt_id"])
        _, queue = client.get("/queue")
        queued = {item[1] for item in queue["queue_running"] + queue["queue_pending"]}
        for prompt_id in [p for p in pending if p not in queued]:
            _, history = client.get(f"/history/{prompt_id}")
            assert prompt_id in history, f"{prompt_id} is neither queued nor in the history"
            pending.remove(prompt_id)
            finished += 1
    assert client.get("/prompt")[1] == {"exec_info": {"queue_remaining": 0}}


def test_system_stats_object_info_and_prompt_queue(comfy: Comfy) -> None:
    _, client = comfy
    status, stats = client.get("/system_stats")
    assert status == 200 and stats["system"]["comfyui_version"] and stats["devices"]
    _, info = client.get("/object_info")
    ckpt = info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"]
    assert "demo" in ckpt[0]
    width = info["EmptyLatentImage"]["input"]["required"]["width"]
    assert width[0] == "INT" and width[1]["min"] == 64 and width[1]["step"] == 8
    assert info["SaveImage"]["output_node"] is True
    assert client.get("/object_info/NoSuchNode") == (200, {})
    assert client.get("/prompt")[1] == {"exec_info": {"queue_remaining": 0}}
    assert json.dumps(client.get("/api/queue")[1]) == json.dumps(
        {"queue_running": [], "queue_pending": []}
    )


def _run(client: ComfyClient, seed: int) -> None:
    prompt_id = client.queue_prompt(txt2img(seed=seed, steps=1))["prompt_id"]
    deadline = time.monotonic() + 60
    while prompt_id not in client.get(f"/history/{prompt_id}")[1]:
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_free_unloads_the_diffusion_pipelines(comfy: Comfy) -> None:
    """``POST /free`` (``unload_models``, ``free_memory``) as ComfyUI's clients send it; the
    next prompt loads the model again."""
    _, client = comfy

    def loaded() -> list[str]:
        return list(client.get("/system_stats")[1]["system"]["takeflow_loaded_models"])

    _run(client, seed=31)
    assert loaded() == ["demo"]
    assert client.post("/free", {"unload_models": False, "free_memory": False})[0] == 200
    assert loaded() == ["demo"]
    assert client.post("/free", {"unload_models": True, "free_memory": True})[0] == 200
    assert loaded() == []
    _run(client, seed=32)
    assert loaded() == ["demo"]
