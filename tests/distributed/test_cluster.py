"""Distributed mode end to end: two API replicas and two workers (real processes) on a real
PostgreSQL and redis-server. Each test leaves the cluster as it found it (2 APIs, 2 workers)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.distributed.cluster import Cluster, cluster
from tests.server.harness import REPO, TERMINAL, EventClient, ServerProcess
from tests.services import PostgresServer, RedisServer, redis_server

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]
SHOT = "ch01/sc01/sh010"


@pytest.fixture(scope="module")
def redis_mod() -> Iterator[RedisServer]:
    with redis_server() as server:
        yield server


@pytest.fixture(scope="module")
def tf(
    tmp_path_factory: pytest.TempPathFactory, pg_server: PostgresServer, redis_mod: RedisServer
) -> Iterator[Cluster]:
    with cluster(tmp_path_factory.mktemp("cluster"), pg_server, redis_mod) as c:
        c.apis[0].ok("POST", "/api/v1/projects", json={"project_id": "film", "name": "Film"})
        yield c


def delay(api: ServerProcess, seconds: float, steps: int = 4, **fields: Any) -> str:
    fields = {"project_id": "film", "shot_id": SHOT, **fields}
    return api.submit("delay", {"seconds": seconds, "steps": steps, "value": "v"}, **fields)


def wait_status(api: ServerProcess, task_id: str, states: set[str], timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        record: dict[str, Any] = api.ok("GET", f"/api/v1/runs/{task_id}")
        if record["status"] in states:
            return record
        assert time.monotonic() < deadline, f"{task_id} still {record['status']}"
        time.sleep(0.05)


def sql(tf: Cluster, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(tf.env["TAKEFLOW_DATABASE_URL"]) as conn:
        return conn.execute(query, params).fetchall()


def assert_once_in_order(events: list[dict[str, Any]], stored: list[dict[str, Any]]) -> None:
    assert [e["seq"] for e in events] == list(range(1, len(stored) + 1))
    assert [(e["seq"], e["id"], e["type"]) for e in events] == [
        (e["seq"], e["id"], e["type"]) for e in stored
    ]


def test_follow_on_replica_a_then_resume_on_replica_b_gets_every_event_once(tf: Cluster) -> None:
    a, b = tf.apis

    async def scenario() -> None:
        task_id = delay(a, 1.2, steps=6)
        async with EventClient(f"{a.ws_base}/ws/artist") as client:
            await client.subscribe(task_ids=[task_id])
            await client.until(lambda e: e["type"] == "task.progress", timeout=30)
            first = list(client.for_task(task_id))
        last_seq = first[-1]["seq"]
        async with EventClient(f"{b.ws_base}/ws/artist") as client:
            await client.subscribe(task_ids=[task_id], last_seq={task_id: last_seq})
            await client.until_terminal(task_id, timeout=30)
            rest = list(client.for_task(task_id))
        stored = b.stored_events(task_id)
        assert stored[-1]["type"] == "task.completed"
        assert_once_in_order(first + rest, stored)

    asyncio.run(scenario())


def test_forty_concurrent_takes_on_one_shot_are_numbered_1_to_40_and_committed_once(
    tf: Cluster,
) -> None:
    shot = "ch02/sc01/sh010"
    a, b = tf.apis
    ids = [delay((a, b)[i % 2], 0.0, steps=1, shot_id=shot) for i in range(40)]
    records = [wait_status(a, t, {"completed", "failed"}, timeout=120) for t in ids]
    assert {r["status"] for r in records} == {"completed"}, [
        (r["error"], tf.apis[0].stored_events(r["task_id"])) for r in records if r["error"]
    ]
    takes = a.ok("GET", "/api/v1/projects/film/takes", params={"shot_id": shot})
    assert sorted(t["number"] for t in takes) == list(range(1, 41))
    assert sorted(t["metadata"]["task_id"] for t in takes) == sorted(ids)
    repo = tf.home / "projects" / "film"
    log = subprocess.run(
        ["git", "log", "--format=%B"], cwd=repo, capture_output=True, text=True, check=True
    ).stdout
    for task_id in ids:
        assert log.count(f"Takeflow-Task: {task_id}") == 1, task_id
    status = subprocess.run(
        ["git", "status", "--porcelain", "03_Renders"], cwd=repo, capture_output=True, text=True
    )
    assert [line for line in status.stdout.splitlines() if "/take_" in line] == []
    owners = sql(
        tf, "SELECT count(DISTINCT owner) FROM takeflow_tasks WHERE task_id = ANY(%s)", ids
    )
    assert owners[0][0] == 2  # both workers took part


def test_a_worker_killed_mid_run_ends_its_task_interrupted_and_others_finish(
    tf: Cluster,
) -> None:
    a, b = tf.apis
    long = delay(a, 60.0, steps=600)
    wait_status(a, long, {"running"})
    owner = sql(tf, "SELECT owner FROM takeflow_tasks WHERE task_id = %s", long)[0][0]
    victim = next(w for w in tf.workers if owner.endswith(f"-{w.pid}"))
    others = [delay(b, 0.2, steps=2) for _ in range(4)]
    killed_at = time.monotonic()
    victim.kill()
    tf.workers.remove(victim)
    failed = wait_status(b, long, {"failed", "completed"}, timeout=30)
    assert failed["status"] == "failed" and failed["error"]["code"] == "interrupted"
    assert time.monotonic() - killed_at < 2.0 * 2 + 5  # lease (2 s) + sweep + slack
    for task_id in others:  # queued ones went to the other worker; the victim's died with it
        record = wait_status(b, task_id, {"completed", "failed"})
        ran_on = sql(tf, "SELECT owner FROM takeflow_tasks WHERE task_id = %s", task_id)[0][0]
        assert record["status"] == "completed" or (
            record["error"]["code"] == "interrupted" and ran_on is None
        ), record
    after = [delay(a, 0.1, steps=1) for _ in range(3)]
    for task_id in after:
        assert wait_status(b, task_id, {"completed", "failed"})["status"] == "completed"
    stored = b.stored_events(long)
    assert [e["seq"] for e in stored] == list(range(1, len(stored) + 1))
    assert stored[-1]["type"] == "task.failed" and stored[-1]["data"]["code"] == "interrupted"
    assert sum(e["type"] in TERMINAL for e in stored) == 1
    run_id = next(e["data"]["dagster_run_id"] for e in stored if e["type"] == "task.started")
    assert sql(tf, "SELECT status FROM runs WHERE run_id = %s", run_id) == [("FAILURE",)]
    tf.add_worker()


def test_a_paused_worker_that_lost_its_lease_writes_nothing_after_it_resumes(
    tf: Cluster,
) -> None:
    """Fencing: a worker frozen (SIGSTOP: a long GC pause, a stalled VM) past its lease is failed
    over by the sweeper; once it resumes mid-task it stores no event, no take and no commit."""
    a, b = tf.apis
    shot = "ch03/sc01/sh010"
    task_id = delay(a, 4.0, steps=40, shot_id=shot)  # progress every 0.1 s, then a take
    deadline = time.monotonic() + 30
    while not any(e["type"] == "task.progress" for e in a.stored_events(task_id)):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    owner = sql(tf, "SELECT owner FROM takeflow_tasks WHERE task_id = %s", task_id)[0][0]
    victim = next(w for w in tf.workers if owner.endswith(f"-{w.pid}"))
    os.kill(victim.pid, signal.SIGSTOP)
    try:
        failed = wait_status(b, task_id, {"failed", "completed"}, timeout=30)
        assert failed["status"] == "failed" and failed["error"]["code"] == "interrupted"
        fenced = b.stored_events(task_id)
        run_id = next(e["data"]["dagster_run_id"] for e in fenced if e["type"] == "task.started")
    finally:
        os.kill(victim.pid, signal.SIGCONT)
    # the victim resumes inside the template: its next write finds the epoch moved on, the step
    # fails and Dagster records the step's end (its one write that is not fenced: the record)
    deadline = time.monotonic() + 30
    while not sql(
        tf,
        "SELECT 1 FROM event_logs WHERE run_id = %s AND dagster_event_type = 'STEP_FAILURE'",
        run_id,
    ):
        assert time.monotonic() < deadline, victim.output()
        time.sleep(0.1)
    time.sleep(0.5)  # slack for any straggling write
    assert victim.proc.poll() is None  # alive, and still serving
    assert "lost its lease" in victim.output()  # the fenced path, named in its log
    assert b.stored_events(task_id) == fenced
    assert b.ok("GET", f"/api/v1/runs/{task_id}")["error"]["code"] == "interrupted"
    assert a.ok("GET", "/api/v1/projects/film/takes", params={"shot_id": shot}) == []
    repo = tf.home / "projects" / "film"
    log = subprocess.run(
        ["git", "log", "--format=%B"], cwd=repo, capture_output=True, text=True, check=True
    ).stdout
    assert f"Takeflow-Task: {task_id}" not in log
    assert not list((repo / "03_Renders").glob("ch03/**/take_*"))
    assert sql(tf, "SELECT status FROM runs WHERE run_id = %s", run_id) == [("FAILURE",)]
    after = [delay((a, b)[i % 2], 0.0, steps=1) for i in range(4)]
    for done in after:
        assert wait_status(b, done, {"completed", "failed"})["status"] == "completed"


def test_users_take_turns_across_workers(tf: Cluster) -> None:
    """One artist floods the queue; another's single task starts within a round, not after
    the flood (2 workers x 2 slots)."""
    a, b = tf.apis
    flood = [delay((a, b)[i % 2], 0.3, steps=1, user_id="flood") for i in range(30)]
    single = delay(b, 0.3, steps=1, user_id="single")
    queued_at = a.ok("GET", f"/api/v1/functions/tasks/{single}")
    assert queued_at["waiting_for"] is None  # served (by the 2 workers), just waiting its turn
    for task_id in [*flood, single]:
        assert wait_status(a, task_id, {"completed", "failed"})["status"] == "completed"
    started = {t: wait_status(a, t, {"completed"})["started_at"] for t in [*flood, single]}
    before = sum(started[t] < started[single] for t in flood)
    assert before <= 4 + 3, (before, queued_at.get("queue_position"))  # the running ones + a round
    assert queued_at.get("queue_position") is None or queued_at["queue_position"] <= 8


def test_a_gpu_worker_serves_only_gpu_queues(tf: Cluster) -> None:
    """``--queues gpu`` on a machine without CUDA: every GPU memory tier, and no CPU task."""
    gpu = tf.add_worker(queues="gpu", concurrency=2)
    try:
        assert "queues gpu-4gb,gpu-8gb,gpu-12gb," in gpu.output()  # no CUDA here: every tier
        ids = [delay((tf.apis[i % 2]), 0.2, steps=1) for i in range(8)]
        for task_id in ids:
            assert wait_status(tf.apis[0], task_id, {"completed"})["status"] == "completed"
        owners = sql(tf, "SELECT DISTINCT owner FROM takeflow_tasks WHERE task_id = ANY(%s)", ids)
        assert all(not owner.endswith(f"-{gpu.pid}") for (owner,) in owners)
    finally:
        gpu.stop()
        tf.workers.remove(gpu)


def test_cancel_on_replica_b_stops_a_task_running_on_a_worker(tf: Cluster) -> None:
    a, b = tf.apis
    task_id = delay(a, 30.0, steps=300)
    wait_status(a, task_id, {"running"})
    b.ok("POST", f"/api/v1/functions/tasks/{task_id}/cancel")
    record = wait_status(a, task_id, {"cancelled", "completed", "failed"}, timeout=20)
    assert record["status"] == "cancelled"
    assert a.stored_events(task_id)[-1]["type"] == "task.cancelled"
    queued = delay(b, 0.1)  # cancelled while queued: no worker runs it afterwards
    b.ok("POST", f"/api/v1/functions/tasks/{queued}/cancel")
    final = wait_status(a, queued, {"cancelled", "completed"})["status"]
    types = [e["type"] for e in a.stored_events(queued)]
    if final == "cancelled" and "task.started" not in types:
        assert types == ["task.submitted", "task.cancelled"]
        time.sleep(0.5)
        assert [e["type"] for e in a.stored_events(queued)] == types
    else:  # a worker claimed it first: then it is cancelled as a running task, or finished
        assert types[1] == "task.started"


def test_clients_lose_nothing_when_a_replica_dies_then_redis(
    tf: Cluster, redis_mod: RedisServer
) -> None:
    a, b = tf.apis

    async def scenario() -> None:
        ids: list[str] = []
        async with EventClient(f"{a.ws_base}/ws/artist") as client:
            ack = await client.subscribe(project_ids=["film"])
            floor = ack.get("last_id")
            ids.append(delay(a, 0.3, steps=3))
            await client.until_terminal(ids[0], timeout=30)
            last_id = client.events[-1]["id"]
            got = list(client.events)
        a.proc.kill()  # replica A dies
        tf.apis.remove(a)
        ids.append(delay(b, 0.3, steps=3))  # while nobody listens
        async with EventClient(f"{b.ws_base}/ws/artist") as client:
            await client.subscribe(project_ids=["film"], last_id=last_id)
            await client.until_terminal(ids[1], timeout=30)
            redis_mod.stop()  # Redis goes down: the log tail carries the events
            ids.append(delay(b, 0.3, steps=3))
            await client.until_terminal(ids[2], timeout=30)
            redis_mod.start()
            ids.append(delay(b, 0.3, steps=3))
            await client.until_terminal(ids[3], timeout=30)
            got += client.events
        for task_id in ids:
            mine = [e for e in got if e["data"].get("task_id") == task_id]
            assert_once_in_order(mine, b.stored_events(task_id))
        seen = [e["id"] for e in got]
        assert len(seen) == len(set(seen)) and floor is not None

    asyncio.run(scenario())
    tf.add_api()


def test_worker_refuses_to_start_without_a_database(tmp_path: Path) -> None:
    result = subprocess.run(
        [".venv/bin/python", "-m", "server.worker", "--home", str(tmp_path / "h")],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "TAKEFLOW_HOME": str(tmp_path / "h")},
    )
    assert result.returncode != 0
    assert "takeflow worker needs distributed mode: set TAKEFLOW_DATABASE_URL" in (
        result.stdout + result.stderr
    )


def _launch(instance: Any, job: Any, run_config: dict[str, Any], tags: dict[str, str]) -> str:
    """Create a run of the location's job and submit it, as the Dagster UI or a schedule tick
    does (the instance's run coordinator hands it to the run launcher of dagster.yaml)."""
    from dagster._core.code_pointer import ModuleCodePointer
    from dagster._core.definitions.job_base import InMemoryJob
    from dagster._core.execution.api import create_execution_plan
    from dagster._core.origin import JobPythonOrigin, RepositoryPythonOrigin

    from dagster_defs.execution import code_origin
    from dagster_defs.location import LOCATION_ATTRIBUTE, LOCATION_MODULE

    pointer = ModuleCodePointer(LOCATION_MODULE, LOCATION_ATTRIBUTE, str(REPO))
    python_origin = JobPythonOrigin(
        job.name, RepositoryPythonOrigin(sys.executable, pointer, None, None, None)
    )

    plan = create_execution_plan(InMemoryJob(job), run_config=run_config)
    run = instance.create_run_for_job(
        job_def=job,
        run_config=run_config,
        tags={**job.run_tags, **tags},
        execution_plan=plan,
        remote_job_origin=code_origin(job.name),
        job_code_origin=python_origin,
    )
    instance.submit_run(run.run_id, workspace=None)
    return str(run.run_id)


def test_dagster_launches_and_re_executions_become_queue_jobs_run_by_a_worker(
    tf: Cluster,
) -> None:
    from dagster import DagsterInstance, DagsterRunStatus

    from dagster_defs.definitions import LocationSource, build_definitions
    from dagster_defs.launcher import QueueRunLauncher

    a, b = tf.apis
    shot = "ch03/sc01/sh010"
    project = tf.home / "projects" / "film"
    canvas = {
        "name": "relaunch",
        "nodes": [
            {"id": "n", "template": "number", "inputs": {"value": {"kind": "literal", "value": 7}}}
        ],
        "context": {"project": "film", "shot": shot},
    }
    folder = project / "02_Source_Creative" / "canvases"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "relaunch.takeflow.json").write_text(json.dumps(canvas))
    source = LocationSource.open(tf.home)
    definitions = build_definitions(source)
    (job,) = [j for j in definitions.resolve_all_job_defs() if j.tags.get("takeflow/canvas")]
    job_plan_hash = source.compiler.plan_for_job(job.name).content_hash  # the saved canvas
    instance = DagsterInstance.from_config(str(tf.home / "dagster"))
    assert isinstance(instance.run_launcher, QueueRunLauncher)
    worker_ids = {str(w.pid) for w in tf.workers}

    def launched(run_id: str) -> dict[str, Any]:
        """The task the launcher queued for ``run_id``, once it ended (a worker ran it)."""
        query = "SELECT task_id FROM takeflow_tasks WHERE record->>'dagster_run_id' = %s"
        deadline = time.monotonic() + 30
        while not (rows := sql(tf, query, run_id)):
            assert time.monotonic() < deadline, f"no task for run {run_id}"
            time.sleep(0.05)
        record = dict(wait_status(a, rows[0][0], {"completed", "failed"}, timeout=60))
        assert record["status"] == "completed", (record, a.stored_events(record["task_id"]))
        ((owner,),) = sql(tf, "SELECT owner FROM takeflow_tasks WHERE task_id = %s", rows[0][0])
        assert owner.rsplit("-", 1)[1] in worker_ids  # a worker process ran it
        return record

    async def scenario() -> list[dict[str, Any]]:
        async with EventClient(f"{b.ws_base}/ws/artist") as client:
            await client.subscribe(project_ids=["film"])
            edited = json.loads(json.dumps(job.run_config or {}))
            edited["ops"]["n"]["config"]["inputs"]["value"] = 13  # edited in the launchpad
            first = _launch(instance, job, edited, {})
            done = await asyncio.to_thread(launched, first)
            parent = instance.get_run_by_id(first)
            assert parent is not None
            reexecution = {**parent.tags, "dagster/parent_run_id": first}
            second = _launch(instance, job, dict(parent.run_config), reexecution)
            again = await asyncio.to_thread(launched, second)
            for record in (done, again):
                await client.until_terminal(record["task_id"], timeout=30)
                assert_once_in_order(
                    client.for_task(record["task_id"]), b.stored_events(record["task_id"])
                )
            return [done, again]

    done, again = asyncio.run(scenario())
    assert done["task_id"] != again["task_id"]
    for record in (done, again):
        assert record["status"] == "completed", record
        run = instance.get_run_by_id(record["dagster_run_id"])
        assert run is not None and run.status == DagsterRunStatus.SUCCESS
        types = [e["type"] for e in a.stored_events(record["task_id"])]
        assert types[0] == "task.submitted" and types[-1] == "task.completed"
        assert "take.created" in types
    takes = a.ok("GET", "/api/v1/projects/film/takes", params={"shot_id": shot})
    assert sorted(t["metadata"]["task_id"] for t in takes) == sorted(
        [done["task_id"], again["task_id"]]
    )
    # both ran the launch's own value (13), not the saved canvas's (7), and say so
    for take in takes:
        assert take["metadata"]["inputs"]["n"]["value"] == 13, take["metadata"]
        assert take["metadata"]["graph_hash"] != job_plan_hash
    # tags describe the run they are on: the re-execution is a task of its own
    child = instance.get_run_by_id(again["dagster_run_id"])
    assert child.tags["takeflow/task_id"] == again["task_id"]
    assert child.tags["takeflow/parent_task_id"] == done["task_id"]
    log = subprocess.run(
        ["git", "log", "--format=%B"], cwd=project, capture_output=True, text=True, check=True
    ).stdout
    assert log.count(f"Takeflow-Task: {done['task_id']}") == 1
    assert log.count(f"Takeflow-Task: {again['task_id']}") == 1
    health = instance.run_launcher.check_run_worker_health(
        instance.get_run_by_id(done["dagster_run_id"])
    )
    assert health.status.value == "SUCCESS"
    instance.dispose()


