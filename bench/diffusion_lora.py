"""LoRA rows of ``bench/diffusion.py``: per image, no LoRA vs one LoRA on peft's path
(unfused: extra matmuls) vs one LoRA fused into the weights (``diffusion.lora_fuse``), all on
the same service and pipeline in one run; and the cost of switching LoRA sets between
consecutive batches (adapters already loaded; no base reload), unfused vs fused.

Per-image rows are steady state: each timed image follows an untimed one with the same set,
so the fused row does not include the fuse itself (the switch rows measure that)."""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

from graph_runtime.templates import NullReporter
from nodes.diffusion.demo_lora import random_kohya_lora, save_lora
from nodes.diffusion.model_value import LoraUse
from nodes.diffusion.parts import apply_parts, resolve_parts, state_of
from nodes.diffusion.service import DiffusionService, GenerationRequest
from stores.home import TakeflowHome


def _p95(ms: list[float]) -> float:
    return statistics.quantiles(ms, n=20)[18] if len(ms) >= 2 else ms[0]


def lora_rows(
    args: argparse.Namespace,
    home: TakeflowHome,
    folder: Path,
    values: dict[str, Any],
    service: DiffusionService,
) -> None:
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(folder, local_files_only=True)
    loras = home.path / "models" / "loras"
    for seed, name in ((1, "a.safetensors"), (2, "b.safetensors")):
        save_lora(random_kohya_lora(pipe, seed=seed, rank=16, scale=0.1), loras / name)
    del pipe
    one = (LoraUse("a.safetensors", 0.8, 0.8),)
    two = (LoraUse("b.safetensors", 0.6, 0.6),)
    cases = {"no LoRA": ((), "always"), "one LoRA (rank 16), unfused": (one, "never"),
             "one LoRA (rank 16), fused": (one, "always")}  # fmt: skip
    scheduler = service.scheduler
    modes = {m: scheduler.settings.model_copy(update={"lora_fuse": m}) for m in ("always", "never")}

    def image(loras: tuple[LoraUse, ...], mode: str, seed: int) -> float:
        scheduler.settings = modes[mode]  # the device thread reads it per batch
        start = time.perf_counter()
        service.generate(GenerationRequest(**values, seed=seed, loras=loras), NullReporter())
        return (time.perf_counter() - start) * 1000

    for loras_set, mode in (*cases.values(), (two, "never"), (two, "always")):  # warm up
        image(loras_set, mode, 0)
    samples: dict[str, list[float]] = {label: [] for label in cases}
    for i in range(args.repeats):  # interleaved; each timed image follows one with its set
        for label, (loras_set, mode) in cases.items():
            image(loras_set, mode, i + 1)
            samples[label].append(image(loras_set, mode, i + 1))
    base, low = statistics.median(samples["no LoRA"]), min(samples["no LoRA"])
    print("LoRA (one service and pipeline; diffusion.lora_fuse per row):")
    for label, ms in samples.items():
        med = statistics.median(ms)
        print(f"  {label:<30} median {med:8.1f} ms  p95 {_p95(ms):8.1f} ms  min {min(ms):8.1f} ms"
              f"  x{med / base:.3f} (min x{min(ms) / low:.3f}) of none", flush=True)  # fmt: skip

    # Switching sets between consecutive batches: what the device thread does before a batch
    # whose set differs from the last one (both adapters already loaded).
    entry = service.cache.get(service.models.resolve(values["model"]), service.device)
    parts = [resolve_parts(service.models.folders, GenerationRequest(prompt="", loras=s))[0]
             for s in (one, two, ())]  # fmt: skip
    with entry.lock:
        t2i = entry.pipeline_for("text_to_image", "euler")
        for mode in ("never", "always"):
            switches = []
            for i in range(max(30, args.repeats * 6)):
                start = time.perf_counter()
                apply_parts(entry, t2i, [parts[i % 3]], mode)
                switches.append((time.perf_counter() - start) * 1000)
            label = "fused" if mode == "always" else "unfused"
            print(f"  switching LoRA sets (A -> B -> none), {label:<7} median "
                  f"{statistics.median(switches):7.2f} ms, p95 {_p95(switches):7.2f} ms per "
                  f"switch", flush=True)  # fmt: skip
        apply_parts(entry, t2i, [parts[0]], "always")
        saved = state_of(entry).fuse.saved_bytes()
    print(
        f"  copy of the patched layers while fused: {saved / 2**20:.2f} MiB; "
        f"base model loads: {service.cache.loads}",
        flush=True,
    )
