"""The real server end to end: HTTP submit, WebSocket events, takes, files and git commits."""

from __future__ import annotations

import asyncio
import hashlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.server.harness import EventClient, ServerProcess, running_server

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    home = tmp_path_factory.mktemp("server-flow") / "home"
    with running_server(home, "--heartbeat", "0.5") as srv:
        srv.ok("POST", "/api/v1/projects", json={"project_id": "film", "name": "Film"})
        yield srv


def _png(color: str, size: int = 24) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, format="PNG")
    return buf.getvalue()


def _assert_full_sequence(events: list[dict[str, Any]], stored: list[dict[str, Any]]) -> None:
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events == stored


def _check_take_and_commit(
    server: ServerProcess, task_id: str, completed: dict[str, Any]
) -> dict[str, Any]:
    takes = server.ok("GET", "/api/v1/projects/film/takes", params={"task_id": task_id})
    assert len(takes) == 1, takes
    take = takes[0]
    assert take["metadata"]["task_id"] == task_id
    assert completed["data"]["takes"] == [take["take_id"]]
    for output in take["outputs"].values():
        response = server.http.get(output["url"])
        assert response.status_code == 200
        assert response.headers["content-type"].startswith(output["content_type"])
        assert hashlib.sha256(response.content).hexdigest() == output["sha256"]
        assert (server.home / "projects" / "film" / output["path"]).is_file()
    newest = server.ok("GET", "/api/v1/projects/film/commits", params={"limit": 1})[0]
    assert f"Takeflow-Task: {task_id}" in newest["message"]
    assert completed["data"]["commit"] == newest["sha"]
    return take