def test_queue_limits_hold_across_api_replicas(tmp_path: Path, pg_server: PostgresServer) -> None:
    """Two replicas, no worker (nothing drains), 40 concurrent submissions against a limit of
    10: exactly 10 are queued, the rest refused with 429 queue_full, nothing of them stored."""
    config = {"admission": {"max_queued": 10}}
    with cluster(tmp_path, pg_server, None, apis=2, workers=0, config=config) as c:
        a, b = c.apis
        codes: list[int] = []

        def submit(i: int) -> None:
            body = {"template_id": "number", "inputs": {"value": i}}
            response = (a, b)[i % 2].http.post("/api/v1/functions/tasks", json=body)
            if response.status_code == 429:
                assert response.json()["code"] == "queue_full"
            codes.append(response.status_code)

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(submit, range(40)))
        assert sum(code < 300 for code in codes) == 10, codes
        assert codes.count(429) == 30, codes
        queued = sql(c, "SELECT task_id FROM takeflow_tasks LIMIT 1")[0][0]
        waiting = b.ok("GET", f"/api/v1/functions/tasks/{queued}")["waiting_for"]
        assert "no live worker serves queue 'cpu'" in waiting  # this cluster has no worker
        rows = sql(c, "SELECT status, count(*) FROM takeflow_tasks GROUP BY status")
        assert rows == [("queued", 10)]


