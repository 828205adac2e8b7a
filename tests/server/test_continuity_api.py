"""Shot continuity through the API (the app in process over a real runtime): LTX-Video's frame
rule and load_take's shot form are checked when a task is submitted (422 naming node and input,
nothing queued), and the template schemas say so."""

from __future__ import annotations

from typing import Any

from litestar.testing import TestClient

from server.app import create_app

TASKS = "/api/v1/functions/tasks"


def _refused(
    client: TestClient[Any], template: str, inputs: dict[str, Any], port: str
) -> dict[str, Any]:
    """The 422's error about ``port``."""
    answer = client.post(TASKS, json={"template_id": template, "inputs": inputs})
    assert answer.status_code == 422, answer.text
    body = answer.json()
    assert body["code"] == "invalid_graph"
    (error,) = [e for e in body["errors"] if e.get("port") == port]
    return dict(error)


def test_a_frame_count_that_is_not_8k_plus_1_is_refused_at_submit(runtime: Any) -> None:
    with TestClient(create_app(runtime)) as client:
        error = _refused(client, "text_to_video", {"prompt": "x", "frames": 16, "width": 64,
                                                   "height": 64, "steps": 2}, "frames")  # fmt: skip
        assert (error["code"], error["port"]) == ("not_a_multiple", "frames")
        assert error["message"] == (
            f"node '{error['node_id']}': input 'frames' must be 8k+1: 9, 17, 25, ..., got 16; "
            "try 9 or 17"
        )
        side = _refused(client, "image_to_video", {"prompt": "x", "frames": 9, "width": 100},
                        "width")  # fmt: skip
        assert side["code"] == "not_a_multiple" and "multiple of 32" in side["message"]
        shot = _refused(client, "load_take", {"shot": "sh010"}, "shot")
        assert shot["code"] == "invalid_format" and "chapter/scene/shot" in shot["message"]
    assert runtime.runner.state.list() == []  # nothing was queued


def test_the_schemas_carry_the_constraints(runtime: Any) -> None:
    with TestClient(create_app(runtime)) as client:
        video = client.get("/api/v1/functions/templates/text_to_video").json()
        frames = video["inputs_schema"]["properties"]["frames"]
        assert (frames["x-multiple-of"], frames["x-multiple-offset"]) == (8, 1)
        assert "multipleOf" not in frames  # 17 is no multiple of 8: JSON Schema's has no offset
        assert video["inputs_schema"]["properties"]["width"]["multipleOf"] == 32
        take = client.get("/api/v1/functions/templates/load_take").json()["inputs_schema"]
        assert take["required"] == ["shot"]
        assert take["properties"]["take"]["default"] == "active"
        assert take["properties"]["shot"]["pattern"].startswith("[A-Za-z0-9]")
