"""STORY-051's integration harness, `test_complete_generation_flow`, as written, against the real
server started the way the README's quick start starts it (`takeflow serve --demo`)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import websockets

from tests.server.harness import running_server


@pytest.mark.timeout(300)
def test_complete_generation_flow(tmp_path: Path) -> None:
    with running_server(tmp_path / "home", "--demo", cli=True) as server:
        project_id = "demo"
        user_id = "artist"

        # 1. Create test inputs (as in the story: quality travels among the inputs)
        inputs = {
            "prompt": "A beautiful sunset over mountains",
            "width": 512,
            "height": 512,
            "quality": "standard",
        }

        # 2. Submit task through API
        response = server.http.post(
            "/api/v1/functions/tasks",
            json={"template_id": "image_generation_v1", "inputs": inputs, "project_id": project_id},
        )
        assert response.status_code == 200, response.text
        task_id = response.json()["task_id"]
        assert response.json()["status"] == "submitted"

        # 3. Monitor WebSocket events (subscribing after submission: the replay fills the gap)
        async def collect() -> list[dict[str, Any]]:
            events: list[dict[str, Any]] = []
            async with websockets.connect(f"{server.ws_base}/ws/{user_id}") as ws:
                await ws.send(json.dumps({"type": "subscribe", "task_ids": [task_id]}))
                while True:
                    event = json.loads(await asyncio.wait_for(ws.recv(), 120))
                    if "seq" not in event:
                        continue  # acknowledgements and heartbeats
                    events.append(event)
                    if event["type"] in ("task.completed", "task.failed"):
                        break
            return events

        events = asyncio.run(collect())
        assert events[-1]["type"] == "task.completed", events[-1]

        # 4. Verify progress events
        progress_events = [e for e in events if e["type"] == "task.progress"]
        assert len(progress_events) > 0
        assert all(e["data"]["task_id"] == task_id for e in progress_events)
        steps = [e for e in progress_events if e["data"]["stage"] == "denoising"]
        assert len(steps) == 30  # quality "standard" = 30 steps
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))

        # 5. Verify take creation
        takes = server.ok(
            "GET", f"/api/v1/projects/{project_id}/takes", params={"task_id": task_id}
        )
        assert len(takes) == 1
        take = takes[0]
        assert take["metadata"]["task_id"] == task_id
        assert take["metadata"]["model"] == "demo" and take["metadata"]["demo"] is True

        # 6. Verify file storage
        assert "image" in take["outputs"]
        image = take["outputs"]["image"]
        served = server.http.get(image["url"])
        assert served.status_code == 200 and served.content.startswith(b"\x89PNG")
        assert len(served.content) == image["size"]

        # 7. Verify Git commit
        commits = server.ok("GET", f"/api/v1/projects/{project_id}/commits", params={"limit": 1})
        assert len(commits) == 1
        assert task_id in commits[0]["message"]
        assert image["path"] in commits[0]["files"]

        # 8. Verify complete data flow: the task record agrees with the events and the take
        task = server.ok("GET", f"/api/v1/functions/tasks/{task_id}")
        assert task["status"] == "completed" and task["takes"] == [take["take_id"]]
