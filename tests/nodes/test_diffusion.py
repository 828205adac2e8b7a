"""Diffusion templates on CPU with a tiny random-weight pipeline, through the real runtime."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from graph_runtime.canvas import CanvasGraph, single_node_graph
from graph_runtime.errors import GraphValidationError, ModelNotFoundError, TaskCancelledError
from graph_runtime.events import CallbackSink, RecordingSink
from graph_runtime.registry import TemplateRegistry
from graph_runtime.tasks import TaskStatus
from graph_runtime.templates import NullReporter, Quality
from graph_runtime.validation import validate_graph
from nodes.diffusion.demo import DEMO_LABEL, ensure_demo_model, register_model
from nodes.diffusion.requests import InvalidGenerationRequest
from nodes.diffusion.service import (
    SCHEDULERS,
    SIGMA_SCHEDULERS,
    DiffusionService,
    DiffusionSettings,
    GenerationRequest,
    PipelineCache,
)
from stores.home import TakeflowHome
from tests.nodes.conftest import FAST, registry_for, service_for

# diffusers' schedulers call np.array() on torch tensors, which numpy 2 flags (third-party).
pytestmark = pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)
SHOT = "ch01/sc01/sh010"
ROOT = Path(__file__).resolve().parents[2]


def run(runtime: Any, graph: CanvasGraph, **kw: Any) -> tuple[Any, list[Any]]:
    sink = RecordingSink()
    runtime.runner.add_sink(sink)
    record = runtime.runner.submit(graph, **kw)
    sink.wait_terminal(record.task_id, timeout=60)
    return runtime.runner.get(record.task_id), sink.for_task(record.task_id)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


class RecordingReporter(NullReporter):
    """A ``ProgressReporter`` for calling the service directly: keeps every progress call."""

    def __init__(self, services: dict[str, Any] | None = None) -> None:
        super().__init__(services=services)
        self.calls: list[tuple[float, str, str, bytes | None]] = []

    def progress(
        self, fraction: float, stage: str = "", message: str = "", preview: bytes | None = None
    ) -> None:
        self.check_cancelled()
        self.calls.append((fraction, stage, message, preview))


def test_discovery_and_opening_the_runtime_do_not_import_torch(tmp_path: Path) -> None:
    code = (
        "import sys; import nodes.diffusion; from dagster_defs.runtime import open_runtime;"
        "rt = open_runtime(sys.argv[1], workers=1);"
        "rt.registry.get('image_generation_v1'); rt.runner.services['diffusion']; rt.close();"
        "print(sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "home")],
        cwd=ROOT, capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_alias_presets_and_explicit_values() -> None:
    registry = TemplateRegistry.discover()
    template = registry.get("image_generation_v1")
    assert template.ref == "image_generation@1.0.0"
    assert registry.get("image_to_image").input("image").type == "image"

    def literals(quality: Quality, **inputs: Any) -> dict[str, Any]:
        graph = single_node_graph("image_generation_v1", {"prompt": "p", **inputs}, quality)
        return dict(validate_graph(graph, registry).nodes[0].literals)

    expected = {Quality.DRAFT: (15, 7.0), Quality.STANDARD: (30, 7.5), Quality.HIGH: (50, 8.0),
                Quality.ULTRA: (100, 8.5)}  # fmt: skip
    for quality, (steps, guidance) in expected.items():
        got = literals(quality)
        assert (got["steps"], got["guidance"]) == (steps, guidance)
        assert got["seed"] == -1 and got["model"] == "demo" and got["sigmas"] == "default"
    assert literals(Quality.ULTRA, steps=3)["steps"] == 3
    assert literals(Quality.ULTRA, steps=3)["guidance"] == 8.5


def test_graph_prompt_generation_resize_makes_a_take(diffusion_runtime: Any, project: Any) -> None:
    graph = CanvasGraph.model_validate({
        "name": "gen-resize",
        "nodes": [
            {"id": "prompt", "template": "text_prompt",
             "inputs": {"text": {"kind": "literal", "value": "a red fox at dawn"}}},
            {"id": "gen", "template": "image_generation",
             "inputs": {"prompt": {"kind": "link", "node": "prompt", "output": "text"},
                        **{k: {"kind": "literal", "value": v} for k, v in FAST.items()},
                        "seed": {"kind": "literal", "value": 7}}},
            {"id": "fit", "template": "resize",
             "inputs": {"image": {"kind": "link", "node": "gen", "output": "image"},
                        "width": {"kind": "literal", "value": 96},
                        "height": {"kind": "literal", "value": 80}}},
        ],
    })  # fmt: skip
    record, events = run(diffusion_runtime, graph, project_id="demo", shot=SHOT)
    assert record.status == TaskStatus.COMPLETED, record.error

    take = project.takes.list(SHOT)[0]
    image = Image.open(project.abs(take.outputs["image"].path))
    assert image.format == "PNG" and image.size == (96, 80)
    assert take.metadata["seeds"] == {"gen": 7}

    steps = [e.data for e in events if e.type == "task.progress" and e.data["stage"] == "denoising"]
    assert [s["message"] for s in steps] == [f"step {i} of 4" for i in range(1, 5)]
    fractions = [s["node_progress"] for s in steps]
    assert fractions == sorted(fractions) and 0 < fractions[0] < fractions[-1] <= 1
    assert all(s["node_id"] == "gen" for s in steps)


def test_previews_reach_the_project(diffusion_runtime: Any, project: Any) -> None:
    graph = single_node_graph("image_generation", {"prompt": "preview", "seed": 1, **FAST})
    record, events = run(diffusion_runtime, graph, project_id="demo", shot=SHOT)
    assert record.status == TaskStatus.COMPLETED, record.error
    from server.wire import wire_event

    progress = [e for e in events if e.type == "task.progress"]
    previews = [e for e in progress if e.data["preview_path"]]
    assert len(previews) == 1  # every 2 steps of 4, not on the last one
    rel = previews[0].data["preview_path"]  # project-relative; clients get a URL
    assert wire_event(previews[0])["data"]["preview_url"] == f"/api/v1/projects/demo/files/{rel}"
    preview = Image.open(project.abs(rel))
    assert preview.format == "JPEG" and rel.endswith(".jpg") and preview.size == (64, 64)


def test_single_node_take_records_the_random_seed_and_reproduces(
    diffusion_runtime: Any, project: Any, diffusion_home: TakeflowHome
) -> None:
    graph = single_node_graph("image_generation_v1", {"prompt": "a lighthouse", **FAST})
    record, _ = run(diffusion_runtime, graph, project_id="demo", shot=SHOT)
    assert record.status == TaskStatus.COMPLETED, record.error
    take = project.takes.list(SHOT)[0]
    assert set(take.outputs) == {"image", "seed"}
    seed = json.loads(Path(project.abs(take.outputs["seed"].path)).read_text())
    assert isinstance(seed, int) and 0 <= seed < 2**32
    assert take.metadata["seeds"] == {"node": seed} and take.metadata["seed"] == seed
    assert take.metadata["inputs"]["node"]["model"] == "demo"
    from_take = pixels(Image.open(project.abs(take.outputs["image"].path)))

    # A fresh service and a freshly loaded pipeline, same inputs and the recorded seed.
    fresh = DiffusionService(registry_for(diffusion_home), DiffusionSettings(), PipelineCache())
    request = GenerationRequest(prompt="a lighthouse", seed=seed, **FAST)
    again = fresh.generate(request, RecordingReporter())
    fresh.close()
    assert again.seed == seed and again.model.demo
    assert np.array_equal(pixels(again.image), from_take)

    other = service_for(diffusion_home).generate(
        GenerationRequest(prompt="a lighthouse", seed=seed + 1, **FAST), RecordingReporter()
    )
    assert not np.array_equal(pixels(other.image), from_take)


def test_cancel_stops_within_one_step(diffusion_runtime: Any) -> None:
    service = diffusion_runtime.runner.services["diffusion"]
    graph = single_node_graph(
        "image_generation", {"prompt": "slow", "width": 256, "height": 256, "steps": 200}
    )
    seen = threading.Event()
    step_events: list[tuple[float, str]] = []

    def on_event(event: Any) -> None:
        if event.type == "task.progress" and event.data["stage"] == "denoising":
            step_events.append((time.monotonic(), event.data["message"]))
            if event.data["message"] == "step 2 of 200":
                seen.set()

    sink = CallbackSink(on_event)
    diffusion_runtime.runner.add_sink(sink)
    record = diffusion_runtime.runner.submit(graph)
    assert seen.wait(60)
    cancelled_at = time.monotonic()
    on_device = service.current
    steps_at_cancel = on_device.steps_done
    diffusion_runtime.runner.cancel(record.task_id)
    record = diffusion_runtime.runner.wait(record.task_id, timeout=30)
    assert record.status == TaskStatus.CANCELLED
    assert len([t for t, _ in step_events if t > cancelled_at]) <= 1
    deadline = time.monotonic() + 10
    while service.current is not None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert list(service.batches) == [on_device]
    assert on_device.interrupted and on_device.steps_total == 200
    assert on_device.steps_done <= steps_at_cancel + 1  # the device stopped within one step


def test_missing_model_errors_name_the_model_and_path(
    diffusion_runtime: Any, diffusion_home: TakeflowHome, tmp_path: Path
) -> None:
    graph = single_node_graph("image_generation", {"prompt": "x", "model": "sdxl", **FAST})
    record, events = run(diffusion_runtime, graph)
    assert record.status == TaskStatus.FAILED
    message = events[-1].data["message"]
    assert "unknown model 'sdxl'" in message and "known models: 'demo'" in message
    assert "the home's config.json" in message  # where to look, not where it is (issue 19)
    assert str(diffusion_home.path) not in message and "/" not in message

    ghost = tmp_path / "weights" / "ghost"
    register_model(diffusion_home, "ghost", ghost)
    with pytest.raises(ModelNotFoundError, match=rf"model 'ghost' is configured at '{ghost}'"):
        registry_for(diffusion_home).resolve("ghost")
    record, events = run(diffusion_runtime, single_node_graph(
        "image_generation", {"prompt": "x", "model": "ghost", **FAST}))  # fmt: skip
    assert record.status == TaskStatus.FAILED
    assert f"'{ghost}', but that folder does not exist" in events[-1].data["message"]


def test_a_folder_that_does_not_load_gives_a_model_error(
    diffusion_home: TakeflowHome, tmp_path: Path
) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
    register_model(diffusion_home, "broken", broken)
    service = service_for(diffusion_home)
    request = GenerationRequest(prompt="x", model="broken", **FAST)
    with pytest.raises(ModelNotFoundError, match=rf"model 'broken' at '{broken}' could not be"):
        service.generate(request, RecordingReporter())
    service.close()


def test_size_must_be_a_multiple_of_eight(diffusion_runtime: Any) -> None:
    graph = single_node_graph("image_generation", {"prompt": "x", **{**FAST, "width": 100}})
    with pytest.raises(GraphValidationError) as caught:  # refused before anything is queued
        diffusion_runtime.runner.submit(graph)
    (issue,) = caught.value.issues
    assert (issue.code, issue.node_id, issue.port) == ("not_a_multiple", "node", "width")
    assert issue.message == "input 'width' is 100, not a multiple of 8; try 96 or 104"
    assert diffusion_runtime.state.list() == []


def test_batched_requests_match_alone_and_keep_their_own_progress_and_cancel(
    diffusion_home: TakeflowHome,
) -> None:
    prompts = [("a cat", 1), ("a dog", 2), ("a boat", 3)]
    alone_service = service_for(diffusion_home)
    alone = [
        alone_service.generate(GenerationRequest(prompt=p, seed=s, **FAST), RecordingReporter())
        for p, s in prompts
    ]
    assert [r.batch_size for r in alone] == [1, 1, 1]

    batched = service_for(diffusion_home, max_batch_size=3, batch_window_s=2.0)
    reporters = [RecordingReporter() for _ in range(4)]
    results: dict[int, Any] = {}

    def call(i: int, prompt: str, seed: int, steps: int) -> None:
        request = GenerationRequest(prompt=prompt, seed=seed, **{**FAST, "steps": steps})
        try:
            results[i] = batched.generate(request, reporters[i])
        except TaskCancelledError as exc:
            results[i] = exc

    work = [*prompts, ("more steps", 4)]
    threads = [
        threading.Thread(target=call, args=(i, p, s, 40 if i == 3 else 4))
        for i, (p, s) in enumerate(work)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    # Three compatible requests ran as one batch; the fourth (other steps) ran apart.
    assert sorted(b.size for b in batched.batches) == [1, 3]
    for i, single in enumerate(alone):
        together = results[i]
        assert together.batch_size == 3 and together.seed == single.seed
        diff = np.abs(pixels(together.image) - pixels(single.image))
        # Same pixels up to float rounding of batched kernels (CPU: a few values off by one).
        assert diff.max() <= 1 and (diff > 0).mean() < 0.001
        messages = [m for _, stage, m, _ in reporters[i].calls if stage == "denoising"]
        assert messages == [f"step {k} of 4" for k in range(1, 5)]

    # Cancel an item that is batched with another one: it stops, its neighbour finishes.
    both = [RecordingReporter(), RecordingReporter()]
    out: dict[int, Any] = {}

    def call2(i: int) -> None:
        request = GenerationRequest(prompt="long", seed=10 + i, **{**FAST, "steps": 60})
        try:
            out[i] = batched.generate(request, both[i])
        except TaskCancelledError as exc:
            out[i] = exc

    batched.close()
    batched = service_for(diffusion_home, max_batch_size=2, batch_window_s=5.0)
    pair = [threading.Thread(target=call2, args=(i,)) for i in range(2)]
    for t in pair:
        t.start()
    deadline = time.monotonic() + 30
    while len(both[0].calls) < 3 and time.monotonic() < deadline:
        time.sleep(0.005)
    both[0].cancelled = True
    for t in pair:
        t.join(60)
    assert isinstance(out[0], TaskCancelledError)
    assert out[1].batch_size == 2 and out[1].image.size == (64, 64)
    assert [(b.size, b.interrupted) for b in batched.batches] == [(2, False)]
    batched.close()


def test_concurrent_tasks_through_the_runtime_are_batched(diffusion_home: TakeflowHome) -> None:
    from dagster_defs.runtime import open_runtime

    diffusion_home.update_config(diffusion={"max_batch_size": 3, "batch_window_ms": 5000})
    runtime = open_runtime(diffusion_home.path, workers=4)
    try:
        project = runtime.projects.create("demo", "Demo project")
        sink = RecordingSink()
        runtime.runner.add_sink(sink)
        ids = [
            runtime.runner.submit(
                single_node_graph("image_generation", {"prompt": f"shot {i}", "seed": i, **FAST}),
                project_id="demo",
                shot=f"ch01/sc01/sh{i:03d}",
            ).task_id
            for i in range(3)
        ]
        for task_id in ids:
            assert sink.wait_terminal(task_id, timeout=60).type == "task.completed"
        service = runtime.runner.services["diffusion"]
        assert [b.size for b in service.batches] == [3]
        for i, task_id in enumerate(ids):
            take = project.takes.list(f"ch01/sc01/sh{i:03d}")[0]
            assert take.metadata["task_id"] == task_id and take.metadata["seed"] == i
            steps = [e for e in sink.for_task(task_id) if e.type == "task.progress"
                     and e.data["stage"] == "denoising"]  # fmt: skip
            assert len(steps) == 4
        service.close()
    finally:
        runtime.close()


def test_image_to_image_in_a_graph(diffusion_runtime: Any, project: Any) -> None:
    graph = CanvasGraph.model_validate({
        "name": "img2img",
        "nodes": [
            {"id": "start", "template": "gradient_image",
             "inputs": {"width": {"kind": "literal", "value": 70},
                        "height": {"kind": "literal", "value": 64}}},
            {"id": "paint", "template": "image_to_image",
             "inputs": {"image": {"kind": "link", "node": "start", "output": "image"},
                        "prompt": {"kind": "literal", "value": "oil painting"},
                        "strength": {"kind": "literal", "value": 0.5},
                        "steps": {"kind": "literal", "value": 4},
                        "seed": {"kind": "literal", "value": 3}}},
        ],
    })  # fmt: skip
    record, events = run(diffusion_runtime, graph, project_id="demo", shot=SHOT)
    assert record.status == TaskStatus.COMPLETED, record.error
    take = project.takes.list(SHOT)[0]
    assert Image.open(project.abs(take.outputs["image"].path)).size == (64, 64)  # 70 -> 64
    steps = [e.data["message"] for e in events
             if e.type == "task.progress" and e.data["stage"] == "denoising"]  # fmt: skip
    assert steps == ["step 1 of 2", "step 2 of 2"]  # strength 0.5 of 4 steps


def test_pipeline_cache_loads_once_and_evicts_least_recently_used(
    diffusion_home: TakeflowHome, tiny_model_dir: Path, second_model_dir: Path
) -> None:
    register_model(diffusion_home, "second", second_model_dir)
    specs = registry_for(diffusion_home)
    cache = PipelineCache()
    first = cache.get(specs.resolve("demo"), "cpu")
    assert cache.get(specs.resolve("demo"), "cpu") is first and cache.loads == 1
    cache.budget_bytes = int(first.nbytes * 1.5)
    second = cache.get(specs.resolve("second"), "cpu")
    assert cache.loads == 2 and cache.evictions == 1
    assert [e.spec.name for e in cache.loaded()] == ["second"]
    assert second.nbytes == first.nbytes and cache.total_bytes() == second.nbytes


def test_ensure_demo_model_builds_once_and_registers_it_as_demo(_isolated_home: Path) -> None:
    home = TakeflowHome.resolve(_isolated_home)
    home.update_config(models={"mine": {"path": "/srv/weights/mine"}})
    folder = ensure_demo_model(home)
    assert folder == home.path / "models" / "demo" and (folder / "model_index.json").is_file()
    models = home.config()["models"]
    assert models["demo"] == {"path": str(folder), "demo": True, "label": DEMO_LABEL}
    assert models["mine"] == {"path": "/srv/weights/mine"}
    stamp = (folder / "model_index.json").stat().st_mtime_ns
    assert ensure_demo_model(home) == folder
    assert (folder / "model_index.json").stat().st_mtime_ns == stamp

    service = service_for(home, preview_every=2)
    reporter = RecordingReporter()
    result = service.generate(GenerationRequest(prompt="demo", seed=1, **FAST), reporter)
    assert result.model.demo and result.image.size == (64, 64)
    loading = [m for _, stage, m, _ in reporter.calls if stage == "loading"]
    assert loading == ["loading demo model (random weights) 'demo'"]
    preview = next(p for *_, p in reporter.calls if p)
    assert Image.open(io.BytesIO(preview)).format == "JPEG"  # latent2rgb at the preview size
    service.close()


def test_every_scheduler_runs_and_is_reproducible(diffusion_home: TakeflowHome) -> None:
    service = service_for(diffusion_home)
    seen = {}
    assert tuple(SCHEDULERS)[:5] == ("euler", "euler_a", "ddim", "dpm++", "pndm")
    noisy = ("euler_a", "dpm++_sde", "ddpm")  # add fresh noise each step: seeded per item
    for scheduler in SCHEDULERS:
        request = GenerationRequest(prompt="s", seed=5, **{**FAST, "scheduler": scheduler})
        seen[scheduler] = pixels(service.generate(request, RecordingReporter()).image)
        if scheduler in ("euler", *noisy):
            again = pixels(service.generate(request, RecordingReporter()).image)
            assert np.array_equal(seen[scheduler], again), scheduler
    assert all(not np.array_equal(seen["euler"], seen[name]) for name in noisy)
    service.close()


def test_sigmas_spacing_changes_the_schedule_where_the_sampler_supports_it(
    diffusion_home: TakeflowHome,
) -> None:
    import inspect

    import diffusers

    for name in SIGMA_SCHEDULERS:  # the table matches what diffusers' classes accept
        params = inspect.signature(getattr(diffusers, SCHEDULERS[name]).__init__).parameters
        assert {"use_karras_sigmas", "use_exponential_sigmas"} <= set(params), name
    service = service_for(diffusion_home)
    images = {}
    for sigmas in ("default", "karras", "exponential"):
        request = GenerationRequest(prompt="s", seed=5, sigmas=sigmas, **FAST)
        images[sigmas] = pixels(service.generate(request, RecordingReporter()).image)
    assert not np.array_equal(images["default"], images["karras"])
    assert not np.array_equal(images["karras"], images["exponential"])
    entry = service.cache.loaded()[0]
    assert entry.pipeline_for("text_to_image", "euler", "karras").scheduler.config[
        "use_karras_sigmas"]  # fmt: skip
    bad = GenerationRequest(prompt="s", sigmas="karras", **{**FAST, "scheduler": "ddim"})
    with pytest.raises(InvalidGenerationRequest, match="scheduler 'ddim' cannot use 'karras' "
                       "sigmas") as caught:  # fmt: skip
        service.generate(bad, RecordingReporter())
    assert caught.value.details == {"port": "sigmas"}
    service.close()
