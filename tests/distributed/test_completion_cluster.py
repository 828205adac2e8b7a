"""Distributed mode: ``?wait=`` answers a task a worker process ran, and one ``Idempotency-Key``
sent to two API replicas at once makes one task (the key table shares the intake transaction)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.distributed.cluster import Cluster, cluster
from tests.services import PostgresServer

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]
TASKS = "/api/v1/functions/tasks"


@pytest.fixture(scope="module")
def one_worker(
    tmp_path_factory: pytest.TempPathFactory, pg_server: PostgresServer
) -> Iterator[Cluster]:
    with cluster(tmp_path_factory.mktemp("completion-cluster"), pg_server, None, workers=1) as c:
        c.apis[0].ok("POST", "/api/v1/projects", json={"project_id": "film"})
        yield c


def test_one_key_on_two_replicas_makes_one_task_and_a_wait_sees_it_end(
    one_worker: Cluster,
) -> None:
    a, b = one_worker.apis
    body = {"template_id": "number", "inputs": {"value": 7}, "project_id": "film",
            "user_id": "ana"}  # fmt: skip

    def submit(n: int) -> httpx.Response:
        api = (a, b)[n % 2]
        with httpx.Client(base_url=api.base, timeout=60) as client:
            return client.post(
                TASKS, params={"wait": "60"}, json=body, headers={"Idempotency-Key": "k-1"}
            )

    with ThreadPoolExecutor(6) as pool:
        responses = list(pool.map(submit, range(6)))
    assert {r.status_code for r in responses} == {200}, [r.text for r in responses]
    assert {r.json()["status"] for r in responses} == {"completed"}
    ids = {r.json()["task_id"] for r in responses}
    assert len(ids) == 1
    listed = a.ok("GET", TASKS, params={"user_id": "ana"})["tasks"]
    assert [t["task_id"] for t in listed] == list(ids)
    assert sum(r.headers.get("Idempotent-Replayed") == "true" for r in responses) == 5

    changed = b.http.post(
        TASKS, json={**body, "inputs": {"value": 8}}, headers={"Idempotency-Key": "k-1"}
    )
    assert changed.status_code == 422 and changed.json()["code"] == "idempotency_key_reused"
