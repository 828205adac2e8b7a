"""LoRA rows of ``bench/diffusion.py``: one LoRA vs none per image, and the cost of switching
LoRA sets between consecutive tasks (adapters already loaded; no base reload)."""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

from graph_runtime.templates import NullReporter
from nodes.diffusion.demo_lora import random_kohya_lora, save_lora
from nodes.diffusion.model_value import LoraUse
from nodes.diffusion.parts import apply_parts, resolve_parts
from nodes.diffusion.service import DiffusionService, GenerationRequest
from stores.home import TakeflowHome


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
        save_lora(random_kohya_lora(pipe, seed=seed, rank=16), loras / name)
    del pipe
    one = (LoraUse("a.safetensors", 0.8, 0.8),)
    two = (LoraUse("b.safetensors", 0.6, 0.6),)
    cases = {"no LoRA": (), "one LoRA (rank 16)": one}

    def image(loras: tuple[LoraUse, ...], seed: int) -> float:
        start = time.perf_counter()
        service.generate(GenerationRequest(**values, seed=seed, loras=loras), NullReporter())
        return (time.perf_counter() - start) * 1000

    for loras_set in (*cases.values(), two):  # warm up: each adapter loaded once
        image(loras_set, 0)
    samples: dict[str, list[float]] = {label: [] for label in cases}
    for i in range(args.repeats):  # interleaved
        for label, loras_set in cases.items():
            samples[label].append(image(loras_set, i + 1))
    base = statistics.median(samples["no LoRA"])
    print("LoRA (peft adapters on the cached pipeline, via the diffusion service):")
    for label, ms in samples.items():
        med = statistics.median(ms)
        print(f"  {label:<34} median {med:9.1f} ms   x{med / base:.3f} of no LoRA", flush=True)

    # Switching sets between consecutive tasks: what the device thread does before a batch
    # whose set differs from the last one (both adapters already loaded).
    entry = service.cache.get(service.models.resolve(values["model"]), service.device)
    parts = [resolve_parts(service.models.folders, GenerationRequest(prompt="", loras=s))[0]
             for s in (one, two, ())]  # fmt: skip
    switches = []
    with entry.lock:
        t2i = entry.pipeline_for("text_to_image", "euler")
        for i in range(max(30, args.repeats * 6)):
            start = time.perf_counter()
            apply_parts(entry, t2i, [parts[i % 3]])
            switches.append((time.perf_counter() - start) * 1000)
    print(f"  switching LoRA sets (A -> B -> none) median {statistics.median(switches):.2f} ms, "
          f"max {max(switches):.2f} ms per switch; base model loads: {service.cache.loads}",
          flush=True)  # fmt: skip
