"""Parameter sweeps through the API: one batch, one task and one take per combination."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.server.harness import running_server

GRAPH: dict[str, Any] = {
    "name": "swatch",
    "nodes": [
        {"id": "grain", "template": "noise_image",
         "inputs": {"width": {"kind": "literal", "value": 8},
                    "height": {"kind": "literal", "value": 8}}},
        {"id": "tint", "template": "solid_image",
         "inputs": {"width": {"kind": "literal", "value": 8},
                    "height": {"kind": "literal", "value": 8}}},
        {"id": "mix", "template": "blend",
         "inputs": {"base": {"kind": "link", "node": "tint", "output": "image"},
                    "overlay": {"kind": "link", "node": "grain", "output": "image"}}},
    ],
}  # fmt: skip
SWEEP = {
    "groups": [
        [{"input": "grain.seed", "values": [1, 2]}],
        [
            {"input": "tint.color", "values": ["#ff0000", "#00ff00", "#0000ff"]},
            {"input": "mix.opacity", "values": [0.1, 0.5, 0.9]},
        ],
    ]
}


@pytest.mark.timeout(180)
def test_sweep_2x3_twice_makes_12_tasks_and_takes_with_their_values(tmp_path: Path) -> None:
    with running_server(tmp_path / "home") as server:
        server.ok("POST", "/api/v1/projects", json={"project_id": "demo"})
        accepted = server.ok(
            "POST",
            "/api/v1/functions/batches",
            json={"graph": GRAPH, "sweep": SWEEP, "runs": 2, "project_id": "demo",
                  "shot_id": "ch01/sc01/sweep"},
        )  # fmt: skip
        assert accepted["total"] == 12 and len(set(accepted["task_ids"])) == 12
        deadline = time.monotonic() + 120
        while True:
            status = server.ok("GET", f"/api/v1/functions/batches/{accepted['batch_id']}")
            if status["finished"] or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert status["counts"]["completed"] == 12, status

        takes = server.ok(
            "GET", "/api/v1/projects/demo/takes", params={"shot_id": "ch01/sc01/sweep"}
        )
        assert [t["number"] for t in takes] == list(range(1, 13))
        combos = sorted(
            (t["metadata"]["sweep"]["values"]["grain.seed"],
             t["metadata"]["sweep"]["values"]["tint.color"],
             t["metadata"]["sweep"]["values"]["mix.opacity"])
            for t in takes
        )  # fmt: skip
        expected = sorted(
            (seed, color, opacity)
            for seed in (1, 2)
            for color, opacity in [("#ff0000", 0.1), ("#00ff00", 0.5), ("#0000ff", 0.9)]
        )
        assert combos == sorted(expected * 2)
        for take in takes:  # the values are the ones the run used
            values = take["metadata"]["sweep"]["values"]
            assert take["metadata"]["inputs"]["grain"]["seed"] == values["grain.seed"]
            assert take["metadata"]["inputs"]["mix"]["opacity"] == values["mix.opacity"]


@pytest.mark.timeout(120)
def test_bad_sweeps_are_refused_and_queue_nothing(tmp_path: Path) -> None:
    with running_server(tmp_path / "home") as server:
        unequal = {"groups": [[{"input": "grain.seed", "values": [1, 2]},
                               {"input": "tint.color", "values": ["#000000"]}]]}  # fmt: skip
        response = server.http.post(
            "/api/v1/functions/batches", json={"graph": GRAPH, "sweep": unequal}
        )
        assert response.status_code == 422 and response.json()["code"] == "invalid_sweep"
        assert "grain.seed" in response.json()["message"]

        typo = {"values": {"grian.seed": [1, 2]}}
        response = server.http.post(
            "/api/v1/functions/batches", json={"graph": GRAPH, "sweep": typo}
        )
        assert response.status_code == 422 and "did you mean 'grain'" in response.json()["message"]

        both = {"graph": GRAPH, "sweep": SWEEP, "tasks": [{"template_id": "number"}]}
        response = server.http.post("/api/v1/functions/batches", json=both)
        assert response.status_code == 422 and response.json()["code"] == "invalid_request"
        metrics = server.http.get("/metrics").text
        assert "takeflow_tasks_submitted_total 0.0" in metrics  # nothing was queued
