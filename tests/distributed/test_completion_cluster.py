"""Distributed mode: ``?wait=`` answers a task a worker process ran, one ``Idempotency-Key``
sent to two API replicas at once makes one task (the key table shares the intake transaction),
and a completion callback is sent by one replica at a time (a lease on its PostgreSQL row)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.distributed.cluster import Cluster, cluster
from tests.server.callback_receiver import callback_receiver
from tests.services import PostgresServer

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]
TASKS = "/api/v1/functions/tasks"


SECRET = "cluster-secret-0123456789"


@pytest.fixture(scope="module")
def one_worker(
    tmp_path_factory: pytest.TempPathFactory, pg_server: PostgresServer
) -> Iterator[Cluster]:
    callbacks = {"allow_hosts": ["127.0.0.1"], "secret": SECRET, "backoff_s": 0.2,
                 "poll_s": 0.05}  # fmt: skip
    root = tmp_path_factory.mktemp("completion-cluster")
    with cluster(root, pg_server, None, workers=1, config={"callbacks": callbacks}) as c:
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


def test_a_callback_is_sent_once_per_attempt_by_the_replicas(one_worker: Cluster) -> None:
    a, b = one_worker.apis
    with callback_receiver() as receiver:
        receiver.answers["/cluster"] = [500]
        body = {"template_id": "number", "inputs": {"value": 9}, "project_id": "film",
                "callback_url": f"{receiver.url}/cluster"}  # fmt: skip
        task_id = a.ok("POST", TASKS, json=body)["task_id"]
        tries = receiver.wait_for("/cluster", 2, timeout=60)
        assert [t.headers["x-takeflow-attempt"] for t in tries] == ["1", "2"]
        assert tries[1].verifies(SECRET) and tries[1].json()["task_id"] == task_id
        assert len({t.headers["x-takeflow-delivery"] for t in tries}) == 1
        deadline = time.monotonic() + 30
        while (callback := b.ok("GET", f"{TASKS}/{task_id}")["callback"])["state"] != "delivered":
            assert time.monotonic() < deadline, callback
            time.sleep(0.05)
        assert callback["attempts"] == 2
        time.sleep(1.0)  # both replicas poll every 50 ms: no third request comes
        assert len(receiver.of_path("/cluster")) == 2
