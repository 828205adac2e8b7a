"""Faults through the real server: a template that raises or hangs, a full disk, a held git lock.

Each ends its task with a clear error event (git: the take waits uncommitted), other tasks keep
running, and ``/health`` says ``degraded`` with the reason until the fault clears. Test templates
come from a third-party pack on ``PYTHONPATH`` (entry points); storage faults from the test-only
plugin ``tests.server.faults``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.server.fault_templates import HANG_LIMIT_S, write_pack
from tests.server.faults import clear_faults, set_storage_fault
from tests.server.harness import ServerProcess, running_server

pytestmark = pytest.mark.e2e
SHOT = "ch01/sc01/sh010"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("faults")
    pack = write_pack(root / "pack")
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(pack), os.environ.get("PYTHONPATH")]))}
    with running_server(root / "home", "--plugin", "tests.server.faults", env=env) as srv:
        srv.ok("POST", "/api/v1/projects", json={"project_id": "film"})
        yield srv


def wait_terminal(server: ServerProcess, task_id: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status = server.ok("GET", f"/api/v1/functions/tasks/{task_id}")
        if status["status"] in ("completed", "failed", "cancelled"):
            return status
        assert time.monotonic() < deadline, f"{task_id} still {status['status']}"
        time.sleep(0.05)


def last_event(server: ServerProcess, task_id: str) -> dict[str, Any]:
    events = server.stored_events(task_id)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    return events[-1]


def check(server: ServerProcess, name: str) -> tuple[str, dict[str, Any]]:
    report = server.ok("GET", "/health")
    return report["status"], next(c for c in report["checks"] if c["name"] == name)


def image(server: ServerProcess, seed: int) -> str:
    inputs = {"width": 8, "height": 8, "seed": seed}
    return server.submit("noise_image", inputs, project_id="film", shot_id=SHOT)


def test_pack_templates_are_served(server: ServerProcess) -> None:
    templates = {t["id"]: t for t in server.ok("GET", "/api/v1/functions/templates")}
    assert {"boom", "hang", "noise_image"} <= set(templates)


def test_template_that_raises_fails_its_task_only_and_degrades_health(
    server: ServerProcess,
) -> None:
    broken = server.submit("boom", {"explode": True}, project_id="film", shot_id=SHOT)
    other = server.submit("delay", {"seconds": 0.3, "steps": 3}, project_id="film")
    assert wait_terminal(server, broken)["status"] == "failed"
    failed = last_event(server, broken)
    assert failed["type"] == "task.failed" and failed["data"]["code"] == "template_failed"
    assert failed["data"]["node_id"] == "node" and failed["data"]["template_id"] == "boom"
    assert "RuntimeError: the model exploded" in failed["data"]["message"]
    assert wait_terminal(server, other)["status"] == "completed"
    assert server.ok("GET", "/api/v1/projects/film/takes", params={"task_id": broken}) == []

    overall, runner = check(server, "runner")
    assert overall == "degraded" and runner["status"] == "degraded"
    assert "template 'boom' failed" in runner["message"] and "exploded" in runner["message"]

    fixed = server.submit("boom", {"explode": False}, project_id="film", shot_id=SHOT)
    assert wait_terminal(server, fixed)["status"] == "completed"
    assert check(server, "runner")[1]["status"] == "ok"


def test_hung_template_is_stopped_by_its_limit_and_others_keep_running(
    server: ServerProcess,
) -> None:
    started = time.monotonic()
    hung = server.submit("hang", {"seconds": 3600}, project_id="film", shot_id=SHOT)
    others = [server.submit("delay", {"seconds": 0.2, "steps": 2}) for _ in range(3)]
    assert wait_terminal(server, hung, timeout=30)["status"] == "failed"
    assert time.monotonic() - started < 20
    failed = last_event(server, hung)
    assert failed["data"]["code"] == "template_timeout"
    assert failed["data"]["message"] == (
        f"node 'node' (template 'hang') ran longer than its limit of {HANG_LIMIT_S:g} s "
        "and was stopped"
    )
    assert all(wait_terminal(server, t)["status"] == "completed" for t in others)
    overall, runner = check(server, "runner")
    assert overall == "degraded" and "template 'hang' hung" in runner["message"]
    assert runner["details"]["workers_alive"] == 2  # the stopped worker took the next task

    quick = server.submit("hang", {"seconds": 0.05}, project_id="film", shot_id=SHOT)
    assert wait_terminal(server, quick)["status"] == "completed"
    assert check(server, "runner")[1]["status"] == "ok"


def test_full_disk_fails_the_take_clearly_until_space_returns(server: ServerProcess) -> None:
    home = server.home
    before = server.ok("GET", "/api/v1/projects/film/takes", params={"shot_id": SHOT})
    set_storage_fault(home, "ENOSPC")
    try:
        broken = image(server, 1)
        elsewhere = server.submit("number", {"value": 2})  # needs no storage
        assert wait_terminal(server, broken)["status"] == "failed"
        failed = last_event(server, broken)
        assert failed["type"] == "task.failed" and failed["data"]["code"] == "storage_error"
        assert "No space left on device" in failed["data"]["message"]
        assert wait_terminal(server, elsewhere)["status"] == "completed"
        overall, storage = check(server, "storage")
        assert overall == "degraded" and storage["status"] == "degraded"
        assert "No space left on device" in storage["message"]
        upload = server.http.post(
            "/api/v1/projects/film/assets", files={"file": ("a.png", b"\x89PNG")}
        )
        assert upload.status_code == 503 and upload.json()["code"] == "storage_error"
        set_storage_fault(home, "EACCES")
        refused = image(server, 2)
        assert wait_terminal(server, refused)["status"] == "failed"
        assert "Permission denied" in last_event(server, refused)["data"]["message"]
    finally:
        clear_faults(home)
    healed = image(server, 3)
    assert wait_terminal(server, healed)["status"] == "completed"
    assert check(server, "storage")[1]["status"] == "ok"
    after = server.ok("GET", "/api/v1/projects/film/takes", params={"shot_id": SHOT})
    assert len(after) == len(before) + 1  # no partial take of the failed tasks
    numbers = sorted(t["number"] for t in after)
    assert numbers == list(range(1, len(after) + 1))


def test_held_git_lock_keeps_takes_uncommitted_until_it_is_released(
    server: ServerProcess,
) -> None:
    lock = server.home / "projects" / "film" / ".git" / "index.lock"
    lock.write_text("")
    try:
        held = image(server, 10)
        assert wait_terminal(server, held)["status"] == "completed"
        done = last_event(server, held)
        assert done["type"] == "task.completed" and done["data"]["commit"] is None
        overall, git = check(server, "git")
        assert overall == "degraded" and git["status"] == "degraded"
        assert "index.lock" in git["message"]
    finally:
        lock.unlink()
    released = image(server, 11)
    assert wait_terminal(server, released)["status"] == "completed"
    assert last_event(server, released)["data"]["commit"]
    newest = server.ok("GET", "/api/v1/projects/film/commits", params={"limit": 1})[0]
    stranded = done["data"]["take"]["path"]
    assert any(f.startswith(stranded) for f in newest["files"]), newest["files"]
    assert check(server, "git")[1]["status"] == "ok"
