"""Completion callbacks against a real HTTP receiver on loopback (allowed in the test config):
signed, retried with backoff, given up, per-project defaults, durable across a restart; and
``Idempotency-Key`` on batches."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.server.callback_receiver import CallbackReceiver, callback_receiver
from tests.server.harness import ServerProcess, running_server

pytestmark = pytest.mark.e2e
TASKS = "/api/v1/functions/tasks"
BATCHES = "/api/v1/functions/batches"
FILM_SECRET = "film-secret-0123456789"
POSTERS_SECRET = "posters-secret-9876543210"


@pytest.fixture(scope="module")
def receiver() -> Iterator[CallbackReceiver]:
    with callback_receiver() as rec:
        yield rec


def _write_config(home: Path, receiver: CallbackReceiver, **retry: float) -> None:
    home.mkdir(parents=True, exist_ok=True)
    callbacks = {
        "allow_hosts": ["127.0.0.1"],
        "projects": {
            "film": {"secret": FILM_SECRET},
            "posters": {"url": f"{receiver.url}/default", "secret": POSTERS_SECRET},
        },  # no global secret: a project without its own has none
        "attempts": 4,
        "backoff_s": 0.1,
        "max_backoff_s": 0.2,
        "poll_s": 0.05,
        "timeout_s": 5,
        **retry,
    }
    (home / "config.json").write_text(json.dumps({"callbacks": callbacks}))


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, receiver: CallbackReceiver
) -> Iterator[ServerProcess]:
    home = tmp_path_factory.mktemp("callbacks") / "home"
    _write_config(home, receiver)
    with running_server(home) as srv:
        for project in ("film", "posters", "plain"):
            srv.ok("POST", "/api/v1/projects", json={"project_id": project})
        yield srv


def _task(value: str, project: str = "film", seconds: float = 0, **fields: Any) -> dict[str, Any]:
    return {
        "template_id": "delay",
        "inputs": {"seconds": seconds, "steps": 2, "value": value},
        "project_id": project,
        **fields,
    }


def _callback_when(
    server: ServerProcess, task_id: str, state: str, timeout: float = 20.0
) -> dict[str, Any]:
    """The task's ``callback`` once its state is ``state``."""
    deadline = time.monotonic() + timeout
    while True:
        callback = server.ok("GET", f"{TASKS}/{task_id}")["callback"]
        if callback is not None and callback["state"] == state:
            return dict(callback)
        assert time.monotonic() < deadline, f"callback never {state}: {callback}"
        time.sleep(0.05)


def test_a_completed_task_is_called_back_signed(
    server: ServerProcess, receiver: CallbackReceiver
) -> None:
    url = f"{receiver.url}/signed?order=7"
    task_id = server.ok("POST", TASKS, json=_task("signed", callback_url=url))["task_id"]
    (got,) = receiver.wait_for("/signed?order=7")
    assert got.verifies(FILM_SECRET)
    assert not got.verifies(POSTERS_SECRET)
    assert got.headers["x-takeflow-signature"].startswith("sha256=")
    assert abs(int(got.headers["x-takeflow-timestamp"]) - time.time()) < 60
    body = got.json()
    assert body["task_id"] == task_id and body["status"] == "completed"
    assert body["event"] == "task.completed" == got.headers["x-takeflow-event"]
    assert body["delivery_id"] == got.headers["x-takeflow-delivery"]
    assert got.headers["x-takeflow-attempt"] == "1"
    assert body["project_id"] == "film" and len(body["takes"]) == 1 and body["error"] is None
    value = server.http.get(f"/api/v1/projects/film/files/{body['outputs']['value']['path']}")
    assert value.text == "signed"
    callback = _callback_when(server, task_id, "delivered")
    assert callback["attempts"] == 1 and callback["last_status"] == 200
    assert callback["delivery_id"] == body["delivery_id"] and callback["url"] == url
    assert callback["last_error"] is None


def test_a_receiver_that_fails_twice_gets_the_third_try(
    server: ServerProcess, receiver: CallbackReceiver
) -> None:
    receiver.answers["/flaky"] = [500, 503]
    body = _task("flaky", callback_url=f"{receiver.url}/flaky")
    task_id = server.ok("POST", TASKS, json=body)["task_id"]
    tries = receiver.wait_for("/flaky", 3)
    assert {t.headers["x-takeflow-delivery"] for t in tries} == {
        tries[0].json()["delivery_id"]
    }  # one delivery id: the receiver dedupes on it
    assert [t.headers["x-takeflow-attempt"] for t in tries] == ["1", "2", "3"]
    assert all(t.verifies(FILM_SECRET) for t in tries)
    assert tries[1].at - tries[0].at >= 0.09  # backoff 0.1 s, then 0.2 s
    assert tries[2].at - tries[1].at >= 0.18
    callback = _callback_when(server, task_id, "delivered")
    assert callback["attempts"] == 3 and callback["last_status"] == 200
    time.sleep(0.5)
    assert len(receiver.of_path("/flaky")) == 3


def test_a_receiver_that_keeps_failing_is_given_up_after_the_attempts(
    server: ServerProcess, receiver: CallbackReceiver
) -> None:
    receiver.answers["/down"] = [500] * 10
    body = _task("down", callback_url=f"{receiver.url}/down")
    task_id = server.ok("POST", TASKS, json=body)["task_id"]
    callback = _callback_when(server, task_id, "failed")
    assert callback["attempts"] == 4 and callback["last_status"] == 500
    assert callback["last_error"].startswith("HTTP 500")
    time.sleep(0.5)
    assert len(receiver.of_path("/down")) == 4


