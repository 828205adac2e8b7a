"""A ComfyUI API client written from the protocol, as ComfyUI's published example scripts
behave: ``urllib`` posts (JSON sent as form-urlencoded), ``websocket-client`` for ``/ws``."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from typing import Any

import websocket

Message = dict[str, Any] | bytes


class ComfyClient:
    def __init__(self, base: str, token: str | None = None) -> None:
        self.base = base.rstrip("/")
        self.ws_base = self.base.replace("http://", "ws://", 1)
        self.token = token

    def _request(
        self,
        method: str,
        path: str,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes]:
        request = urllib.request.Request(
            f"{self.base}{path}", data=data, method=method, headers=headers or {}
        )
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def get(self, path: str) -> tuple[int, Any]:
        status, body = self._request("GET", path)
        try:
            return status, json.loads(body) if body else None
        except ValueError:
            return status, body

    def get_bytes(self, path: str) -> tuple[int, bytes]:
        return self._request("GET", path)

    def post(self, path: str, body: Any = None, raw: bytes | None = None) -> tuple[int, Any]:
        """POST like the examples: ``urllib`` with a body and no JSON Content-Type."""
        data = raw if raw is not None else json.dumps(body).encode()
        status, answer = self._request("POST", path, data)
        try:
            return status, json.loads(answer) if answer else None
        except ValueError:
            return status, answer

    def queue_prompt(
        self, prompt: dict[str, Any], client_id: str | None = None, **fields: Any
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"prompt": prompt, **fields}
        if client_id is not None:
            body["client_id"] = client_id
        status, answer = self.post("/prompt", body)
        assert status == 200, f"{status}: {answer}"
        return dict(answer)

    def view(self, image: dict[str, str]) -> tuple[int, bytes]:
        query = urllib.parse.urlencode(
            {"filename": image["filename"], "subfolder": image["subfolder"], "type": image["type"]}
        )
        return self.get_bytes(f"/view?{query}")

    def upload(self, name: str, data: bytes, **fields: str) -> tuple[int, Any]:
        boundary = uuid.uuid4().hex
        parts = [
            f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n'.encode()
            + f"{value}\r\n".encode()
            for key, value in fields.items()
        ]
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{name}"'
            f"\r\nContent-Type: image/png\r\n\r\n".encode()
            + data
            + b"\r\n"
        )
        body = b"".join(parts) + f"--{boundary}--\r\n".encode()
        status, answer = self._request(
            "POST",
            "/upload/image",
            body,
            {"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
        return status, json.loads(answer) if answer else None

    def connect(self, client_id: str, timeout: float = 20.0) -> websocket.WebSocket:
        url = f"{self.ws_base}/ws?clientId={client_id}"
        if self.token:
            url += f"&token={self.token}"
        return websocket.create_connection(url, timeout=timeout)


def recv(ws: websocket.WebSocket) -> Message:
    raw = ws.recv()
    return raw if isinstance(raw, bytes) else json.loads(raw)


def until_done(ws: websocket.WebSocket, prompt_id: str, timeout: float = 60.0) -> list[Message]:
    """Every message up to ``executing`` with ``node: null`` for ``prompt_id`` (included)."""
    got: list[Message] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = recv(ws)
        got.append(message)
        if (
            isinstance(message, dict)
            and message["type"] == "executing"
            and message["data"]["node"] is None
            and message["data"]["prompt_id"] == prompt_id
        ):
            return got
    raise TimeoutError(f"prompt {prompt_id} not done within {timeout}s: {got[-5:]}")


def of_prompt(messages: list[Message], prompt_id: str) -> list[Message]:
    """The prompt's messages (binary frames included; ``status`` left out)."""
    return [m for m in messages if isinstance(m, bytes) or m["data"].get("prompt_id") == prompt_id]


def txt2img(
    seed: int = 5,
    size: int = 64,
    steps: int = 2,
    batch: int = 1,
    ckpt: str = "demo",
    save: str = "SaveImage",
) -> dict[str, Any]:
    """ComfyUI's default text-to-image graph (node ids as the examples), tiny."""
    output: dict[str, Any] = {"class_type": save, "inputs": {"images": ["8", 0]}}
    if save == "SaveImage":
        output["inputs"]["filename_prefix"] = "ComfyUI"
    return {
        "3": {
            "class_type": "KSampler",
            "inputs": {
                "seed": seed,
                "steps": steps,
                "cfg": 8,
                "sampler_name": "euler",
                "scheduler": "normal",
                "denoise": 1,
                "model": ["4", 0],
                "positive": ["6", 0],
                "negative": ["7", 0],
                "latent_image": ["5", 0],
            },
        },
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "5": {
            "class_type": "EmptyLatentImage",
            "inputs": {"width": size, "height": size, "batch_size": batch},
        },
        "6": {
            "class_type": "CLIPTextEncode",
            "inputs": {"text": "masterpiece best quality girl", "clip": ["4", 1]},
        },
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "bad hands", "clip": ["4", 1]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "save_image_websocket_node" if save == "SaveImageWebsocket" else "9": output,
    }
