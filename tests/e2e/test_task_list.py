"""``GET /api/v1/functions/tasks`` on a real server: filters, newest-first pages with a cursor
that stay exact while tasks arrive, the queue fields, refused query values, and auth scoping."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from graph_runtime.tasks import DEFAULT_USER
from tests.e2e.test_auth import Caller, authed_server, create_token
from tests.server.harness import ServerProcess

pytestmark = pytest.mark.e2e
TASKS = "/api/v1/functions/tasks"
SH10, SH20 = "ch01/sc01/sh010", "ch01/sc01/sh020"


def ids(body: dict[str, Any]) -> list[str]:
    return [t["task_id"] for t in body["tasks"]]


def listing(client: ServerProcess | Caller, **params: Any) -> list[str]:
    """Every task id the list answers for ``params``, following ``next_cursor`` to the end."""
    found: list[str] = []
    cursor = None
    while True:
        body = client.ok("GET", TASKS, params={**params, **({"cursor": cursor} if cursor else {})})
        found += ids(body)
        cursor = body["next_cursor"]
        if cursor is None:
            return found


@pytest.fixture(scope="module")
def queue(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One worker held by a long ``delay`` task, so every later task waits in the queue (and a
    few are cancelled): statuses that do not move while the tests read them."""
    home = tmp_path_factory.mktemp("task-list") / "home"
    server = ServerProcess(home, "--heartbeat", "0.5", workers=1)
    try:
        server.wait_ready()
        for name in ("film", "set"):
            server.ok("POST", "/api/v1/projects", json={"project_id": name})
        blocker = server.submit(
            "delay", {"seconds": 600, "steps": 2400, "value": "hold"}, project_id="film",
            shot_id=SH10, user_id="ana",
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while server.ok("GET", f"{TASKS}/{blocker}")["status"] != "running":
            assert time.monotonic() < deadline, "the blocker never started"
            time.sleep(0.05)
        made: dict[str, dict[str, Any]] = {
            blocker: {"project": "film", "shot": SH10, "user": "ana", "template": "delay"}
        }
        rows: list[tuple[str | None, str, str | None]] = [
            ("film", SH10, "ana"), ("film", SH20, "bob"), ("set", SH10, "ana"),
            ("set", SH20, "bob"), (None, SH10, None), ("film", SH10, "bob"),
        ]  # fmt: skip
        for n, (project, shot, user) in enumerate(rows):
            fields: dict[str, Any] = {"shot_id": shot}
            if project:
                fields["project_id"] = project
            if user:
                fields["user_id"] = user
            task_id = server.submit("number", {"value": n}, **fields)
            made[task_id] = {"project": project, "shot": shot, "user": user or DEFAULT_USER,
                             "template": "number"}  # fmt: skip
        batch = server.ok(
            "POST", "/api/v1/functions/batches",
            json={"tasks": [{"template_id": "number", "inputs": {"value": 10 + i},
                             "project_id": "set", "shot_id": SH20, "user_id": "cy"}
                            for i in range(2)]},
        )  # fmt: skip
        for task_id in batch["task_ids"]:
            made[task_id] = {"project": "set", "shot": SH20, "user": "cy", "template": "number"}
        cancelled = list(made)[2:4]
        for task_id in cancelled:
            assert server.ok("POST", f"{TASKS}/{task_id}/cancel")["status"] == "cancelled"
        yield {"server": server, "made": made, "blocker": blocker, "cancelled": cancelled,
               "batch": batch}  # fmt: skip
        server.ok("POST", f"{TASKS}/{blocker}/cancel")
    finally:
        server.stop()


def test_the_list_answers_every_task_newest_first_with_queue_fields(
    queue: dict[str, Any],
) -> None:
    server: ServerProcess = queue["server"]
    made = queue["made"]
    body = server.ok("GET", TASKS, params={"limit": 200})
    assert body["next_cursor"] is None and body["limit"] == 200
    assert sorted(ids(body)) == sorted(made)
    keys = [(t["created_at"], t["task_id"]) for t in body["tasks"]]
    assert keys == sorted(keys, reverse=True)
    for task in body["tasks"]:
        want = made[task["task_id"]]
        assert (task["project_id"], task["shot_id"], task["user_id"], task["template_id"]) == (
            want["project"], want["shot"], want["user"], want["template"],
        )  # fmt: skip
        single = server.ok("GET", f"{TASKS}/{task['task_id']}")
        for field in ("status", "created_at", "started_at", "finished_at", "batch_id",
                      "tracking_id", "queue_position"):  # fmt: skip
            assert task[field] == single[field], (field, task, single)
        if task["status"] == "queued":
            assert isinstance(task["queue_position"], int)
            assert isinstance(task["estimated_seconds"], float | int)
        assert "nodes" not in task  # per-node states: the single task's GET
    queued = [t for t in body["tasks"] if t["status"] == "queued"]
    assert sorted(t["queue_position"] for t in queued) == list(range(len(queued)))
    (running,) = [t for t in body["tasks"] if t["status"] == "running"]
    assert running["task_id"] == queue["blocker"] and running["started_at"] is not None


def test_each_filter_and_their_combination(queue: dict[str, Any]) -> None:
    server: ServerProcess = queue["server"]
    made: dict[str, dict[str, Any]] = queue["made"]
    cancelled = set(queue["cancelled"])

    def expect(**want: Any) -> list[str]:
        return sorted(t for t, m in made.items() if all(m[k] == v for k, v in want.items()))

    assert sorted(listing(server, project_id="film")) == expect(project="film")
    assert sorted(listing(server, project_id="set", limit=1)) == expect(project="set")
    assert sorted(listing(server, shot_id=SH20)) == expect(shot=SH20)
    assert sorted(listing(server, user_id="bob")) == expect(user="bob")
    assert sorted(listing(server, user_id=DEFAULT_USER)) == expect(user=DEFAULT_USER)
    assert sorted(listing(server, template_id="delay")) == [queue["blocker"]]
    assert sorted(listing(server, batch_id=queue["batch"]["batch_id"])) == sorted(
        queue["batch"]["task_ids"]
    )
    assert sorted(listing(server, project_id="film", shot_id=SH10, user_id="bob")) == expect(
        project="film", shot=SH10, user="bob"
    )
    assert sorted(listing(server, status="cancelled")) == sorted(cancelled)
    waiting = sorted(set(made) - cancelled - {queue["blocker"]})
    assert sorted(listing(server, status="queued")) == waiting
    both = sorted(cancelled | {queue["blocker"]})
    assert sorted(listing(server, status=["cancelled", "running"])) == both
    assert sorted(listing(server, status="cancelled,running")) == both
    assert listing(server, status="completed") == []

    every = server.ok("GET", TASKS, params={"limit": 200})["tasks"]
    middle = sorted(t["created_at"] for t in every)[len(every) // 2]
    assert sorted(listing(server, since=middle)) == sorted(
        t["task_id"] for t in every if t["created_at"] >= middle
    )
    assert listing(server, since=time.time() + 3600) == []


def test_pages_hold_every_task_exactly_once_while_new_tasks_arrive(
    queue: dict[str, Any],
) -> None:
    server: ServerProcess = queue["server"]
    before = ids(server.ok("GET", TASKS, params={"limit": 200}))
    seen: list[str] = []
    arrived: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        body = server.ok("GET", TASKS, params=params)
        assert len(body["tasks"]) <= 2
        seen += ids(body)
        cursor = body["next_cursor"]
        if cursor is None:
            break
        arrived.append(server.submit("number", {"value": 100 + len(arrived)}, shot_id=SH10))
    assert seen == before  # in order, each once, none of those submitted meanwhile
    assert len(arrived) >= 4
    newest = ids(server.ok("GET", TASKS, params={"limit": len(arrived)}))
    assert newest == arrived[::-1]  # and a fresh first page starts with them
    queue["made"].update(
        {t: {"project": None, "shot": SH10, "user": DEFAULT_USER, "template": "number"}
         for t in arrived}
    )  # fmt: skip


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"status": "bogus"}, "status"),
        ({"status": ["queued", "done"]}, "status"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"cursor": "WzEsMl0"}, "cursor"),  # base64 of [1,2]: decodes, but no task key
        ({"limit": 0}, "limit"),
        ({"limit": 201}, "limit"),
        ({"limit": "1e30"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"since": "yesterday"}, "since"),
        ({"since": "nan"}, "since"),
        ({"since": "inf"}, "since"),
    ],
)
def test_bad_query_values_are_refused_naming_the_parameter(
    queue: dict[str, Any], params: dict[str, Any], field: str
) -> None:
    response = queue["server"].http.get(TASKS, params=params)
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "invalid_request", body
    named = body.get("field") or body["errors"][0]["field"]
    assert named == field, body
    assert field in body["message"], body


