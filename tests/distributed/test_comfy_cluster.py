"""The ComfyUI API in distributed mode: two API replicas (``serve --demo --comfy-port``) and one
worker on a real PostgreSQL and redis-server. A prompt posted on one replica streams live on any
replica's socket, its history and output files are written once and read on both, a client
moving to the other replica catches up and follows to the end, ``/queue`` agrees everywhere,
and an upload is committed through the commit queue under the cross-process git lock."""

from __future__ import annotations

import io
import json
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from PIL import Image

from tests.comfy.client import ComfyClient, Message, of_prompt, recv, txt2img, until_done
from tests.comfy.conftest import wait_compat
from tests.distributed.cluster import ComfyCluster, comfy_cluster
from tests.services import PostgresServer, RedisServer, redis_server

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]
CONFIG = {"diffusion": {"batch_window_ms": 0, "preview_every": 5}}
DONE_S = 30.0  # a tiny prompt ends within seconds: waiting longer only hides a lost message


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, pg_server: PostgresServer
) -> Iterator[tuple[ComfyCluster, ComfyClient, ComfyClient]]:
    from nodes.diffusion.demo import build_random_pipeline

    root = tmp_path_factory.mktemp("comfy-cluster")
    demo = build_random_pipeline(root / "demo", "tiny", seed=0)
    redis: RedisServer
    with redis_server() as redis, comfy_cluster(root, pg_server, redis, demo, config=CONFIG) as c:
        for base in c.comfy_bases:
            wait_compat(base)
        a, b = (ComfyClient(base) for base in c.comfy_bases)
        yield c, a, b


Cluster = tuple[ComfyCluster, ComfyClient, ComfyClient]


def texts(messages: list[Message]) -> list[str]:
    return [json.dumps(m, sort_keys=True) for m in messages if isinstance(m, dict)]


def assert_status(message: Message) -> None:
    assert isinstance(message, dict) and message["type"] == "status", message


def kinds(messages: list[Message]) -> list[str]:
    """The message types, without ``progress_state`` (tests/comfy/test_previews.py checks it)."""
    return [m["type"] for m in messages if isinstance(m, dict) and m["type"] != "progress_state"]


def until(ws: Any, prompt_id: str, kind: str, step: int = 0) -> list[Message]:
    """Messages up to the prompt's first ``kind`` (included; a ``progress`` of ``step`` on)."""
    got: list[Message] = []
    deadline = time.monotonic() + DONE_S
    while time.monotonic() < deadline:
        message = recv(ws)
        got.append(message)
        if not isinstance(message, dict) or message["type"] != kind:
            continue
        data = message["data"]
        if data.get("prompt_id") == prompt_id and data.get("value", step) >= step:
            return got
    raise TimeoutError(f"no {kind} for {prompt_id}: {got[-5:]}")


def queue_ids(client: ComfyClient) -> tuple[list[str], list[str]]:
    status, queue = client.get("/queue")
    assert status == 200
    return [i[1] for i in queue["queue_running"]], [i[1] for i in queue["queue_pending"]]


def wait_queues_empty(*clients: ComfyClient, prompt_id: str) -> None:
    """Both replicas agree: the finished prompt left the queue (and nothing is left)."""
    deadline = time.monotonic() + 10
    while True:
        seen = [queue_ids(c) for c in clients] + [c.get("/prompt")[1] for c in clients]
        if seen == [([], [])] * len(clients) + [{"exec_info": {"queue_remaining": 0}}] * len(
            clients
        ):
            return
        assert time.monotonic() < deadline, f"{prompt_id} still queued: {seen}"
        time.sleep(0.05)


