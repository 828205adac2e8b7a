"""Distributed mode: the task list over the shared PostgreSQL state from two API replicas (pages
begun on one replica and continued on the other), and a Dagster launch without a user tag
queued as ``DEFAULT_USER``'s task. No worker runs, so every task stays queued where it is."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from graph_runtime.tasks import DEFAULT_USER
from tests.distributed.cluster import Cluster, cluster
from tests.distributed.test_cluster import _launch
from tests.services import PostgresServer

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]
TASKS = "/api/v1/functions/tasks"
SH10, SH20 = "ch01/sc01/sh010", "ch01/sc01/sh020"


@pytest.fixture(scope="module")
def idle(tmp_path_factory: pytest.TempPathFactory, pg_server: PostgresServer) -> Iterator[Cluster]:
    with cluster(tmp_path_factory.mktemp("list-cluster"), pg_server, None, workers=0) as c:
        for project in ("film", "set"):
            c.apis[0].ok("POST", "/api/v1/projects", json={"project_id": project})
        yield c


def test_pages_across_replicas_hold_every_task_once_with_filters_and_positions(
    idle: Cluster,
) -> None:
    a, b = idle.apis
    made: dict[str, tuple[str, str, str]] = {}
    for n, (api, project, shot, user) in enumerate(
        [(a, "film", SH10, "ana"), (b, "film", SH20, "bob"), (a, "set", SH10, "bob"),
         (b, "set", SH20, "ana"), (a, "film", SH10, "bob"), (b, "set", SH10, "ana")]
    ):  # fmt: skip
        task_id = api.submit("number", {"value": n}, project_id=project, shot_id=shot,
                             user_id=user)  # fmt: skip
        made[task_id] = (project, shot, user)

    everything = a.ok("GET", TASKS, params={"limit": 200})
    assert sorted(t["task_id"] for t in everything["tasks"]) == sorted(made)
    order = [t["task_id"] for t in everything["tasks"]]
    keys = [(t["created_at"], t["task_id"]) for t in everything["tasks"]]
    assert keys == sorted(keys, reverse=True)
    for task in everything["tasks"]:
        assert task["status"] == "queued"
        single = b.ok("GET", f"{TASKS}/{task['task_id']}")
        assert task["queue_position"] == single["queue_position"] is not None
        assert task["estimated_seconds"] is not None
    assert sorted(t["queue_position"] for t in everything["tasks"]) == list(range(len(made)))

    def listed(**params: Any) -> list[str]:
        return sorted(t["task_id"] for t in b.ok("GET", TASKS, params=params)["tasks"])

    assert listed(project_id="film") == sorted(t for t, m in made.items() if m[0] == "film")
    assert listed(shot_id=SH20) == sorted(t for t, m in made.items() if m[1] == SH20)
    assert listed(user_id="ana") == sorted(t for t, m in made.items() if m[2] == "ana")
    assert listed(project_id="set", user_id="ana", shot_id=SH10) == sorted(
        t for t, m in made.items() if m == ("set", SH10, "ana")
    )
    assert listed(status=["queued", "running"]) == sorted(made)
    assert listed(status="completed") == []
    assert listed(template_id="number") == sorted(made)
    assert b.http.get(TASKS, params={"status": "done"}).json()["field"] == "status"

    seen: list[str] = []
    cursor = None
    for page in range(20):
        api = (a, b)[page % 2]  # a cursor from one replica pages on the other
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        body = api.ok("GET", TASKS, params=params)
        seen += [t["task_id"] for t in body["tasks"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
        api.submit("number", {"value": 100 + page}, project_id="film", shot_id=SH10)
    assert seen == order


def test_a_dagster_launch_without_a_user_tag_queues_a_default_user_task(idle: Cluster) -> None:
    from dagster import DagsterInstance

    from dagster_defs.definitions import LocationSource, build_definitions
    from dagster_defs.launcher import QueueRunLauncher

    a, b = idle.apis
    canvas = {
        "name": "unnamed-user",
        "nodes": [
            {"id": "n", "template": "number", "inputs": {"value": {"kind": "literal", "value": 9}}}
        ],
        "context": {"project": "film", "shot": SH20},
    }
    folder = idle.home / "projects" / "film" / "02_Source_Creative" / "canvases"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "unnamed.takeflow.json").write_text(json.dumps(canvas))
    definitions = build_definitions(LocationSource.open(idle.home))
    (job,) = [j for j in definitions.resolve_all_job_defs() if j.tags.get("takeflow/canvas")]
    assert "takeflow/user" not in job.tags
    instance = DagsterInstance.from_config(str(idle.home / "dagster"))
    try:
        assert isinstance(instance.run_launcher, QueueRunLauncher)
        run_id = _launch(instance, job, dict(job.run_config or {}), {})
        deadline = time.monotonic() + 30
        while True:
            tasks = b.ok("GET", TASKS, params={"project_id": "film", "shot_id": SH20})["tasks"]
            launched = [t for t in tasks if t["dagster_run_id"] == run_id]
            if launched:
                break
            assert time.monotonic() < deadline, f"no task for run {run_id}"
            time.sleep(0.05)
        (task,) = launched
        assert task["status"] == "queued" and task["user_id"] == DEFAULT_USER
        assert a.ok("GET", f"{TASKS}/{task['task_id']}")["user_id"] == DEFAULT_USER
    finally:
        instance.dispose()