def test_a_gpu_worker_batches_diffusion_requests_of_different_tasks(
    tmp_path: Path, pg_server: PostgresServer
) -> None:
    """Cross-request batching inside one worker in distributed mode: two image tasks from two
    API replicas run in one diffusion batch (``--concurrency 2`` threads share one service)."""
    from nodes.diffusion.demo import build_random_pipeline

    model = build_random_pipeline(tmp_path / "tiny", "tiny")
    config = {
        "models": {"demo": {"path": str(model), "demo": True}},
        "diffusion": {"max_batch_size": 2, "batch_window_ms": 3000, "preview_every": 2},
    }
    with cluster(tmp_path / "c", pg_server, None, apis=2, workers=1, config=config) as c:
        c.apis[0].ok("POST", "/api/v1/projects", json={"project_id": "film"})
        inputs = {"prompt": "a lighthouse", "width": 64, "height": 64, "steps": 4,
                  "scheduler": "euler", "model": "demo"}  # fmt: skip
        ids = [
            api.submit("image_generation", {**inputs, "seed": seed}, project_id="film",
                       shot_id=f"ch01/sc01/sh0{seed}0")
            for seed, api in zip((1, 2), c.apis, strict=True)
        ]  # fmt: skip
        takes = []
        for task_id, seed in zip(ids, (1, 2), strict=True):
            record = wait_status(c.apis[0], task_id, {"completed", "failed"}, timeout=150)
            assert record["status"] == "completed", record["error"]
            shot = f"ch01/sc01/sh0{seed}0"
            takes += c.apis[1].ok("GET", "/api/v1/projects/film/takes", params={"shot_id": shot})
        assert [t["metadata"]["batch_size"] for t in takes] == [2, 2]
        assert [t["metadata"]["seed"] for t in takes] == [1, 2]
        queues = sql(c, "SELECT DISTINCT queue FROM takeflow_tasks WHERE task_id = ANY(%s)", ids)
        assert queues == [("gpu-4gb",)]
