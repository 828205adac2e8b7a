"""Completion that API clients can rely on: ``?wait=`` on submit, and ``Idempotency-Key``."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server.harness import ServerProcess, running_server

pytestmark = pytest.mark.e2e
TASKS = "/api/v1/functions/tasks"


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("completion") / "home"


@pytest.fixture(scope="module")
def server(home: Path) -> Iterator[ServerProcess]:
    home.mkdir(parents=True)  # loopback receivers allowed, as a test's config would
    config = {
        "callbacks": {"allow_hosts": ["127.0.0.1"], "secret": "completion-secret-0123"},
        "admission": {"max_queued_per_user": 2},
    }
    (home / "config.json").write_text(json.dumps(config))
    with running_server(home) as srv:
        srv.ok("POST", "/api/v1/projects", json={"project_id": "film", "name": "Film"})
        yield srv


def _task(seconds: float, value: str, user: str = "client") -> dict[str, Any]:
    return {
        "template_id": "delay",
        "inputs": {"seconds": seconds, "steps": 2, "value": value},
        "project_id": "film",
        "user_id": user,
    }


def _tasks_of(server: ServerProcess, user: str) -> list[str]:
    listed = server.ok("GET", TASKS, params={"user_id": user, "limit": 200})["tasks"]
    return [t["task_id"] for t in listed]


def test_wait_answers_the_finished_task_with_its_takes(server: ServerProcess) -> None:
    response = server.http.post(TASKS, params={"wait": "30"}, json=_task(0.2, "waited"))
    assert response.status_code == 200, response.text
    done = response.json()
    assert done["status"] == "completed", done
    assert len(done["takes"]) == 1, done
    value = server.http.get(f"/api/v1/projects/film/files/{done['outputs']['value']['path']}")
    assert value.text == "waited"
    again = server.ok("GET", f"{TASKS}/{done['task_id']}")
    for field in ("task_id", "status", "takes", "outputs", "take", "commit", "result", "error"):
        assert done.get(field) == again.get(field), field


def test_a_run_waits_too(server: ServerProcess) -> None:
    graph = {
        "nodes": [
            {"id": "grain", "template": "noise_image",
             "inputs": {"width": {"kind": "literal", "value": 16},
                        "height": {"kind": "literal", "value": 16}}},
        ],
    }  # fmt: skip
    response = server.http.post(
        "/api/v1/runs", params={"wait": "30"}, json={"graph": graph, "project_id": "film"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "completed" and response.json()["takes"]


def test_wait_answers_202_with_the_task_id_when_the_task_outlives_it(
    server: ServerProcess,
) -> None:
    started = time.monotonic()
    response = server.http.post(TASKS, params={"wait": "0.5"}, json=_task(5, "slow"))
    took = time.monotonic() - started
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["status"] == "submitted" and body["tracking_id"].startswith("trk_")
    assert 0.5 <= took < 3.0, took
    server.ok("POST", f"{TASKS}/{body['task_id']}/cancel")


def test_a_batch_waits_for_every_task(server: ServerProcess) -> None:
    batches = "/api/v1/functions/batches"
    quick = {"tasks": [_task(0, "a", "batcher"), _task(0.1, "b", "batcher")]}
    done = server.http.post(batches, params={"wait": "30"}, json=quick)
    assert done.status_code == 200, done.text
    assert done.json()["finished"] and done.json()["counts"]["completed"] == 2
    slow = server.http.post(batches, params={"wait": "0.3"}, json={"tasks": [_task(5, "c")]})
    assert slow.status_code == 202 and slow.json()["status"] == "submitted", slow.text
    server.ok("POST", f"{TASKS}/{slow.json()['task_ids'][0]}/cancel")
    bad = server.http.post(batches, params={"wait": "301"}, json=quick)
    assert bad.status_code == 400 and bad.json()["field"] == "wait"


@pytest.mark.parametrize("wait", ["0", "-1", "300.5", "soon", "nan", "inf", ""])
def test_a_bad_wait_is_refused_naming_it(server: ServerProcess, wait: str) -> None:
    before = _tasks_of(server, "badwait")
    response = server.http.post(TASKS, params={"wait": wait}, json=_task(0, "x", "badwait"))
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "invalid_wait" and response.json()["field"] == "wait"
    assert "wait" in response.json()["message"]
    assert _tasks_of(server, "badwait") == before  # nothing was queued


def test_a_retried_submit_answers_the_first_task(server: ServerProcess) -> None:
    body = _task(0, "once", "retrier")
    key = {"Idempotency-Key": "order-4711"}
    first = server.http.post(TASKS, json=body, headers=key)
    assert first.status_code == 200 and "Idempotent-Replayed" not in first.headers
    second = server.http.post(TASKS, params={"wait": "30"}, json=body, headers=key)
    assert second.status_code == 200, second.text
    assert second.headers["Idempotent-Replayed"] == "true"
    assert second.json()["task_id"] == first.json()["task_id"]
    assert second.json()["status"] == "completed"  # a replay waits for the first task
    assert _tasks_of(server, "retrier") == [first.json()["task_id"]]

    other = server.http.post(TASKS, json=_task(0, "changed", "retrier"), headers=key)
    assert other.status_code == 422, other.text
    assert other.json()["code"] == "idempotency_key_reused"
    assert other.json()["task_id"] == first.json()["task_id"]
    # the same key of another user is that user's own
    theirs = server.http.post(TASKS, json=_task(0, "once", "someone"), headers=key)
    assert theirs.status_code == 200 and theirs.json()["task_id"] != first.json()["task_id"]
    bad = server.http.post(TASKS, json=body, headers={"Idempotency-Key": "has space"})
    assert bad.status_code == 400 and bad.json()["code"] == "invalid_idempotency_key"
    assert _tasks_of(server, "retrier") == [first.json()["task_id"]]


def test_a_refused_submit_does_not_keep_its_key(server: ServerProcess) -> None:
    for _ in range(8):  # two running, two queued: the user's queue is full
        if server.http.post(TASKS, json=_task(20, "filler", "limited")).status_code == 429:
            break
    key = {"Idempotency-Key": "after-429"}
    refused = server.http.post(TASKS, json=_task(0, "first", "limited"), headers=key)
    assert refused.status_code == 429, refused.text
    for task_id in _tasks_of(server, "limited"):
        server.ok("POST", f"{TASKS}/{task_id}/cancel")
    other = server.http.post(TASKS, json=_task(0, "second", "limited"), headers=key)
    assert other.status_code == 200, other.text  # the refused body did not claim the key
    again = server.http.post(TASKS, json=_task(0, "second", "limited"), headers=key)
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert again.json()["task_id"] == other.json()["task_id"]


def test_concurrent_retries_make_one_task(server: ServerProcess) -> None:
    body = _task(0, "race", "racer")

    def submit(_: int) -> httpx.Response:
        with httpx.Client(base_url=server.base, timeout=30) as client:
            return client.post(TASKS, json=body, headers={"Idempotency-Key": "race-1"})

    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(submit, range(8)))
    assert {r.status_code for r in responses} == {200}, [r.text for r in responses]
    ids = {r.json()["task_id"] for r in responses}
    assert len(ids) == 1 and _tasks_of(server, "racer") == list(ids)
    assert sum(r.headers.get("Idempotent-Replayed") == "true" for r in responses) == 7


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("http://10.1.2.3/hook", "callback_url_refused"),
        ("http://192.168.0.7:8080/hook", "callback_url_refused"),
        ("http://169.254.169.254/latest/meta-data", "callback_url_refused"),
        ("http://[::1]:9000/hook", "callback_url_refused"),
        ("http://[::ffff:10.0.0.1]/hook", "callback_url_refused"),
        ("http://127.0.0.2/hook", "callback_url_refused"),  # only 127.0.0.1 is allowed
        ("ftp://93.184.216.34/hook", "invalid_callback_url"),
        ("http://user:pw@93.184.216.34/hook", "invalid_callback_url"),
        ("not a url", "invalid_callback_url"),
    ],
)
def test_a_callback_url_to_a_private_target_is_refused_at_submit(
    server: ServerProcess, url: str, code: str
) -> None:
    for path, body in [
        (TASKS, {**_task(0, "cb", "caller"), "callback_url": url}),
        ("/api/v1/runs", {"graph": {"nodes": []}, "user_id": "caller", "callback_url": url}),
    ]:
        response = server.http.post(path, json=body)
        assert response.status_code == 422, response.text
        assert response.json()["code"] == code and response.json()["field"] == "callback_url"
        assert "callback_url" in response.json()["message"]
    assert _tasks_of(server, "caller") == []


def test_a_public_or_allowed_callback_url_is_accepted(server: ServerProcess) -> None:
    for url in ("https://93.184.216.34/hooks/takeflow", "http://127.0.0.1:9/allowed"):
        response = server.http.post(TASKS, json={**_task(0, "cb", "caller2"), "callback_url": url})
        assert response.status_code == 200, response.text


def test_the_openapi_document_names_wait_the_key_and_the_202(server: ServerProcess) -> None:
    paths = server.ok("GET", "/schema/openapi.json")["paths"]
    for path in (TASKS, "/api/v1/runs", "/api/v1/functions/batches"):
        post = paths[path]["post"]
        params = {(p["in"], p["name"]) for p in post.get("parameters", [])}
        assert ("query", "wait") in params, path
        assert "202" in post["responses"] and "200" in post["responses"], path
    for path in (TASKS, "/api/v1/runs"):
        params = {(p["in"], p["name"]) for p in paths[path]["post"]["parameters"]}
        assert ("header", "Idempotency-Key") in params, path


def test_keys_outlive_a_restart(server: ServerProcess, home: Path) -> None:
    body = _task(0, "durable", "restarter")
    key = {"Idempotency-Key": "durable-1"}
    first = server.ok("POST", TASKS, json=body, headers=key)["task_id"]
    server.stop()
    with running_server(home) as again:
        replay = again.http.post(TASKS, json=body, headers=key)
        assert replay.status_code == 200 and replay.headers["Idempotent-Replayed"] == "true"
        assert replay.json()["task_id"] == first
        assert _tasks_of(again, "restarter") == [first]