def test_task_followed_over_websocket_to_a_committed_take(server: ServerProcess) -> None:
    async def scenario() -> None:
        async with EventClient(f"{server.ws_base}/ws/artist") as client:
            await client.subscribe(project_ids=["film"])
            accepted = server.ok(
                "POST",
                "/api/v1/functions/tasks",
                json={
                    "template_id": "delay",
                    "inputs": {"seconds": 0.3, "steps": 3, "value": "hello"},
                    "project_id": "film",
                    "shot_id": "ch01/sc01/sh010",
                    "canvas_node_id": "wait_node",
                    "user_id": "artist",
                },
            )
            assert accepted["status"] == "submitted"
            assert accepted["tracking_id"].startswith("trk_")
            assert "estimated_completion" in accepted
            task_id = accepted["task_id"]
            completed = await client.until_terminal(task_id, timeout=30)
            assert completed["type"] == "task.completed"
            events = client.for_task(task_id)
            progress = [e for e in events if e["type"] == "task.progress"]
            assert len(progress) == 3
            assert {e["data"]["node_id"] for e in progress} == {"wait_node"}
            assert progress[-1]["data"]["progress"] == pytest.approx(1.0)
            _assert_full_sequence(events, server.stored_events(task_id))
            take = _check_take_and_commit(server, task_id, completed)
            assert take["shot_id"] == "ch01/sc01/sh010"
            assert take["metadata"]["tracking_id"] == accepted["tracking_id"]
            assert server.http.get(take["outputs"]["value"]["url"]).text == "hello"
            status = server.ok("GET", f"/api/v1/functions/tasks/{task_id}")
            assert status["status"] == "completed"
            assert status["nodes"] == {"wait_node": "completed"}
            assert status["take"]["take_id"] == take["take_id"]

    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_uploaded_asset_feeds_a_multi_node_graph_through_runs(server: ServerProcess) -> None:
    red = _png("#ff0000")
    upload = server.http.post(
        "/api/v1/projects/film/assets", files={"file": ("red plate (v1).png", red, "image/png")}
    )
    assert upload.status_code == 201, upload.text
    asset = upload.json()
    assert asset["uri"] == f"asset://{asset['asset_id']}"
    assert asset["path"].startswith("01_Assets/uploads/") and asset["path"].endswith(
        "red_plate_v1_.png"
    )
    assert asset["size"] == len(red) and asset["sha256"] == hashlib.sha256(red).hexdigest()
    assert server.http.get(f"/api/v1/projects/film/files/{asset['path']}").content == red

    graph = {
        "name": "plate-over-noise",
        "nodes": [
            {"id": "plate", "template": "load_asset",
             "inputs": {"asset": {"kind": "literal", "value": asset["uri"]}}},
            {"id": "grain", "template": "noise_image",
             "inputs": {"width": {"kind": "literal", "value": 24},
                        "height": {"kind": "literal", "value": 24},
                        "seed": {"kind": "literal", "value": 5}}},
            {"id": "mix", "template": "blend",
             "inputs": {"base": {"kind": "link", "node": "plate", "output": "image"},
                        "overlay": {"kind": "link", "node": "grain", "output": "image"},
                        "opacity": {"kind": "literal", "value": 0.25}}},
            {"id": "big", "template": "resize",
             "inputs": {"image": {"kind": "link", "node": "mix", "output": "image"},
                        "width": {"kind": "literal", "value": 48},
                        "height": {"kind": "literal", "value": 32}}},
        ],
    }  # fmt: skip

    async def scenario() -> None:
        async with EventClient(f"{server.ws_base}/ws/compositor") as client:
            accepted = server.ok(
                "POST", "/api/v1/runs",
                json={"graph": graph, "project_id": "film", "shot_id": "ch01/sc02/sh020"},
            )  # fmt: skip
            task_id = accepted["task_id"]
            await client.subscribe(task_ids=[task_id])  # may join late: replay, then live
            completed = await client.until_terminal(task_id, timeout=30)
            assert completed["type"] == "task.completed", completed
            events = client.for_task(task_id)
            _assert_full_sequence(events, server.stored_events(task_id))
            assert any(e["type"] == "task.progress" for e in events)
            finished = [
                e["data"]["node_id"]
                for e in events
                if e["type"] == "node.state" and e["data"]["state"] == "completed"
            ]
            assert sorted(finished) == ["big", "grain", "mix", "plate"]
            take = _check_take_and_commit(server, task_id, completed)
            assert list(take["outputs"]) == ["image"]
            image = Image.open(io.BytesIO(server.http.get(take["outputs"]["image"]["url"]).content))
            assert image.size == (48, 32)
            red_channel = image.convert("RGB").getpixel((24, 16))[0]
            assert red_channel > 150  # the red plate shows through the noise

    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_reconnect_with_last_seq_receives_exactly_the_rest(server: ServerProcess) -> None:
    task_id = server.submit(
        "delay", {"seconds": 1.6, "steps": 16}, project_id="film", shot_id="ch02/sc01/sh010"
    )

    async def scenario() -> list[dict[str, Any]]:
        async with EventClient(f"{server.ws_base}/ws/flaky") as first:
            await first.subscribe(task_ids=[task_id])
            await first.until(lambda e: e["type"] == "task.progress" and e["seq"] >= 5, 20)
            before = list(first.for_task(task_id))
        assert before[-1]["type"] != "task.completed"
        await asyncio.sleep(0.4)  # events keep coming while nobody listens
        async with EventClient(f"{server.ws_base}/ws/flaky") as second:
            ack = await second.subscribe(task_ids=[task_id], last_seq={task_id: before[-1]["seq"]})
            assert ack["last_seq"][task_id] >= before[-1]["seq"]
            await second.until_terminal(task_id, timeout=30)
            after = second.for_task(task_id)
        assert after[0]["seq"] == before[-1]["seq"] + 1
        return before + after

    union = asyncio.run(asyncio.wait_for(scenario(), 60))
    _assert_full_sequence(union, server.stored_events(task_id))
    assert union[-1]["type"] == "task.completed"


def test_project_subscriber_catches_up_from_last_id(server: ServerProcess) -> None:
    async def scenario() -> None:
        async with EventClient(f"{server.ws_base}/ws/viewer") as live:
            ack = await live.subscribe(project_ids=["film"])
            start_id = ack["last_id"]
            task_id = server.submit(
                "noise_image", {"width": 8, "height": 8, "seed": 1}, project_id="film"
            )
            upload = server.http.post(
                "/api/v1/projects/film/assets", files={"file": ("tiny.png", _png("#00ff00", 4))}
            )
            assert upload.status_code == 201
            await live.until_terminal(task_id, timeout=30)
            uploaded = await live.until(lambda e: e["type"] == "asset.uploaded", 10)
            assert uploaded["data"]["uri"] == upload.json()["uri"]
            assert uploaded["project_id"] == "film"
            await asyncio.sleep(0.2)
        async with EventClient(f"{server.ws_base}/ws/viewer") as late:
            await late.subscribe(project_ids=["film"], last_id=start_id)
            await late.until_terminal(task_id, timeout=10)
            await late.until(lambda e: e["type"] == "asset.uploaded", 10)
        key = [(e["data"]["task_id"], e["seq"]) for e in live.events]
        assert sorted((e["data"]["task_id"], e["seq"]) for e in late.events) == sorted(key)
        assert len(set(key)) == len(key)
        _assert_full_sequence(live.for_task(task_id), server.stored_events(task_id))
        _assert_full_sequence(late.for_task(task_id), server.stored_events(task_id))

    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_idle_connection_gets_heartbeats(server: ServerProcess) -> None:
    async def scenario() -> None:
        async with EventClient(f"{server.ws_base}/ws/idle") as client:
            await client.subscribe(task_ids=[])
            beat = await client.next_control("heartbeat", timeout=5)
            assert beat["timestamp"] > 0
            await client.send({"type": "ping"})
            assert (await client.next_control("pong", timeout=5))["type"] == "pong"

    asyncio.run(asyncio.wait_for(scenario(), 20))


