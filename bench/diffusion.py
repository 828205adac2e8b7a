"""Image generation: a graph with ``image_generation`` vs a bare ``pipe(...)`` call, and
cross-request batching on vs off, and the ComfyUI-compatible API (``server.comfy``): a ComfyUI
"API format" prompt posted over HTTP and followed on ``/ws`` until ``executing`` null, as
ComfyUI's example clients do, against the same loaded pipeline.

Usage:
    .venv/bin/python bench/diffusion.py                  # CPU, tiny demo model, 256x256, 20 steps
    .venv/bin/python bench/diffusion.py --device cuda    # GPU, SD 1.5-sized random weights, 512, 20
    .venv/bin/python bench/diffusion.py --device cpu --model sd15 --size 64 --steps 2 \\
        --repeats 1 --concurrent 2                       # smoke test of the CUDA mode's model
    .venv/bin/python bench/diffusion.py --only upscale   # only the upscale tiles/s rows
    .venv/bin/python bench/diffusion.py --only previews  # only previews on vs off
    .venv/bin/python bench/diffusion.py --only toolbox   # LoRA, ControlNet, previews, upscale
    .venv/bin/python bench/diffusion.py --only lora      # LoRA unfused vs fused vs none

Every mode runs in this one process on the same loaded pipeline (the process's pipeline cache),
one after another. Per-image figures are median / p95 in ms; the overhead ratio is
graph median / bare median. Batching: ``--concurrent`` one-image tasks submitted at once to a
runner with as many workers, batching on (max batch = concurrent) vs off (max batch 1).
Single file: the same weights exported to one ``.safetensors`` in the original key layout
(``model.diffusion_model.*``, ...) vs the diffusers folder: load time (fresh cache each time)
and time per image through the diffusion service. ControlNet: one ControlNet (random weights,
a single file in the controlnet folder) vs none, time per image on one service.
Upscale: tiles/s of ``upscale_with_model``'s tiled run for Real-ESRGAN's compact and RRDBNet x4
shapes (random weights, saved as .pth and loaded back) on cuda, 1024x1024 in tiles of 512;
tiny shapes of both on CPU, 128x128 in tiles of 32 (what the tiling costs, not the convs).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.diffusion_lora import lora_rows  # noqa: E402
from dagster_defs.runtime import Runtime, open_runtime  # noqa: E402
from dagster_defs.services import service_context  # noqa: E402
from graph_runtime.canvas import RunContext, single_node_graph  # noqa: E402
from graph_runtime.events import RecordingSink  # noqa: E402
from graph_runtime.templates import NullReporter  # noqa: E402
from nodes.diffusion.demo import build_random_pipeline, register_model  # noqa: E402
from nodes.diffusion.factory import FACTORY  # noqa: E402
from nodes.diffusion.models import ModelRegistry  # noqa: E402
from nodes.diffusion.service import (  # noqa: E402
    DiffusionService,
    DiffusionSettings,
    GenerationRequest,
    PipelineCache,
)
from stores.home import TakeflowHome  # noqa: E402


def stats(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]


def timed(fn: Callable[[int], Any], repeats: int) -> list[float]:
    out = []
    for i in range(repeats):
        start = time.perf_counter()
        fn(i)
        out.append((time.perf_counter() - start) * 1000)
    return out


def line(label: str, samples: list[float], base: float | None = None, of: str = "bare") -> None:
    med, p95 = stats(samples)
    ratio = f"  x{med / base:.3f} of {of}" if base else ""
    print(f"  {label:<34} median {med:9.1f} ms   p95 {p95:9.1f} ms{ratio}", flush=True)


CACHE = PipelineCache()  # one per process here, so every mode runs the same loaded pipeline


def diffusion_service(home: TakeflowHome, device: str, max_batch: int,
                      window_ms: float) -> DiffusionService:  # fmt: skip
    settings = DiffusionSettings(device=device, max_batch_size=max_batch,
                                 batch_window_s=window_ms / 1000, preview_every=5)  # fmt: skip
    return DiffusionService(registry(home), settings, CACHE)


def registry(home: TakeflowHome) -> ModelRegistry:
    return ModelRegistry.for_context(service_context(home, FACTORY))


def open_bench_runtime(home: TakeflowHome, workers: int, device: str, max_batch: int,
                       window_ms: float) -> Runtime:  # fmt: skip
    service = diffusion_service(home, device, max_batch, window_ms)
    return open_runtime(home.path, workers=workers, services={"diffusion": service})


def run_tasks(runtime: Runtime, inputs: list[dict[str, Any]], project: str | None) -> float:
    """Submit all at once, wait for all; seconds from first submit to last completion."""
    sink = RecordingSink()
    runtime.runner.add_sink(sink)
    start = time.perf_counter()
    ids = []
    for i, values in enumerate(inputs):
        context = RunContext(project=project, shot=f"bench/gen/s{i:03d}")
        ids.append(runtime.runner.submit(single_node_graph("image_generation", values,
                                                           context=context)).task_id)  # fmt: skip
    for task_id in ids:
        event = sink.wait_terminal(task_id, timeout=600)
        if event.type != "task.completed":
            raise SystemExit(f"task failed: {event.data}")
    elapsed = time.perf_counter() - start
    runtime.runner.remove_sink(sink)
    return elapsed


class ComfyCompat:
    """The compat listener in a thread of this process, over ``runtime``, and one client of it
    (HTTP post + one WebSocket kept open, as ComfyUI's example clients do)."""

    def __init__(self, runtime: Runtime, model: str) -> None:
        import socket
        import threading

        import uvicorn
        import websocket

        from server.comfy.app import create_comfy_app
        from server.comfy.service import ComfyService

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.base = f"http://127.0.0.1:{port}"
        self.server = uvicorn.Server(uvicorn.Config(
            create_comfy_app(ComfyService(runtime)), host="127.0.0.1", port=port,
            log_level="warning"))  # fmt: skip
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.01)
        self.model = model
        self.client_id = "bench"
        self.ws = websocket.create_connection(
            f"ws://127.0.0.1:{port}/ws?clientId={self.client_id}", timeout=600
        )

    def prompt(self, seed: int, size: int, steps: int) -> None:
        import json
        import urllib.request

        graph = {
            "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": self.model}},
            "5": {"class_type": "EmptyLatentImage",
                  "inputs": {"width": size, "height": size, "batch_size": 1}},
            "6": {"class_type": "CLIPTextEncode",
                  "inputs": {"text": "a lighthouse in a storm", "clip": ["4", 1]}},
            "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 1]}},
            "3": {"class_type": "KSampler", "inputs": {
                "seed": seed, "steps": steps, "cfg": 7.5, "sampler_name": "euler",
                "scheduler": "normal", "denoise": 1.0, "model": ["4", 0],
                "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]}},
            "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
            "9": {"class_type": "SaveImage",
                  "inputs": {"images": ["8", 0], "filename_prefix": "bench"}},
        }  # fmt: skip
        body = {
            "prompt": graph,
            "client_id": self.client_id,
            "extra_data": {"takeflow": {"project": "bench", "shot": f"bench/comfy/s{seed}"}},
        }
        request = urllib.request.Request(f"{self.base}/prompt", json.dumps(body).encode())
        with urllib.request.urlopen(request, timeout=60) as response:
            prompt_id = json.loads(response.read())["prompt_id"]
        while True:
            raw = self.ws.recv()
            if isinstance(raw, str):
                message = json.loads(raw)
                data = message["data"]
                mine = data.get("prompt_id") == prompt_id
                if message["type"] == "executing" and mine and data["node"] is None:
                    return
                if message["type"] == "execution_error":
                    raise SystemExit(f"ComfyUI prompt failed: {data}")

    def close(self) -> None:
        self.ws.close()
        self.server.should_exit = True
        self.thread.join(timeout=30)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument(
        "--model", choices=("tiny", "sd15"), help="default: tiny on cpu, sd15 on cuda"
    )
    parser.add_argument("--size", type=int, help="default: 256 on cpu, 512 on cuda")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--concurrent", type=int, default=8)
    parser.add_argument("--window-ms", type=float, default=50.0)
    parser.add_argument(
        "--only",
        choices=("upscale", "previews", "toolbox", "lora"),
        help="run only these rows (toolbox: LoRA, ControlNet, previews, upscale)",
    )
    args = parser.parse_args(argv)
    model = args.model or ("sd15" if args.device == "cuda" else "tiny")
    size = args.size or (512 if args.device == "cuda" else 256)
    warnings.simplefilter("ignore")  # random fp16 weights may overflow to NaN pixels; fine here
    tmp = Path(tempfile.mkdtemp(prefix="takeflow-bench-diffusion-"))
    try:
        if args.only == "upscale":
            return upscale_rows(args, tmp)
        return _run(args, model, size, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _run(args: argparse.Namespace, model: str, size: int, tmp: Path) -> int:
    import torch

    home = TakeflowHome.resolve(tmp / "home")
    started = time.perf_counter()
    folder = build_random_pipeline(tmp / "model", model, half=model == "sd15")
    register_model(home, "bench", folder, demo=True)
    values = {"prompt": "a lighthouse in a storm", "model": "bench", "width": size, "height": size,
              "steps": args.steps, "guidance": 7.5, "scheduler": "euler"}  # fmt: skip
    if args.only == "previews":
        previews_on_vs_off(args, home, values)
        return 0
    name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    threads = torch.get_num_threads()
    print(
        f"device {args.device} ({name}, torch {torch.__version__}, {threads} threads); "
        f"model {model} "
        f"(random weights, built in {time.perf_counter() - started:.1f} s); "
        f"{size}x{size}, {args.steps} steps, euler, guidance 7.5",
        flush=True,
    )

    service = diffusion_service(home, args.device, 1, 0)
    request = GenerationRequest(**{k: v for k, v in values.items()}, seed=0)
    service.generate(request, NullReporter())  # load + warm up
    if args.only == "lora":  # bench/diffusion_lora.py only
        lora_rows(args, home, folder, values, service)
        service.close()
        return 0
    if args.only == "toolbox":  # the image toolbox's rows only, in one run
        lora_rows(args, home, folder, values, service)  # bench/diffusion_lora.py
        controlnet_vs_none(args, home, folder, values)
        previews_on_vs_off(args, home, values)
        service.close()
        return upscale_rows(args, tmp)
    entry = CACHE.get(registry(home).resolve("bench"), args.device)
    pipe = entry.pipeline_for("text_to_image", "euler")

    def bare(i: int) -> None:
        pipe(values["prompt"], negative_prompt="", width=size, height=size,
             num_inference_steps=args.steps, guidance_scale=7.5,
             generator=torch.Generator("cpu").manual_seed(i), output_type="pil")  # fmt: skip

    def direct(i: int) -> None:
        service.generate(GenerationRequest(**values, seed=i), NullReporter())

    runtime = open_bench_runtime(home, 1, args.device, 1, 0)
    compat: ComfyCompat | None = None
    try:
        runtime.projects.create("bench", "Bench")
        compat = ComfyCompat(runtime, "bench")
        comfy = compat
        modes: dict[str, Callable[[int], Any]] = {
            "bare pipe(...)": bare,
            "diffusion service (no Dagster)": direct,
            "graph image_generation (no take)":
                lambda i: run_tasks(runtime, [{**values, "seed": -1}], None),
            "graph + take + git commit":
                lambda i: run_tasks(runtime, [{**values, "seed": -1}], "bench"),
            "ComfyUI API prompt (HTTP + /ws)": lambda i: comfy.prompt(i, size, args.steps),
        }  # fmt: skip
        for fn in modes.values():  # warm up: compile the job, first take, first commit
            fn(0)
        samples: dict[str, list[float]] = {label: [] for label in modes}
        for i in range(args.repeats):  # interleaved, so machine noise hits every mode alike
            for label, fn in modes.items():
                start = time.perf_counter()
                fn(i + 1)
                samples[label].append((time.perf_counter() - start) * 1000)
        print("time per image (one at a time, modes interleaved):")
        base = stats(samples["bare pipe(...)"])[0]
        for label, ms in samples.items():
            line(label, ms, None if label.startswith("bare") else base)
    finally:
        if compat is not None:
            compat.close()
        runtime.close()
    if args.device == "cpu" and model == "tiny" and size != 512:
        runtime = open_bench_runtime(home, 1, args.device, 1, 0)
        try:
            story = {**values, "width": 512, "height": 512, "steps": 30}
            seconds = [run_tasks(runtime, [{**story, "seed": -1}], None) for _ in range(2)]
            print(f"  story harness shape (512x512, standard = 30 steps): "
                  f"{min(seconds):.2f} s per task", flush=True)  # fmt: skip
        finally:
            runtime.close()

    single_file_vs_folder(args, home, folder, values)
    controlnet_vs_none(args, home, folder, values)
    previews_on_vs_off(args, home, values)
    lora_rows(args, home, folder, values, service)  # bench/diffusion_lora.py

    print(f"{args.concurrent} concurrent one-image tasks ({args.concurrent} workers):")
    results = {}
    for label, max_batch, window in (("batching off", 1, 0.0),
                                     ("batching on", args.concurrent, args.window_ms)):  # fmt: skip
        runtime = open_bench_runtime(home, args.concurrent, args.device, max_batch, window)
        try:
            inputs = [{**values, "seed": -1} for _ in range(args.concurrent)]
            run_tasks(runtime, inputs[:2], None)  # warm up the workers
            rounds = [run_tasks(runtime, inputs, None) for _ in range(max(1, args.repeats // 2))]
            sizes = [b.size for b in runtime.runner.services["diffusion"].batches]
            best = statistics.median(rounds)
            results[label] = args.concurrent / best
            print(f"  {label:<14} {args.concurrent / best:8.2f} images/s   "
                  f"({best * 1000 / args.concurrent:.0f} ms per image; batch sizes {sizes})",
                  flush=True)  # fmt: skip
        finally:
            runtime.runner.services["diffusion"].close()
            runtime.close()
    print(f"  batching speed-up x{results['batching on'] / results['batching off']:.2f}")
    service.close()
    return upscale_rows(args, tmp)


def upscale_rows(args: argparse.Namespace, tmp: Path) -> int:
    """Upscale tiles/s: Real-ESRGAN's two architectures (random weights) saved as .pth and
    loaded back like the upscale_models folder's files, one image cut in tiles."""
    import torch

    from nodes.diffusion.folders import ModelFile
    from nodes.diffusion.upscale import load_network, tile_count, upscale_tensor
    from nodes.diffusion.upscale_arch import RRDBNet, SRVGGNetCompact

    cuda = args.device == "cuda"
    size, tile, overlap = (1024, 512, 32) if cuda else (128, 32, 8)
    # cuda: realesr-general-x4v3's and RealESRGAN_x4plus's shapes; cpu: tiny ones (the tiling)
    shapes = {
        "compact x4 (64 ch, 32 convs)": lambda: SRVGGNetCompact(3, 3, nf=64, convs=32, scale=4),
        "RRDBNet x4 (64 ch, 23 blocks)": lambda: RRDBNet(3, 3, 64, 32, 23, 2, 1),
    } if cuda else {
        "compact x4 tiny (16 ch, 8 convs)": lambda: SRVGGNetCompact(3, 3, 16, 8, 4),
        "RRDBNet x4 tiny (16 ch, 2 blocks)": lambda: RRDBNet(3, 3, 16, 8, 2, 2, 1),
    }  # fmt: skip
    print(f"upscale with model ({size}x{size} input, tile {tile}, overlap {overlap}, "
          f"{args.device}, float32, {torch.get_num_threads()} threads):", flush=True)  # fmt: skip
    for label, make in shapes.items():
        path = tmp / "upscale_models" / f"{label.split()[0]}.pth"
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"params_ema": make().state_dict()}, path)
        network = load_network(ModelFile("upscale_models", path.name, path), args.device)
        pixels = torch.rand(1, 3, size, size, device=args.device)
        upscale_tensor(network, pixels[:, :, :tile, :tile], tile, overlap)  # warm up
        runs = []
        for _ in range(max(1, args.repeats // 2)):
            start = time.perf_counter()
            upscale_tensor(network, pixels, tile, overlap)
            if cuda:
                torch.cuda.synchronize()
            runs.append(time.perf_counter() - start)
        tiles = tile_count(size, size, tile, network.multiple)
        best = min(runs)
        print(f"  {label:<34} {tiles / best:8.2f} tiles/s   {tiles} tiles in {best:.2f} s "
              f"({(size * 4) ** 2 / best / 1e6:.2f} output MP/s)", flush=True)  # fmt: skip
    return 0


def previews_on_vs_off(args: argparse.Namespace, home: TakeflowHome,
                       values: dict[str, Any]) -> None:  # fmt: skip
    """A graph run that stores a latent2rgb JPEG preview every step vs one with none."""
    settings = DiffusionSettings(device=args.device, max_batch_size=1, batch_window_s=0,
                                 preview_every=1)  # fmt: skip
    service = DiffusionService(registry(home), settings, CACHE)
    runtime = open_runtime(home.path, workers=1, services={"diffusion": service})
    try:
        if "bench" not in {p.id for p in runtime.projects.list()}:
            runtime.projects.create("bench", "Bench")
        modes = {"previews off (none)": "none", "previews on (latent2rgb every step)": "latent2rgb"}
        samples: dict[str, list[float]] = {label: [] for label in modes}
        for i in range(args.repeats + 1):  # the first round warms up
            for label, method in modes.items():
                seconds = run_tasks(runtime, [{**values, "seed": -1, "preview_method": method}],
                                    "bench")  # fmt: skip
                if i:
                    samples[label].append(seconds * 1000)
        print(f"previews ({args.steps} steps, a preview stored every step; graph + take):")
        base = stats(samples["previews off (none)"])[0]
        for label, ms in samples.items():
            line(label, ms, None if label.startswith("previews off") else base, of="off")
    finally:
        runtime.close()
        service.close()


def single_file_vs_folder(
    args: argparse.Namespace, home: TakeflowHome, folder: Path, values: dict[str, Any]
) -> None:
    """Load time and per-image time: one .safetensors checkpoint vs the diffusers folder."""
    from diffusers import DiffusionPipeline

    from tests.nodes.ldm_export import save_single_file

    pipe = DiffusionPipeline.from_pretrained(folder, local_files_only=True)
    started = time.perf_counter()
    checkpoint = save_single_file(pipe, folder.parent / "bench.safetensors")
    exported = time.perf_counter() - started
    del pipe
    models = dict(home.config()["models"])
    # The folder's own configs: the random model's tokenizer is not CLIP's 49,408 tokens.
    models["bench-single"] = {"path": str(checkpoint), "config": str(folder), "demo": True}
    home.update_config(models=models)
    size_mb = checkpoint.stat().st_size / 2**20
    print(f"single file vs diffusers folder ({size_mb:.0f} MB .safetensors, exported in "
          f"{exported:.1f} s):", flush=True)  # fmt: skip
    names = {"diffusers folder": "bench", "single .safetensors": "bench-single"}
    loads: dict[str, list[float]] = {label: [] for label in names}
    for _ in range(max(2, args.repeats // 2)):  # interleaved, a fresh cache every time
        for label, name in names.items():
            spec = registry(home).resolve(name)
            start = time.perf_counter()
            PipelineCache().get(spec, args.device)
            loads[label].append((time.perf_counter() - start) * 1000)
    base = stats(loads["diffusers folder"])[0]
    for label, ms in loads.items():
        line(f"load: {label}", ms, None if label == "diffusers folder" else base, "folder")
    services = {label: diffusion_service(home, args.device, 1, 0) for label in names}
    per_image: dict[str, list[float]] = {label: [] for label in names}
    for i in range(args.repeats + 1):  # the first round warms up
        for label, name in names.items():
            request = GenerationRequest(**{**values, "model": name}, seed=i)
            start = time.perf_counter()
            services[label].generate(request, NullReporter())
            if i:
                per_image[label].append((time.perf_counter() - start) * 1000)
    base = stats(per_image["diffusers folder"])[0]
    for label, ms in per_image.items():
        line(f"image: {label}", ms, None if label == "diffusers folder" else base, "folder")
    for service in services.values():
        service.close()


def controlnet_vs_none(
    args: argparse.Namespace, home: TakeflowHome, folder: Path, values: dict[str, Any]
) -> None:
    """Time per image with one ControlNet (random weights, the model's UNet shape, loaded from
    a single file in the controlnet folder) vs none, interleaved on one service."""
    from PIL import Image

    from nodes.diffusion.controlnet import (
        ControlApplication,
        ensure_demo_controlnet,
        resolve_controls,
    )

    started = time.perf_counter()
    file = ensure_demo_controlnet(home.path, folder)
    built = time.perf_counter() - started
    service = diffusion_service(home, args.device, 1, 0)
    hint = Image.new("RGB", (values["width"], values["height"]), "black")
    controls = resolve_controls(service.models.folders, (ControlApplication(file.name, hint),))
    modes = {"no ControlNet": (), "one ControlNet": controls}
    print(f"ControlNet vs none ({file.stat().st_size / 2**20:.0f} MB single file, built in "
          f"{built:.1f} s):", flush=True)  # fmt: skip
    per_image: dict[str, list[float]] = {label: [] for label in modes}
    for i in range(args.repeats + 1):  # the first round warms up (loads the ControlNet)
        for label, control in modes.items():
            request = GenerationRequest(**values, seed=i, controls=control)
            start = time.perf_counter()
            service.generate(request, NullReporter())
            if i:
                per_image[label].append((time.perf_counter() - start) * 1000)
    base = stats(per_image["no ControlNet"])[0]
    for label, ms in per_image.items():
        line(f"image: {label}", ms, None if label == "no ControlNet" else base, "none")
    service.close()


if __name__ == "__main__":
    raise SystemExit(main())
