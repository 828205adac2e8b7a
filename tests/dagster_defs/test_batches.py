"""A sweep runs as a batch: one task and one take per combination, each take holding its values."""

from __future__ import annotations

from typing import Any

import pytest

from dagster_defs.batches import BatchProgress, new_batch_id, submit_sweep
from graph_runtime.canvas import CanvasGraph
from graph_runtime.errors import GraphValidationError
from graph_runtime.sweeps import Sweep
from graph_runtime.tasks import TaskStatus

SHOT = "ch01/sc02/sh030"


def _graph() -> CanvasGraph:
    return CanvasGraph.model_validate(
        {
            "name": "sweep-me",
            "nodes": [
                {
                    "id": "grain",
                    "template": "noise_image",
                    "inputs": {
                        "width": {"kind": "literal", "value": 8},
                        "height": {"kind": "literal", "value": 8},
                        "seed": {"kind": "literal", "value": 0},
                    },
                },
                {
                    "id": "big",
                    "template": "resize",
                    "inputs": {
                        "image": {"kind": "link", "node": "grain", "output": "image"},
                        "width": {"kind": "literal", "value": 8},
                        "height": {"kind": "literal", "value": 8},
                        "resample": {"kind": "literal", "value": "nearest"},
                    },
                },
            ],
        }
    )


SWEEP = {
    "runs": 2,
    "groups": [
        [{"input": "grain.seed", "values": [11, 22]}],
        [{"input": "big.width", "values": [8, 12, 16]}],
    ],
}


@pytest.mark.timeout(120)
def test_sweep_2x3_twice_makes_12_tasks_and_12_takes(runtime: Any, project: Any) -> None:
    batch_id = new_batch_id()
    seen: list[dict[str, Any]] = []
    progress = BatchProgress(batch_id, on_change=lambda p: seen.append(p.summary()))
    runtime.runner.add_sink(progress)
    got_id, task_ids = submit_sweep(
        runtime.runner,
        _graph(),
        Sweep.parse(SWEEP),
        project_id=project.id,
        shot=SHOT,
        user="sweeper",
        batch_id=batch_id,
    )
    assert got_id == batch_id and len(task_ids) == len(set(task_ids)) == 12
    assert progress.wait(timeout=100), progress.summary()
    runtime.runner.remove_sink(progress)

    assert progress.summary() | {"batch_id": None} == {
        "batch_id": None,
        "total": 12,
        "finished": 12,
        "completed": 12,
        "failed": 0,
        "cancelled": 0,
        "progress": 1.0,
    }
    fractions = [s["progress"] for s in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert any(0 < f < 1 for f in fractions)  # the bar moved in between, not in one jump
    assert [s["finished"] for s in seen][-1] == 12

    records = runtime.state.list(batch_id=batch_id)
    assert sorted(r.task_id for r in records) == sorted(task_ids)
    assert {r.status for r in records} == {TaskStatus.COMPLETED}

    takes = project.takes.list(shot=SHOT)
    assert len(takes) == 12
    by_task = {t.metadata["task_id"]: t for t in takes}
    combos = []
    for index, task_id in enumerate(task_ids):
        take = by_task[task_id]
        sweep = take.metadata["sweep"]
        assert sweep["batch_id"] == batch_id and sweep["index"] == index
        values = sweep["values"]
        # the values really reached the templates: the take's inputs and image size follow them
        assert take.metadata["inputs"]["grain"]["seed"] == values["grain.seed"]
        assert take.metadata["inputs"]["big"]["width"] == values["big.width"]
        from PIL import Image

        with Image.open(project.abs(take.outputs["image"].path)) as image:
            assert image.size == (values["big.width"], 8)
        combos.append((sweep["run"], values["grain.seed"], values["big.width"]))
    assert sorted(combos) == sorted(
        (run, seed, width) for run in (1, 2) for seed in (11, 22) for width in (8, 12, 16)
    )
    # same seed, same pixels: the two runs of a combination made identical images
    digests: dict[tuple[int, int], set[str]] = {}
    for take in takes:
        v = take.metadata["sweep"]["values"]
        key = (v["grain.seed"], v["big.width"])
        digests.setdefault(key, set()).add(take.outputs["image"].sha256)
    assert all(len(d) == 1 for d in digests.values()) and len(digests) == 6


def test_a_bad_combination_queues_nothing(runtime: Any, project: Any) -> None:
    sweep = Sweep.parse({"values": {"big.width": [8, 0]}})  # 0 is below the minimum
    with pytest.raises(GraphValidationError) as info:
        submit_sweep(runtime.runner, _graph(), sweep, project_id=project.id, shot=SHOT)
    issue = info.value.issues[0]
    assert (issue.node_id, issue.port, issue.extra["sweep_index"]) == ("big", "width", 1)
    assert runtime.state.list() == []
