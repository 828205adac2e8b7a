"""``POST /api/v1/functions/tasks/{id}/position`` on a real server: a user's queued task moves
up its owner's line, runs at its new place, keeps it across a restart, and a task that is not
waiting (running, cancelled, unknown) is refused with a stable code."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.server.harness import ServerProcess

pytestmark = pytest.mark.e2e
TASKS = "/api/v1/functions/tasks"
SHOT = "ch01/sc01/sh010"


def wait_status(server: ServerProcess, task_id: str, want: set[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while (status := server.ok("GET", f"{TASKS}/{task_id}")["status"]) not in want:
        assert time.monotonic() < deadline, f"{task_id} stayed {status}"
        time.sleep(0.05)


def hold(server: ServerProcess) -> str:
    """A long task on the only worker: everything queued after it waits."""
    blocker = server.submit(
        "delay", {"seconds": 600, "steps": 2400, "value": "hold"}, project_id="film",
        shot_id=SHOT, user_id="ana",
    )  # fmt: skip
    wait_status(server, blocker, {"running"})
    return blocker


def positions(server: ServerProcess) -> dict[str, Any]:
    body = server.ok("GET", TASKS, params={"status": "queued", "limit": 100})
    return {t["task_id"]: t["queue_position"] for t in body["tasks"]}


def test_a_moved_task_runs_at_its_new_place_also_after_a_restart(tmp_path: Path) -> None:
    home = tmp_path / "home"
    server = ServerProcess(home, workers=1)
    try:
        server.wait_ready()
        server.ok("POST", "/api/v1/projects", json={"project_id": "film"})
        blocker = hold(server)
        a1, b1, a2, a3 = (
            server.submit("number", {"value": n}, project_id="film", shot_id=SHOT, user_id=u)
            for n, u in enumerate(["ana", "bob", "ana", "ana"])
        )
        assert positions(server) == {a1: 0, b1: 1, a2: 2, a3: 3}

        moved = server.ok("POST", f"{TASKS}/{a3}/position", json={"position": 0})
        assert moved == {"task_id": a3, "order": [a3, a1, a2], "queue_position": 0}
        assert positions(server) == {a3: 0, b1: 1, a1: 2, a2: 3}  # bob keeps his turn

        # refused: the running task, a cancelled one, an unknown one, a bad position
        for task_id, status, code in [
            (blocker, 409, "task_not_pending"),
            ("no-such-task", 404, "task_not_found"),
        ]:
            r = server.http.post(f"{TASKS}/{task_id}/position", json={"position": 0})
            assert (r.status_code, r.json()["code"]) == (status, code), r.text
        spare = server.submit(
            "number", {"value": 9}, project_id="film", shot_id=SHOT, user_id="ana"
        )
        server.ok("POST", f"{TASKS}/{spare}/cancel")
        r = server.http.post(f"{TASKS}/{spare}/position", json={"position": 0})
        assert (r.status_code, r.json()["code"]) == (409, "task_not_pending")
        assert "cancelled" in r.json()["message"] and r.json()["status"] == "cancelled"
        r = server.http.post(f"{TASKS}/{a1}/position", json={"position": -1})
        assert 400 <= r.status_code < 500 and "position" in r.text, r.text

        # a restart re-queues the waiting tasks in their moved order
        server.stop()
        server = ServerProcess(home, workers=1)
        server.wait_ready()
        for task_id in (a3, b1, a1, a2):
            wait_status(server, task_id, {"completed"})
        started = {t: server.ok("GET", f"{TASKS}/{t}")["started_at"] for t in (a3, a1, a2)}
        assert started[a3] < started[a1] < started[a2], started
    finally:
        server.stop()


def test_a_task_moved_while_others_wait_runs_before_them(tmp_path: Path) -> None:
    with ServerProcess(tmp_path / "home", workers=1) as server:
        server.ok("POST", "/api/v1/projects", json={"project_id": "film"})
        blocker = hold(server)
        first, second, third = (
            server.submit("number", {"value": n}, project_id="film", shot_id=SHOT, user_id="ana")
            for n in range(3)
        )
        server.ok("POST", f"{TASKS}/{third}/position", json={"position": 1})
        server.ok("POST", f"{TASKS}/{blocker}/cancel")
        for task_id in (first, second, third):
            wait_status(server, task_id, {"completed"})
        started = {
            t: server.ok("GET", f"{TASKS}/{t}")["started_at"] for t in (first, second, third)
        }
        assert started[first] < started[third] < started[second], started
