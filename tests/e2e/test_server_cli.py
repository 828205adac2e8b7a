"""``takeflow serve``: the quick start (``--demo``) and running on when git is unavailable."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.server.harness import EventClient, ServerProcess, running_server

pytestmark = pytest.mark.e2e


def test_serve_demo_creates_the_demo_project_and_model(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with running_server(home, "--demo", cli=True) as server:
        projects = [p["project_id"] for p in server.ok("GET", "/api/v1/projects")]
        assert projects == ["demo"]
        assert (home / "projects" / "demo" / ".git").is_dir()
        templates = {t["id"] for t in server.ok("GET", "/api/v1/functions/templates")}
        assert "noise_image" in templates
    assert (home / "models" / "demo").is_dir()
    with running_server(home, "--demo", cli=True) as again:  # a second start changes nothing
        assert [p["project_id"] for p in again.ok("GET", "/api/v1/projects")] == ["demo"]


def test_without_git_takes_are_stored_health_degrades_and_commits_catch_up(tmp_path: Path) -> None:
    home = tmp_path / "home"
    shim_dir = tmp_path / "bin"
    shim_dir.mkdir()
    outage = tmp_path / "git-is-down"
    real_git = shutil.which("git")
    assert real_git is not None
    shim = shim_dir / "git"
    shim.write_text(
        f'#!/bin/sh\nif [ -e "{outage}" ]; then echo "git: service down" >&2; exit 1; fi\n'
        f'exec "{real_git}" "$@"\n'
    )
    shim.chmod(0o755)
    env = {"PATH": f"{shim_dir}:{os.environ['PATH']}"}

    async def run_one(server: ServerProcess) -> dict[str, Any]:
        async with EventClient(f"{server.ws_base}/ws/u") as client:
            task_id = server.submit("solid_image", {"width": 8, "height": 8}, project_id="film")
            await client.subscribe(task_ids=[task_id])
            return await client.until_terminal(task_id, 30)

    with running_server(home, env=env) as server:
        server.ok("POST", "/api/v1/projects", json={"project_id": "film"})
        outage.touch()
        done = asyncio.run(run_one(server))
        assert done["type"] == "task.completed"
        assert done["data"]["commit"] is None
        stranded = done["data"]["take"]["path"]
        image_path = done["data"]["take"]["outputs"]["image"]["path"]
        assert server.http.get(f"/api/v1/projects/film/files/{image_path}").status_code == 200
        health = server.http.get("/health").json()
        assert health["status"] == "degraded"
        git = next(c for c in health["checks"] if c["name"] == "git")
        assert git["status"] == "degraded" and "service down" in git["message"]
        assert next(c for c in health["checks"] if c["name"] == "data_flow")["status"] == "ok"

        outage.unlink()
        done = asyncio.run(run_one(server))
        assert done["data"]["commit"]
        newest = server.ok("GET", "/api/v1/projects/film/commits", params={"limit": 1})[0]
        assert any(f.startswith(stranded) for f in newest["files"]), newest["files"]
        assert server.ok("GET", "/health")["status"] == "healthy"
