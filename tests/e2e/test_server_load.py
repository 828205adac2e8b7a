"""A shared server under load: queue limits (429 + Retry-After, nothing stored, batches whole),
fair turns between users, queue positions and estimates, and a clean project repository.

One real server (one worker) with ``admission.max_queued`` 6 and ``max_queued_per_user`` 4; a
long ``delay`` task holds the worker while the queue fills, then is cancelled.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.server.harness import ServerProcess

pytestmark = pytest.mark.e2e
SHOT = "ch01/sc01/sh010"
TASKS = "/api/v1/functions/tasks"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    home = tmp_path_factory.mktemp("load") / "home"
    home.mkdir(parents=True)
    limits = {"max_queued": 6, "max_queued_per_user": 4}
    (home / "config.json").write_text(json.dumps({"admission": limits}))
    with ServerProcess(home, workers=1) as running:
        running.ok("POST", "/api/v1/projects", json={"project_id": "film"})
        yield running


def status(server: ServerProcess, task_id: str) -> dict[str, Any]:
    return dict(server.ok("GET", f"{TASKS}/{task_id}"))


def wait_status(server: ServerProcess, task_id: str, wanted: set[str]) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while (body := status(server, task_id))["status"] not in wanted:
        assert time.monotonic() < deadline, body
        time.sleep(0.05)
    return body


def number(user: str, value: int = 1) -> dict[str, Any]:
    return {"template_id": "number", "inputs": {"value": value}, "user_id": user}


def stored_by_user(server: ServerProcess) -> dict[str, int]:
    with sqlite3.connect(server.home / "state.db") as db:
        rows = db.execute(
            "SELECT json_extract(record, '$.user'), count(*) FROM tasks GROUP BY 1"
        ).fetchall()
        orphans = db.execute(
            "SELECT count(*) FROM events WHERE task_id NOT IN (SELECT task_id FROM tasks)"
        ).fetchone()[0]
    assert orphans == 0  # no event of a refused request
    return dict(rows)


def test_limits_fair_turns_positions_and_estimates(server: ServerProcess) -> None:
    for value in (1, 2):  # measured throughput: a couple of finished tasks
        wait_status(server, server.submit("number", {"value": value}), {"completed"})
    blocker = server.submit("delay", {"seconds": 60, "steps": 600}, user_id="blocker")
    wait_status(server, blocker, {"running"})

    answers = [server.ok("POST", TASKS, json=number("alice", i)) for i in range(4)]
    alice = [a["task_id"] for a in answers]
    estimates = [a["estimated_seconds"] for a in answers]
    assert estimates == sorted(estimates) and estimates[-1] > estimates[0], estimates
    assert [status(server, t)["queue_position"] for t in alice] == [0, 1, 2, 3]

    refused = server.http.post(TASKS, json=number("alice"))
    assert refused.status_code == 429
    body = refused.json()
    assert body["code"] == "queue_full" and body["limit"] == "user" and body["user"] == "alice"
    assert (body["max_queued"], body["queued"]) == (4, 4)
    assert int(refused.headers["Retry-After"]) == body["retry_after_s"] >= 1

    too_big = {"tasks": [number("bob", i) for i in range(3)]}
    refused = server.http.post("/api/v1/functions/batches", json=too_big)
    assert refused.status_code == 429 and refused.json()["limit"] == "overall"
    assert "bob" not in stored_by_user(server)  # the batch was refused whole, nothing stored

    batch = server.ok("POST", "/api/v1/functions/batches", json={"tasks": too_big["tasks"][:2]})
    bob = batch["task_ids"]
    # Users take turns: alice's first, bob's first, alice's second, bob's second, ...
    order = [alice[0], bob[0], alice[1], bob[1], alice[2], alice[3]]
    assert [status(server, t)["queue_position"] for t in order] == [0, 1, 2, 3, 4, 5]
    assert stored_by_user(server)["alice"] == 4
    full = server.http.post(TASKS, json=number("carol"))
    assert full.status_code == 429 and full.json()["limit"] == "overall"

    server.ok("POST", f"{TASKS}/{alice[1]}/cancel")  # a cancelled task leaves the queue
    order = [alice[0], bob[0], alice[2], bob[1], alice[3]]  # turns go on; a2, a3 moved up
    assert [status(server, t)["queue_position"] for t in order] == [0, 1, 2, 3, 4]
    assert status(server, alice[1])["queue_position"] is None
    first = status(server, bob[1])
    assert first["estimated_seconds"] > 0 and first["estimated_completion"]

    server.ok("POST", f"{TASKS}/{blocker}/cancel")
    for task_id in (*bob, alice[0], *alice[2:]):
        done = wait_status(server, task_id, {"completed"})
        assert done["queue_position"] is None and done["estimated_seconds"] is None


def test_takes_and_set_active_leave_the_project_repository_clean(server: ServerProcess) -> None:
    image = {"width": 8, "height": 8, "color": "#336699"}
    tasks = [server.submit("solid_image", image, project_id="film", shot_id=SHOT) for _ in range(3)]
    for task_id in tasks:
        wait_status(server, task_id, {"completed"})
    project = server.home / "projects" / "film"
    assert git(project, "status", "--porcelain", "--untracked-files=all") == ""
    server.ok(
        "PUT", "/api/v1/projects/film/takes/active", json={"shot_id": SHOT, "take_id": "take_002"}
    )
    assert git(project, "status", "--porcelain", "--untracked-files=all") == ""
    tracked = git(project, "ls-files", f"03_Renders/{SHOT}/takes/active.json")
    assert tracked.strip() == f"03_Renders/{SHOT}/takes/active.json"
    shown = git(project, "show", f"HEAD:03_Renders/{SHOT}/takes/active.json")
    assert json.loads(shown) == {"take_id": "take_002"}


def git(project: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", *args], cwd=project, capture_output=True, text=True, check=True, timeout=60
    )
    return done.stdout


def test_a_take_left_uncommitted_at_stop_is_committed_on_restart(tmp_path: Path) -> None:
    home = tmp_path / "home"
    image = {"width": 8, "height": 8, "color": "#aa3300"}
    with ServerProcess(home, workers=1) as first:
        first.ok("POST", "/api/v1/projects", json={"project_id": "film"})
        project = home / "projects" / "film"
        lock = project / ".git" / "index.lock"
        lock.write_text("")  # git is busy: the take is stored, its commit fails
        task_id = first.submit("solid_image", image, project_id="film", shot_id=SHOT)
        done = wait_status(first, task_id, {"completed"})
        assert done["commit"] is None
    take_dir = done["take"]["path"]
    assert git(project, "status", "--porcelain", "--untracked-files=all").strip()
    lock.unlink()
    with ServerProcess(home, workers=1):
        assert git(project, "status", "--porcelain", "--untracked-files=all") == ""
        head = git(project, "log", "-1", "--name-only", "--format=%B")
        assert "Takeflow-Recovery: yes" in head and f"{take_dir}/take.json" in head