def test_a_projects_default_callback_applies_without_a_callback_url(
    server: ServerProcess, receiver: CallbackReceiver
) -> None:
    task_id = server.ok("POST", TASKS, json=_task("poster", project="posters"))["task_id"]
    (got,) = [r for r in receiver.wait_for("/default") if r.json()["task_id"] == task_id]
    assert got.verifies(POSTERS_SECRET) and not got.verifies(FILM_SECRET)
    assert server.ok("GET", f"{TASKS}/{task_id}")["callback"]["url"] == f"{receiver.url}/default"
    plain = server.ok("POST", TASKS, json=_task("plain", project="plain"))["task_id"]
    assert server.ok("GET", f"{TASKS}/{plain}")["callback"] is None


def test_a_cancelled_task_is_called_back_too(
    server: ServerProcess, receiver: CallbackReceiver
) -> None:
    body = _task("long", seconds=30, callback_url=f"{receiver.url}/cancelled")
    task_id = server.ok("POST", TASKS, json=body)["task_id"]
    assert server.ok("GET", f"{TASKS}/{task_id}")["callback"]["state"] == "waiting"
    server.ok("POST", f"{TASKS}/{task_id}/cancel")
    (got,) = receiver.wait_for("/cancelled")
    assert got.json()["status"] == "cancelled" and got.json()["event"] == "task.cancelled"


def test_a_run_and_a_batch_task_are_called_back(
    server: ServerProcess, receiver: CallbackReceiver
) -> None:
    graph = {"nodes": [{"id": "n", "template": "delay",
                        "inputs": {"seconds": {"kind": "literal", "value": 0}}}]}  # fmt: skip
    run = {"graph": graph, "project_id": "film", "callback_url": f"{receiver.url}/run"}
    run_id = server.ok("POST", "/api/v1/runs", json=run)["task_id"]
    batch = {"tasks": [_task(f"b{i}", callback_url=f"{receiver.url}/batch") for i in range(2)]}
    task_ids = server.ok("POST", BATCHES, json=batch)["task_ids"]
    assert receiver.wait_for("/run")[0].json()["task_id"] == run_id
    assert {r.json()["task_id"] for r in receiver.wait_for("/batch", 2)} == set(task_ids)


@pytest.mark.parametrize(
    ("project", "url", "code", "says"),
    [
        ("film", "http://10.0.0.5/hook", "callback_url_refused", "private"),
        ("film", "http://169.254.169.254/latest", "callback_url_refused", "private"),
        ("film", "http://127.0.0.9/hook", "callback_url_refused", "callbacks.allow_hosts"),
        ("plain", "http://127.0.0.1:9/hook", "callback_secret_missing", "callbacks.secret"),
        (None, "http://127.0.0.1:9/hook", "callback_secret_missing", "without a project"),
    ],
)
def test_a_callback_is_refused_at_submit_with_a_clear_error(
    server: ServerProcess, project: str | None, url: str, code: str, says: str
) -> None:
    def listed() -> set[str]:
        return {t["task_id"] for t in server.ok("GET", TASKS, params={"limit": 200})["tasks"]}

    before = listed()
    body = {**_task("no", callback_url=url), "project_id": project}
    response = server.http.post(TASKS, json=body)
    assert response.status_code == 422, response.text
    error = response.json()
    assert error["code"] == code and error["field"] == "callback_url"
    assert says in error["message"], error["message"]
    assert listed() == before


def test_a_retried_batch_submit_answers_the_first_batch(server: ServerProcess) -> None:
    batch = {"tasks": [_task("k1"), _task("k2")]}
    key = {"Idempotency-Key": "batch-1"}
    first = server.http.post(BATCHES, json=batch, headers=key)
    assert first.status_code == 200 and "Idempotent-Replayed" not in first.headers
    again = server.http.post(BATCHES, json=batch, headers=key)
    assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["batch_id"] == first.json()["batch_id"]
    assert again.json()["task_ids"] == first.json()["task_ids"]
    assert again.json()["tracking_ids"] == first.json()["tracking_ids"]
    tasks = server.ok("GET", TASKS, params={"batch_id": first.json()["batch_id"]})["tasks"]
    assert len(tasks) == 2
    other = server.http.post(BATCHES, json={"tasks": [_task("k3")]}, headers=key)
    assert other.status_code == 422 and other.json()["code"] == "idempotency_key_reused"
    waited = server.http.post(BATCHES, params={"wait": "30"}, json=batch, headers=key)
    assert waited.status_code == 200 and waited.json()["finished"] is True
    assert waited.headers["Idempotent-Replayed"] == "true"


def test_a_delivery_outlives_a_restart(tmp_path: Path, receiver: CallbackReceiver) -> None:
    """The first try fails; the server stops before its retry; the next server delivers it."""
    home = tmp_path / "home"
    _write_config(home, receiver, backoff_s=3.0, max_backoff_s=3.0)
    receiver.answers["/restart"] = [500]
    with running_server(home) as first:
        first.ok("POST", "/api/v1/projects", json={"project_id": "film"})
        body = _task("durable", callback_url=f"{receiver.url}/restart")
        task_id = first.ok("POST", TASKS, json=body)["task_id"]
        (failed,) = receiver.wait_for("/restart")
        callback = _callback_when(first, task_id, "retrying")
        assert callback["attempts"] == 1 and callback["last_status"] == 500
    assert len(receiver.of_path("/restart")) == 1  # the stopped server did not retry
    with running_server(home) as second:
        tries = receiver.wait_for("/restart", 2)
        assert tries[1].headers["x-takeflow-delivery"] == failed.headers["x-takeflow-delivery"]
        assert tries[1].headers["x-takeflow-attempt"] == "2"
        assert tries[1].verifies(FILM_SECRET) and tries[1].json()["task_id"] == task_id
        callback = _callback_when(second, task_id, "delivered")
        assert callback["attempts"] == 2