def sql(c: ComfyCluster, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(c.env["TAKEFLOW_DATABASE_URL"]) as conn:
        return conn.execute(query, params).fetchall()


def history(client: ComfyClient, prompt_id: str) -> dict[str, Any]:
    status, body = client.get(f"/history/{prompt_id}")
    assert status == 200 and prompt_id in body, body
    return dict(body[prompt_id])


def test_prompt_on_a_streams_live_history_once_on_both_and_view(cluster: Cluster) -> None:
    c, a, b = cluster
    client_id = uuid.uuid4().hex
    prompt = txt2img(seed=1, steps=3)
    prompt["9"]["inputs"]["filename_prefix"] = "once/live"
    ws = a.connect(client_id)
    try:
        assert_status(recv(ws))
        prompt_id = a.queue_prompt(prompt, client_id)["prompt_id"]
        messages = of_prompt(until_done(ws, prompt_id, timeout=DONE_S), prompt_id)
    finally:
        ws.close()
    got = kinds(messages)
    assert got[:2] == ["execution_start", "execution_cached"]
    assert got[-3:] == ["executed", "execution_success", "executing"]
    assert [m["data"]["value"] for m in messages if isinstance(m, dict) and m["type"] == "progress"
            ] == [1, 2, 3]  # fmt: skip
    entry = history(a, prompt_id)
    assert history(b, prompt_id) == entry  # the other replica reads the same store
    assert entry["status"]["status_str"] == "success"
    images = entry["outputs"]["9"]["images"]
    assert images == [{"filename": "live_00001_.png", "subfolder": "once", "type": "output"}]
    # written once, though both replicas saw the task end
    assert sorted(p.name for p in (c.home / "comfyui" / "output" / "once").iterdir()) == [
        "live_00001_.png"
    ]
    for client in (a, b):
        status, data = client.view(images[0])
        assert status == 200 and Image.open(io.BytesIO(data)).size == (64, 64)
    wait_queues_empty(a, b, prompt_id=prompt_id)


def test_reconnect_to_the_other_replica_mid_run_catches_up_then_follows(cluster: Cluster) -> None:
    """A -> B at once (as a load balancer moves a client), then back to A: no gap, and
    nothing sent twice once the position is saved (A remembers an older one)."""
    c, a, b = cluster
    client_id = uuid.uuid4().hex
    steps = 20  # long enough to move mid-run (~0.2 s a step at 128x128 on 2 busy cores)
    ws = a.connect(client_id)
    try:
        prompt_id = a.queue_prompt(txt2img(seed=2, size=128, steps=steps), client_id)["prompt_id"]
        first = of_prompt(until(ws, prompt_id, "progress"), prompt_id)
    finally:
        ws.close()
    ws = b.connect(client_id)
    try:
        assert_status(recv(ws))
        for client in (a, b):  # both replicas see it running, neither lists it as pending
            assert queue_ids(client) == ([prompt_id], [])
        second = of_prompt(until(ws, prompt_id, "progress", step=3), prompt_id)
    finally:
        ws.close()
    one, two = texts(first), texts(second)
    overlap = [t for t in two if t in one]  # what A sent but had not saved as delivered yet
    assert overlap == one[len(one) - len(overlap) :]  # at most a tail of A's, nothing older
    seen = len(set(one + two))  # previews come from step 5 on: every message so far is text
    deadline = time.monotonic() + 10
    while not sql(c, "SELECT 1 FROM takeflow_comfy_deliveries WHERE client_id = %s AND "
                  "prompt_id = %s AND position >= %s", client_id, prompt_id, seen):  # fmt: skip
        assert time.monotonic() < deadline, "B never saved the client's position"
        time.sleep(0.02)
    ws = a.connect(client_id)
    try:
        assert_status(recv(ws))
        third = of_prompt(until_done(ws, prompt_id, timeout=DONE_S), prompt_id)
    finally:
        ws.close()
    three = texts(third)
    assert not set(three) & set(one + two)  # A resumes where B's saved position says
    whole = one + [t for t in two if t not in one] + three
    assert len(whole) == len(set(whole))
    progress = [json.loads(t)["data"]["value"] for t in whole if '"progress"' in t]
    assert progress == list(range(1, steps + 1))  # no gap, nothing twice
    executing = [json.loads(t)["data"]["node"] for t in whole if '"executing"' in t]
    assert executing == ["4", "5", "6", "7", "3", "8", "9", None]
    assert kinds(third)[-3:] == ["executed", "execution_success", "executing"]
    assert history(b, prompt_id) == history(a, prompt_id)
    wait_queues_empty(a, b, prompt_id=prompt_id)


def test_interrupt_on_b_stops_a_prompt_posted_on_a(cluster: Cluster) -> None:
    _, a, b = cluster
    client_id = uuid.uuid4().hex
    ws = b.connect(client_id)  # the socket on B follows a prompt posted on A
    try:
        prompt_id = a.queue_prompt(txt2img(seed=3, size=128, steps=200), client_id)["prompt_id"]
        until(ws, prompt_id, "progress")
        assert queue_ids(b) == ([prompt_id], [])
        assert b.post("/interrupt", {"prompt_id": prompt_id})[0] == 200
        messages = of_prompt(until_done(ws, prompt_id, timeout=DONE_S), prompt_id)
    finally:
        ws.close()
    assert kinds(messages)[-2:] == ["execution_interrupted", "executing"]
    assert sum(1 for k in kinds(messages) if k == "progress") < 199
    status = history(a, prompt_id)["status"]
    assert status["status_str"] == "error" and status["messages"][-1][0] == "execution_interrupted"
    wait_queues_empty(a, b, prompt_id=prompt_id)


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, capture_output=True, text=True, check=True
    ).stdout


