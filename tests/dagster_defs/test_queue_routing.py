"""Distributed routing by resource hints: GPU memory tiers and the queues a worker serves."""

from __future__ import annotations

from dataclasses import replace

from dagster_defs.queue import model_for, queue_for, vram_tier, worker_queues
from graph_runtime.canvas import single_node_graph
from graph_runtime.registry import TemplateRegistry
from graph_runtime.templates import FunctionTemplate, ResourceHints
from graph_runtime.validation import ExecutionPlan, validate_graph
from nodes.builtin import TEMPLATES as BUILTIN
from nodes.diffusion.templates import TEMPLATES as DIFFUSION

GENERATE = next(t for t in DIFFUSION if t.id == "image_generation")


def plan(template: FunctionTemplate, inputs: dict[str, object]) -> ExecutionPlan:
    registry = TemplateRegistry([template])
    return validate_graph(single_node_graph(template.id, inputs), registry)


def test_gpu_tasks_go_to_the_smallest_memory_tier_that_fits() -> None:
    prompt = {"prompt": "a lighthouse", "model": "sdxl-base"}
    assert queue_for(plan(GENERATE, prompt)) == "gpu-4gb"  # declares 4 GB
    big = replace(GENERATE, resources=ResourceHints(gpu=True, vram_gb=20))
    assert queue_for(plan(big, prompt)) == "gpu-24gb"
    huge = replace(GENERATE, resources=ResourceHints(gpu=True, vram_gb=200.5))
    assert queue_for(plan(huge, prompt)) == "gpu-201gb"
    assert model_for(plan(GENERATE, prompt)) == "sdxl-base"
    number = next(t for t in BUILTIN if t.id == "number")
    assert queue_for(plan(number, {"value": 1})) == "cpu"
    assert model_for(plan(number, {"value": 1})) is None
    assert [vram_tier(v) for v in (0, 4, 4.5, 141)] == [4, 4, 8, 141]


def test_a_worker_serves_the_gpu_tiers_that_fit_its_memory() -> None:
    assert worker_queues(["cpu", "gpu"], 24) == [
        "cpu", "gpu-4gb", "gpu-8gb", "gpu-12gb", "gpu-16gb", "gpu-24gb",
    ]  # fmt: skip
    assert worker_queues(["gpu"], None)[-1] == "gpu-141gb"  # memory unknown: every tier
    assert worker_queues(["gpu-48gb", "gpu", "cpu"], 6) == ["gpu-48gb", "gpu-4gb", "cpu"]