def test_cancel_a_running_delay_task(server: ServerProcess) -> None:
    async def scenario() -> None:
        async with EventClient(f"{server.ws_base}/ws/editor") as client:
            task_id = server.submit("delay", {"seconds": 30, "steps": 300}, project_id="film")
            await client.subscribe(task_ids=[task_id])
            await client.until(lambda e: e["type"] == "task.progress", 20)
            answer = server.ok("POST", f"/api/v1/functions/tasks/{task_id}/cancel")
            assert answer == {"task_id": task_id, "status": "cancelling"}
            terminal = await client.until_terminal(task_id, timeout=10)
            assert terminal["type"] == "task.cancelled"
            assert server.ok("GET", f"/api/v1/functions/tasks/{task_id}")["status"] == "cancelled"
            assert (
                server.ok("GET", "/api/v1/projects/film/takes", params={"task_id": task_id}) == []
            )
            again = server.http.post(f"/api/v1/functions/tasks/{task_id}/cancel")
            assert again.status_code == 409 and again.json()["code"] == "not_cancellable"

    asyncio.run(asyncio.wait_for(scenario(), 40))


def test_batch_runs_every_task_and_sums_them_up(server: ServerProcess) -> None:
    tasks = [
        {"template_id": "solid_image", "inputs": {"width": 8, "height": 8, "color": color},
         "project_id": "film", "shot_id": "ch03/sc01/sh010"}
        for color in ("#ff0000", "#00ff00", "#0000ff")
    ]  # fmt: skip
    batch = server.ok("POST", "/api/v1/functions/batches", json={"tasks": tasks})
    assert len(batch["task_ids"]) == 3

    async def scenario() -> None:
        async with EventClient(f"{server.ws_base}/ws/batcher") as client:
            await client.subscribe(task_ids=batch["task_ids"])
            for task_id in batch["task_ids"]:
                assert (await client.until_terminal(task_id, 30))["type"] == "task.completed"

    asyncio.run(asyncio.wait_for(scenario(), 60))
    summary = server.ok("GET", f"/api/v1/functions/batches/{batch['batch_id']}")
    assert summary["finished"] is True
    assert summary["counts"]["completed"] == 3 and summary["total"] == 3
    takes = server.ok("GET", "/api/v1/projects/film/takes", params={"shot_id": "ch03/sc01/sh010"})
    assert sorted(t["metadata"]["task_id"] for t in takes) == sorted(batch["task_ids"])


def test_health_reports_every_service_and_a_probe_task(server: ServerProcess) -> None:
    report = server.ok("GET", "/health")
    assert report["status"] == "healthy", report
    checks = {c["name"]: c for c in report["checks"]}
    services = {"dagster_instance", "storage", "git", "event_log", "runner", "data_flow"}
    assert set(checks) == services | {"schedules"}
    assert all(c["status"] == "ok" for c in checks.values())
    probe = checks["data_flow"]["details"]
    assert probe["events"][0] == "task.submitted" and probe["events"][-1] == "task.completed"
    assert checks["runner"]["details"]["workers_alive"] == 2


def test_templates_and_offline_api_docs(server: ServerProcess) -> None:
    templates = {t["id"]: t for t in server.ok("GET", "/api/v1/functions/templates")}
    assert {"noise_image", "delay", "load_asset"} <= set(templates)
    one = server.ok("GET", "/api/v1/functions/templates/resize@1")
    assert one["inputs_schema"]["required"] == ["image"]
    spec = server.ok("GET", "/schema/openapi.json")
    assert "/api/v1/functions/tasks" in spec["paths"] and "/api/v1/runs" in spec["paths"]
    page = server.http.get("/schema")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "<script src=" not in page.text and "https://" not in page.text.split("<script")[0]
    assert '"/api/v1/runs"' in page.text


def test_served_files_have_content_types(server: ServerProcess, tmp_path: Path) -> None:
    project = server.ok("GET", "/api/v1/projects/film")
    assert project["project_id"] == "film"
    response = server.http.get("/api/v1/projects/film/files/project.json")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["project_id"] == "film"
