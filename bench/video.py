"""Video: a graph with ``text_to_video`` through the real runtime vs the bare pipeline call, and
the peak memory of encoding a long clip vs a short one (streamed: memory follows the frame).

Usage:
    .venv/bin/python bench/video.py                      # CPU, tiny LTX-Video, 512x320, 49 frames
    .venv/bin/python bench/video.py --device cuda        # the same rows on the GPU, 768x512x97
    .venv/bin/python bench/video.py --only generation    # graph vs bare only
    .venv/bin/python bench/video.py --only memory        # encoding peak memory only
    .venv/bin/python bench/video.py --only assembly      # bench/video_assembly.py's rows

Generation: the tiny random-weight LTX-Video model (``nodes.diffusion.video_demo``; on CUDA it
measures the runtime around the pipeline, not LTX-Video's speed). Modes, interleaved on one
loaded pipeline, median / p95 in ms: the bare ``pipe(...)`` call; the bare call plus encoding its
frames to MP4 with ``nodes.video`` (what anyone needs to get a file: the baseline of the
ratios); the diffusion service's ``generate_video`` (no Dagster); a graph with one
``text_to_video`` node through the real runtime (Dagster run, no take); and the same graph
stored as a take (MP4 + poster, take.json, git commit with LFS). Goal: graph <= 1.05x.

Memory: each clip is encoded in a fresh subprocess (so peaks do not mix) from frames made one
at a time; the figure is the process's peak RSS (``VmHWM``), and the ratio 240 frames vs
24 frames at 512x320. Goal: < 1.5x.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
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

from bench.diffusion import line, registry, stats  # noqa: E402


def generation_rows(args: argparse.Namespace, tmp: Path) -> None:
    import torch

    from dagster_defs.runtime import open_runtime
    from graph_runtime.canvas import RunContext, single_node_graph
    from graph_runtime.events import RecordingSink
    from graph_runtime.templates import NullReporter
    from nodes.diffusion.demo import register_model
    from nodes.diffusion.service import DiffusionService, DiffusionSettings
    from nodes.diffusion.video_demo import build_random_video_pipeline
    from nodes.diffusion.video_generation import VideoRequest, generate_video, video_pipeline
    from nodes.video import encode
    from stores.home import TakeflowHome

    home = TakeflowHome.resolve(tmp / "home")
    started = time.perf_counter()
    folder = build_random_video_pipeline(tmp / "model")
    built = time.perf_counter() - started
    register_model(home, "bench-video", folder, demo=True)
    width, height = args.size
    values = {"prompt": "a lighthouse in a storm", "negative_prompt": "", "model": "bench-video",
              "width": width, "height": height, "frames": args.frames, "fps": 24.0,
              "steps": args.steps, "cfg": 3.0}  # fmt: skip
    settings = DiffusionSettings(device=args.device, preview_every=5)
    service = DiffusionService(registry(home), settings)
    name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    print(f"device {args.device} ({name}, torch {torch.__version__}, {torch.get_num_threads()} "
          f"threads); tiny LTX-Video (random weights, built in {built:.2f} s); {width}x{height}, "
          f"{args.frames} frames, {args.steps} steps, cfg 3", flush=True)  # fmt: skip
    request = VideoRequest(**values, seed=0)
    generate_video(service, request, NullReporter())  # load + warm up
    entry = service.cache.get(service.models.resolve("bench-video"), service.device)
    pipe = video_pipeline(entry, "text_to_video", "bench-video")

    def call(seed: int) -> Any:
        return pipe(prompt=values["prompt"], negative_prompt="", width=width, height=height,
                    num_frames=args.frames, frame_rate=24.0, num_inference_steps=args.steps,
                    guidance_scale=3.0, generator=torch.Generator("cpu").manual_seed(seed),
                    max_sequence_length=128, output_type="np").frames[0]  # fmt: skip

    def bare_encoded(seed: int) -> None:
        import numpy as np
        from PIL import Image

        frames = call(seed)
        pixels = (np.clip(frames[i] * 255.0 + 0.5, 0, 255).astype(np.uint8) for i in
                  range(len(frames)))  # fmt: skip
        encode((Image.fromarray(p, "RGB") for p in pixels), 24.0).path.unlink()

    runtime = open_runtime(home.path, workers=1, services={"diffusion": service})
    sink = RecordingSink()
    runtime.runner.add_sink(sink)

    def graph(project: str | None) -> Callable[[int], None]:
        def run(seed: int) -> None:
            context = RunContext(project=project, shot=f"bench/video/s{seed:03d}")
            task = runtime.runner.submit(single_node_graph("text_to_video",
                                                           {**values, "seed": seed},
                                                           context=context))  # fmt: skip
            event = sink.wait_terminal(task.task_id, timeout=600)
            if event.type != "task.completed":
                raise SystemExit(f"task failed: {event.data}")

        return run

    try:
        runtime.projects.create("bench", "Bench")
        modes: dict[str, Callable[[int], Any]] = {
            "bare pipe(...)": call,
            "bare pipe(...) + MP4 encode": bare_encoded,
            "video service (no Dagster)":
                lambda i: generate_video(service, VideoRequest(**values, seed=i),
                                         NullReporter()).video.path.unlink(),
            "graph text_to_video (no take)": graph(None),
            "graph + take + git commit": graph("bench"),
        }  # fmt: skip
        for k, fn in enumerate(modes.values()):  # warm up: the job, first take, first commit
            fn(1000 * k)
        samples: dict[str, list[float]] = {label: [] for label in modes}
        for i in range(args.repeats):  # interleaved, so machine noise hits every mode alike
            for k, (label, fn) in enumerate(modes.items()):
                start = time.perf_counter()
                fn(1000 * k + i + 1)  # a seed no mode used before: never a node-cache hit
                samples[label].append((time.perf_counter() - start) * 1000)
        print("time per clip (one at a time, modes interleaved):")
        base = stats(samples["bare pipe(...) + MP4 encode"])[0]
        for label, ms in samples.items():
            line(label, ms, None if label.startswith("bare") else base, "bare + encode")
        pipe_only = stats(samples["bare pipe(...)"])[0]
        graph_ms = stats(samples["graph text_to_video (no take)"])[0]
        ratio = graph_ms / pipe_only
        print(f"  graph (no take) vs bare pipe(...) alone: x{ratio:.3f} "
              "(the MP4 encode the bare call skips)", flush=True)  # fmt: skip
    finally:
        runtime.close()
        service.close()


_ENCODE_CHILD = """
import json, sys, time
sys.path.insert(0, {root!r})
from PIL import Image
from nodes.video import encode
count, width, height = {count}, {width}, {height}
def frames():
    for i in range(count):  # one at a time: a moving gradient, so the encoder has work to do
        yield Image.linear_gradient("L").resize((width, height)).rotate(i * 3).convert("RGB")
