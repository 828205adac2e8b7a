"""git-lfs missing: takes are still committed (plainly) and /health says why it is degraded."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from tests.server.harness import running_server


@pytest.mark.timeout(120)
def test_server_without_git_lfs_commits_plainly_and_reports_degraded(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "git").symlink_to(shutil.which("git") or "/usr/bin/git")
    env = {"PATH": str(bin_dir)}  # git, but no git-lfs
    with running_server(tmp_path / "home", env=env) as server:
        server.ok("POST", "/api/v1/projects", json={"project_id": "demo"})
        task_id = server.submit(
            "solid_image", {"width": 4, "height": 4}, project_id="demo", shot_id="a/b/c"
        )
        deadline = time.monotonic() + 60
        while server.ok("GET", f"/api/v1/functions/tasks/{task_id}")["status"] != "completed":
            assert time.monotonic() < deadline, "task did not complete"
            time.sleep(0.1)
        commit = server.ok("GET", "/api/v1/projects/demo/commits", params={"limit": 1})[0]
        assert task_id in commit["message"]

        health = server.http.get("/health").json()
        git = next(c for c in health["checks"] if c["name"] == "git")
        assert health["status"] == "degraded"
        assert git["status"] == "degraded" and "git-lfs is not installed" in git["message"]
