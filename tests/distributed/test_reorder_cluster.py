"""Reordering waiting tasks in distributed mode (``POST /api/v1/functions/tasks/{id}/position``):
two API replicas and one worker process with one slot (real processes) on a real PostgreSQL. A
move made through one replica is the order the other replica reports and the worker runs; other
users keep their turns; a task that is not waiting is refused with a stable code."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.distributed.cluster import Cluster, cluster
from tests.server.harness import ServerProcess
from tests.services import PostgresServer

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]
TASKS = "/api/v1/functions/tasks"
SHOT = "ch01/sc01/sh010"


@pytest.fixture(scope="module")
def tf(tmp_path_factory: pytest.TempPathFactory, pg_server: PostgresServer) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("reorder")
    with cluster(root, pg_server, None, apis=2, workers=1, concurrency=1) as c:
        c.apis[0].ok("POST", "/api/v1/projects", json={"project_id": "film", "name": "Film"})
        yield c


def wait_status(api: ServerProcess, task_id: str, want: set[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while (status := api.ok("GET", f"{TASKS}/{task_id}")["status"]) not in want:
        assert time.monotonic() < deadline, f"{task_id} stayed {status}"
        time.sleep(0.05)


def positions(api: ServerProcess) -> dict[str, Any]:
    """The queue panel's view: waiting tasks and their places in the whole queue."""
    body = api.ok("GET", TASKS, params={"status": "queued", "limit": 100})
    return {t["task_id"]: t["queue_position"] for t in body["tasks"]}


def test_a_moved_task_runs_at_its_new_place_and_other_users_keep_their_turns(
    tf: Cluster,
) -> None:
    a, b = tf.apis
    blocker = a.submit(
        "delay", {"seconds": 600, "steps": 2400, "value": "hold"}, project_id="film",
        shot_id=SHOT, user_id="ana",
    )  # fmt: skip
    wait_status(a, blocker, {"running"})  # the only slot: everything after it waits
    a1, b1, a2, a3 = (
        (a, b)[n % 2].submit("number", {"value": n}, project_id="film", shot_id=SHOT, user_id=u)
        for n, u in enumerate(["ana", "bob", "ana", "ana"])
    )
    assert positions(b) == {a1: 0, b1: 1, a2: 2, a3: 3}

    moved = a.ok("POST", f"{TASKS}/{a3}/position", json={"position": 0})
    assert moved == {"task_id": a3, "order": [a3, a1, a2], "queue_position": 0}
    assert positions(b) == {a3: 0, b1: 1, a1: 2, a2: 3}  # the other replica; bob keeps his turn
    assert b.ok("GET", f"{TASKS}/{a1}")["queue_position"] == 2
    moved = b.ok("POST", f"{TASKS}/{a1}/position", json={"position": 7})  # past the end: last
    assert moved == {"task_id": a1, "order": [a3, a2, a1], "queue_position": 3}
    assert positions(a) == {a3: 0, b1: 1, a2: 2, a1: 3}

    # refused: the running task, an unknown one
    for task_id, status, code in [
        (blocker, 409, "task_not_pending"),
        ("no-such-task", 404, "task_not_found"),
    ]:
        r = b.http.post(f"{TASKS}/{task_id}/position", json={"position": 0})
        assert (r.status_code, r.json()["code"]) == (status, code), r.text

    a.ok("POST", f"{TASKS}/{blocker}/cancel")
    order = [a3, b1, a2, a1]
    for task_id in order:
        wait_status(a, task_id, {"completed"})
    records = {t: a.ok("GET", f"{TASKS}/{t}") for t in order}
    started = [records[t]["started_at"] for t in order]
    finished = [records[t]["finished_at"] for t in order]
    assert started == sorted(started) and finished == sorted(finished), records
    r = a.http.post(f"{TASKS}/{a2}/position", json={"position": 0})
    assert (r.status_code, r.json()["code"]) == (409, "task_not_pending"), r.text
    assert r.json()["status"] == "completed"