start = time.perf_counter()
video = encode(frames(), 24.0)
seconds = time.perf_counter() - start
assert video.frame_count == count
video.path.unlink()
# VmHWM: this process image's peak RSS (ru_maxrss would carry the forking parent's peak)
hwm = next(l for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(json.dumps({{"peak_kb": int(hwm.split()[1]), "seconds": seconds}}))
"""


def memory_rows(args: argparse.Namespace) -> None:
    width, height = 512, 320
    peaks: dict[int, list[int]] = {24: [], 240: []}
    seconds: dict[int, list[float]] = {24: [], 240: []}
    for _ in range(max(1, args.memory_repeats)):
        for count in peaks:
            code = _ENCODE_CHILD.format(root=str(ROOT), count=count, width=width, height=height)
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                 check=True)  # fmt: skip
            facts = json.loads(out.stdout.strip().splitlines()[-1])
            peaks[count].append(facts["peak_kb"])
            seconds[count].append(facts["seconds"])
    print(f"encoding {width}x{height} H.264 from streamed frames (peak RSS of a fresh "
          f"subprocess, {len(peaks[24])} runs each):", flush=True)  # fmt: skip
    base = sorted(peaks[24])[len(peaks[24]) // 2]
    for count, kb in peaks.items():
        mid = sorted(kb)[len(kb) // 2]
        ratio = "" if count == 24 else f"  x{mid / base:.3f} of 24 frames (goal < 1.5)"
        fps = count / sorted(seconds[count])[len(seconds[count]) // 2]
        print(f"  {count:>3} frames   peak {mid / 1024:7.1f} MB   {fps:6.0f} frames/s{ratio}",
              flush=True)  # fmt: skip


def assembly_rows(args: argparse.Namespace) -> None:
    """The scene assembly rows, from ``bench/video_assembly.py``."""
    from bench import video_assembly

    print("scene assembly (bench/video_assembly.py; ratio: of one stream-copy concat):",
          flush=True)  # fmt: skip
    video_assembly.print_rows(video_assembly.rows(args))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--size", type=lambda s: tuple(int(v) for v in s.split("x")),
                        help="WIDTHxHEIGHT, multiples of 32 (default 512x320 on cpu, "
                        "768x512 on cuda)")  # fmt: skip
    parser.add_argument("--frames", type=int, help="8k+1 (default 49 on cpu, 97 on cuda)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--memory-repeats", type=int, default=3)
    parser.add_argument("--only", choices=("generation", "memory", "assembly"))
    args = parser.parse_args(argv)
    cuda = args.device == "cuda"
    args.size = args.size or ((768, 512) if cuda else (512, 320))
    args.frames = args.frames or (97 if cuda else 49)
    warnings.simplefilter("ignore")
    tmp = Path(tempfile.mkdtemp(prefix="takeflow-bench-video-"))
    try:
        if args.only in (None, "generation"):
            generation_rows(args, tmp)
        if args.only in (None, "memory"):
            memory_rows(args)
        if args.only in (None, "assembly"):
            assembly_rows(args)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