def test_upload_then_img2img_commits_the_upload_once_under_the_git_lock(cluster: Cluster) -> None:
    c, a, b = cluster
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (20, 160, 90)).save(buf, format="PNG")
    status, uploaded = a.upload("plate.png", buf.getvalue())
    assert status == 200, uploaded
    prompt = txt2img(seed=4)
    prompt["10"] = {"class_type": "LoadImage", "inputs": {"image": uploaded["name"]}}
    prompt["11"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["10", 0], "vae": ["4", 2]}}
    prompt["3"]["inputs"].update(latent_image=["11", 0], denoise=0.5)
    del prompt["5"]
    client_id = uuid.uuid4().hex
    answer: dict[str, Any] = {}
    ws = b.connect(client_id)
    try:
        # Hold the project's git lock (as a worker committing a take would): the upload's
        # commit, made while B accepts the prompt, must wait for it.
        with psycopg.connect(c.env["TAKEFLOW_DATABASE_URL"], autocommit=True) as conn:
            conn.execute("SELECT pg_advisory_lock(hashtext('git:comfyui'))")
            posting = threading.Thread(
                target=lambda: answer.update(b.queue_prompt(prompt, client_id)), daemon=True
            )
            posting.start()
            posting.join(1.5)
            assert posting.is_alive(), "the upload was committed past the git lock"
            conn.execute("SELECT pg_advisory_unlock(hashtext('git:comfyui'))")
        posting.join(DONE_S)
        prompt_id = answer["prompt_id"]
        messages = of_prompt(until_done(ws, prompt_id, timeout=DONE_S), prompt_id)
    finally:
        ws.close()
    assert kinds(messages)[-2:] == ["execution_success", "executing"]
    assert history(a, prompt_id)["status"]["status_str"] == "success"
    repo = c.home / "projects" / "comfyui"
    assets = "01_Assets/uploads/comfyui"
    log = git(repo, "log", "--format=%s", "--", assets).splitlines()
    assert log == [f"ComfyUI input {uploaded['name']}"]  # one commit for the upload's file
    assert git(repo, "status", "--porcelain", "--", assets) == ""
    logs = "".join(api.log.read_text(errors="replace") for api in c.apis)
    assert "could not commit" not in logs and "git commit failed" not in logs
    wait_queues_empty(a, b, prompt_id=prompt_id)
