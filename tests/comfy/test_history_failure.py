"""A prompt whose history entry cannot be written still leaves the queue: built entries that
fail become an ``execution_error`` entry; a store that refuses the entry keeps the prompt
counted as running for ``HISTORY_SETTLE_S`` at most."""

from __future__ import annotations

import time
from typing import Any

import pytest
from litestar.testing import TestClient

import server.comfy.service as service_module
from server.comfy.store import ComfyStore
from tests.comfy.client import txt2img
from tests.comfy.test_validated_once import finished


def queued(client: TestClient[Any]) -> list[str]:
    queue = client.get("/api/queue").json()
    return [item[1] for item in queue["queue_running"] + queue["queue_pending"]]


def test_a_history_that_cannot_be_built_ends_the_prompt_with_an_error(
    app_client: TestClient[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any) -> dict[str, Any]:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(service_module, "build_history", broken)
    prompt_id = app_client.post("/api/prompt", json={"prompt": txt2img(seed=21)}).json()[
        "prompt_id"
    ]
    entry = finished(app_client, prompt_id)
    status = entry["status"]
    assert status["status_str"] == "error" and status["completed"] is False
    kind, data = status["messages"][-1]
    assert kind == "execution_error" and data["exception_type"] == "history_failed"
    assert "disk on fire" in data["exception_message"]
    assert entry["takeflow"]["status"] == "completed"  # the task and its take stand
    assert queued(app_client) == []
    assert app_client.get("/api/prompt").json() == {"exec_info": {"queue_remaining": 0}}


def test_a_history_the_store_refuses_leaves_the_queue_in_time(
    app_client: TestClient[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    refused: list[float] = []

    def refuse(self: ComfyStore, prompt_id: str, history: dict[str, Any]) -> None:
        refused.append(time.monotonic())
        raise OSError("database is locked")

    monkeypatch.setattr(ComfyStore, "set_history", refuse)
    monkeypatch.setattr(service_module, "HISTORY_SETTLE_S", 3.0)
    prompt_id = app_client.post("/api/prompt", json={"prompt": txt2img(seed=22)}).json()[
        "prompt_id"
    ]
    deadline = time.monotonic() + 60
    while not refused:  # the task ended and its history could not be stored
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert queued(app_client) == [prompt_id]  # still running: not in the history yet
    assert app_client.get(f"/api/history/{prompt_id}").json() == {}
    while queued(app_client):
        assert time.monotonic() < refused[0] + 10, "a prompt without history counted forever"
        time.sleep(0.1)
    assert app_client.get("/api/prompt").json() == {"exec_info": {"queue_remaining": 0}}