def test_an_unknown_method_still_answers_405_and_a_task_path_still_its_task(
    queue: dict[str, Any],
) -> None:
    server: ServerProcess = queue["server"]
    assert server.http.delete(TASKS).status_code == 405
    assert server.ok("GET", f"{TASKS}/{queue['blocker']}")["task_id"] == queue["blocker"]


def test_auth_scopes_the_list_to_the_callers_projects(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    tokens = {
        "ana": create_token(home, "ana", "film"),
        "bob": create_token(home, "bob", "set"),
        "eve": create_token(home, "eve", "*"),
    }
    with authed_server(home, tokens["ana"], "--auth") as server:
        ana, bob, eve = (Caller(server, tokens[u]) for u in ("ana", "bob", "eve"))
        ana.ok("POST", "/api/v1/projects", json={"project_id": "film"})
        bob.ok("POST", "/api/v1/projects", json={"project_id": "set"})

        def submit(caller: Caller, **fields: Any) -> str:
            body = {"template_id": "number", "inputs": {"value": len(fields)}, **fields}
            return str(caller.ok("POST", TASKS, json=body)["task_id"])

        film = [submit(ana, project_id="film"), submit(ana, project_id="film", shot_id=SH20)]
        ana_own = submit(ana)  # no project: ana's alone
        sets = [submit(bob, project_id="set")]
        bob_own = submit(bob)
        eve_own = submit(eve)

        assert sorted(listing(ana)) == sorted([*film, ana_own])
        assert sorted(listing(bob, limit=1)) == sorted([*sets, bob_own])
        assert sorted(listing(eve)) == sorted([*film, *sets, eve_own])
        assert sorted(listing(ana, project_id="film")) == sorted(film)
        assert sorted(listing(eve, project_id="set")) == sets
        assert listing(ana, user_id="bob") == []
        refused = ana.refused("GET", TASKS, params={"project_id": "set"})
        assert refused["project_id"] == "set"
        anonymous: httpx.Client = server.anonymous  # type: ignore[attr-defined]
        assert anonymous.get(TASKS).status_code == 401
        assert httpx.get(f"{server.base}{TASKS}", params={"token": tokens["bob"]}).json()["tasks"][
            0
        ]["task_id"] in {*sets, bob_own}


def test_the_list_is_in_the_openapi_document_with_its_parameters(queue: dict[str, Any]) -> None:
    spec = queue["server"].ok("GET", "/schema/openapi.json")
    operation = spec["paths"]["/api/v1/functions/tasks"]["get"]
    params = {p["name"]: p for p in operation["parameters"]}
    assert set(params) == {"project_id", "shot_id", "status", "user_id", "since", "batch_id",
                           "template_id", "limit", "cursor"}  # fmt: skip
    assert all(p["in"] == "query" and not p.get("required") for p in params.values())
    assert "cancelled" in params["status"]["description"]
    assert "newest first" in operation["description"]
    assert "post" in spec["paths"]["/api/v1/functions/tasks"]


def test_a_health_probe_is_listed_only_once_it_failed(queue: dict[str, Any]) -> None:
    """The probe task of ``/health`` waits behind the blocker (one worker) until the probe
    times out: while it waits it is not listed; once cancelled it stays, for the operator.
    Runs last: it leaves that cancelled probe among the tasks."""
    server: ServerProcess = queue["server"]

    def stored_probes() -> list[tuple[str, str]]:
        with sqlite3.connect(f"file:{server.home / 'state.db'}?mode=ro", uri=True) as db:
            rows = db.execute(
                "SELECT task_id, status FROM tasks WHERE json_extract(record, '$.user') = 'health'"
            ).fetchall()
        return [(str(r[0]), str(r[1])) for r in rows]

    with ThreadPoolExecutor(1) as pool:
        report = pool.submit(server.http.get, "/health", timeout=60)
        deadline = time.monotonic() + 20
        while not stored_probes():
            assert time.monotonic() < deadline, "no probe task was stored"
            time.sleep(0.05)
        ((probe, status),) = stored_probes()
        assert status == "queued"
        assert probe not in listing(server) and listing(server, user_id="health") == []
        checks = {c["name"]: c for c in report.result().json()["checks"]}
    assert checks["data_flow"]["details"]["task_id"] == probe
    assert listing(server, user_id="health") == [probe]
    assert server.ok("GET", f"{TASKS}/{probe}")["status"] == "cancelled"
