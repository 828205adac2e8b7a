"""A request that names no user (and carries no token) is ``DEFAULT_USER``'s, whichever door it
came through: HTTP tasks, runs, batches and sweeps, the CLI, and the ComfyUI API. A user that
is named stays as named. (Dagster-started runs: tests/dagster_defs/test_default_user.py and
tests/distributed/test_task_list_cluster.py.)"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from graph_runtime.tasks import DEFAULT_USER
from tests.comfy.client import txt2img
from tests.comfy.conftest import comfy_server
from tests.server.harness import REPO

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]
TASKS = "/api/v1/functions/tasks"
NUMBER_GRAPH: dict[str, Any] = {
    "name": "count",
    "nodes": [{"id": "n", "template": "number",
               "inputs": {"value": {"kind": "literal", "value": 3}}}],
}  # fmt: skip


def test_every_door_records_the_same_default_user(tmp_path: Path) -> None:
    from nodes.diffusion.demo import build_random_pipeline

    assert DEFAULT_USER == "local"
    home = tmp_path / "home"
    home.mkdir()
    graph_file = tmp_path / "count.json"
    graph_file.write_text(json.dumps(NUMBER_GRAPH))
    cli = subprocess.run(
        [sys.executable, "-m", "server.cli", "--home", str(home), "run", str(graph_file)],
        cwd=REPO, env={**os.environ, "TAKEFLOW_HOME": str(home)}, capture_output=True,
        text=True, timeout=180,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    cli_task = re.search(r"task (task_\w+): completed", cli.stdout).group(1)  # type: ignore[union-attr]

    model = build_random_pipeline(tmp_path / "demo-model", "tiny", seed=0)
    with comfy_server(home, demo=model) as (server, comfy):
        assert server.ok("GET", "/api/v1/auth/me")["user_id"] == DEFAULT_USER
        doors = {
            "cli": [cli_task],
            "task": [server.submit("number", {"value": 1})],
            "run": [server.ok("POST", "/api/v1/runs", json={"graph": NUMBER_GRAPH})["task_id"]],
            "batch": server.ok(
                "POST", "/api/v1/functions/batches",
                json={"tasks": [{"template_id": "number", "inputs": {"value": 2}}]},
            )["task_ids"],
            "sweep": server.ok(
                "POST", "/api/v1/functions/batches",
                json={"graph": NUMBER_GRAPH,
                      "sweep": {"groups": [[{"input": "n.value", "values": [4, 5]}]]}},
            )["task_ids"],
        }  # fmt: skip
        assert comfy.queue_prompt(txt2img(seed=3))["prompt_id"]
        named = server.submit("number", {"value": 6}, user_id="zoe")

        listed = server.ok("GET", TASKS, params={"limit": 200})["tasks"]
        by_id = {t["task_id"]: t for t in listed}
        (comfy_task,) = [t for t in listed if t["source"] == "comfyui"]
        doors["comfyui"] = [comfy_task["task_id"]]
        users = {door: {by_id[t]["user_id"] for t in tasks} for door, tasks in doors.items()}
        assert users == {door: {DEFAULT_USER} for door in doors}, users
        assert by_id[named]["user_id"] == "zoe"  # a named user is kept
        assert sorted(t["task_id"] for t in listed) == sorted(
            [named, *(t for tasks in doors.values() for t in tasks)]
        )
